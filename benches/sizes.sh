#!/usr/bin/env bash
# Size report per target: stripped libtether.so, the tls_check C example linked statically
# (-Wl,--gc-sections), and the tether CLI, for each option that trades size for features.
# Not part of CI (each variant is a release LTO build per target: minutes each).
#
#   benches/sizes.sh [TRIPLE...]     # default: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#
# Variants (one target directory per profile setting under target/sizes/, so reruns are cached):
#   release          the release profile: opt-level "s", LTO, 1 codegen unit, panic=unwind
#   release-z        the same with opt-level "z"
#   firmware         the firmware profile: opt-level "z", panic=abort (vs release-z: the panic
#                    strategy alone)
#   no-rustls-ffi    release without the rustls-ffi feature (--no-default-features)
#   firmware-no-ffi  firmware without the rustls-ffi feature
#   nightly-abort, nightly-abort-no-ffi
#                    firmware rebuilt on nightly with the standard library compiled in
#                    (-Zbuild-std) and panic=immediate-abort (no panic messages or unwinding
#                    machinery at all); needs `rustup component add rust-src --toolchain nightly`
# Prints a Markdown table (bytes, and KiB) to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ $# -gt 0 ] || set -- aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf

gnu_of() {
    case $1 in
        aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
        armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
        x86_64-unknown-linux-gnu) echo x86_64-linux-gnu ;;
        *) echo "sizes.sh: unknown target $1" >&2; exit 2 ;;
    esac
}
tool() { # the cross tool for a target, or the host's
    if command -v "$1-$2" >/dev/null; then echo "$1-$2"; else echo "$2"; fi
}
kib() { awk -v b="$1" 'BEGIN { printf "%.0f KiB", b / 1024 }'; }

build() { # build TRIPLE VARIANT -> sets dir (artifacts) and features flag
    local triple=$1 variant=$2 profile=release
    local -a flags=()
    local -a envs=()
    local -a toolchain=()
    case $variant in
        release) ;;
        release-z) envs=(CARGO_PROFILE_RELEASE_OPT_LEVEL=z) ;;
        no-rustls-ffi) flags=(--no-default-features) ;;
        firmware) profile=firmware ;;
        firmware-no-ffi) profile=firmware; flags=(--no-default-features) ;;
        nightly-abort*)
            profile=firmware
            toolchain=(+nightly)
            flags=(-Z build-std=std,panic_abort)
            envs=("RUSTFLAGS=-Zunstable-options -Cpanic=immediate-abort")
            [ "$variant" = nightly-abort-no-ffi ] && flags+=(--no-default-features)
            ;;
    esac
    export CARGO_TARGET_DIR="$root/target/sizes/${variant%-no-*}"
    [ "$variant" = no-rustls-ffi ] && CARGO_TARGET_DIR="$root/target/sizes/release"
    env "${envs[@]}" cargo "${toolchain[@]}" build -q --lib --bin tether --profile "$profile" --target "$triple" "${flags[@]}" >&2
    dir="$CARGO_TARGET_DIR/$triple/$profile"
}

variants=(release release-z firmware no-rustls-ffi firmware-no-ffi)
if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    variants+=(nightly-abort nightly-abort-no-ffi)
else
    echo "sizes: no nightly toolchain with rust-src: the nightly-abort variants are left out" >&2
fi
echo "| target | variant | libtether.so | tls_check (static) | tether CLI |"
echo "|---|---|---|---|---|"
for triple in "$@"; do
    gnu=$(gnu_of "$triple")
    cc=$(tool "$gnu" gcc)
    strip=$(tool "$gnu" strip)
    for variant in "${variants[@]}"; do
        echo "sizes: $triple $variant" >&2
        build "$triple" "$variant"
        work=$(mktemp -d)
        "$strip" -o "$work/libtether.so" "$dir/libtether.so"
        "$strip" -o "$work/tether" "$dir/tether"
        so=$(stat -c %s "$work/libtether.so")
        cli=$(stat -c %s "$work/tether")
        static="n/a (needs rustls-ffi)"
        if [ "${variant%no-*}" = "$variant" ]; then
            rustls_include=$(cat "$(ls -t "$dir"/build/tether-*/out/rustls-include | head -n 1)")
            "$cc" -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -DDEFINE_RING -I include -I "$rustls_include" \
                c-examples/tls_check.c "$dir/libtether.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc \
                -Wl,--gc-sections -s -o "$work/tls_check"
            static=$(stat -c %s "$work/tls_check")
            static="$static ($(kib "$static"))"
        fi
        echo "| $triple | $variant | $so ($(kib "$so")) | $static | $cli ($(kib "$cli")) |"
        rm -rf "$work"
    done
done
