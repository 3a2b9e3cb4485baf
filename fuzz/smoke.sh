#!/usr/bin/env bash
# Short fuzz run of every target (CI): SECONDS_PER_TARGET each (default 20), targets taken
# from `cargo fuzz list`, seeds from seeds/<target>/ when present. Prints one summary line
# per target ("fuzz TARGET: N executions in S s, 0 crashes") and fails on any crash.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-20}"
cargo +nightly fuzz build
summary=()
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz ${target} (${secs} s)"
    mkdir -p "corpus/${target}"
    seeds=()
    [ -d "seeds/${target}" ] && seeds=("seeds/${target}")
    log="corpus/${target}.log"
    if ! cargo +nightly fuzz run "${target}" "corpus/${target}" "${seeds[@]}" -- \
        -max_total_time="${secs}" -rss_limit_mb=2048 2>&1 | tee "${log}" | grep -E '^Done [0-9]+ runs'; then
        tail -40 "${log}"
        echo "fuzz ${target}: CRASH (artifacts/${target}/)" >&2
        exit 1
    fi
    runs=$(grep -Eo '^Done [0-9]+ runs' "${log}" | awk '{print $2}')
    summary+=("fuzz ${target}: ${runs} executions in ${secs} s, 0 crashes")
done
printf '%s\n' "${summary[@]}"
