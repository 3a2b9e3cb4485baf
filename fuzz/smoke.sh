#!/usr/bin/env bash
# Short fuzz run of every target (CI): ~20 s each by default, or SECONDS_PER_TARGET.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-20}"
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz ${target} (${secs} s)"
    mkdir -p "corpus/${target}"
    cargo +nightly fuzz run "${target}" "corpus/${target}" -- -max_total_time="${secs}" -rss_limit_mb=2048
done
