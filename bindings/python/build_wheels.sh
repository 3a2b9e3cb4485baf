#!/usr/bin/env bash
# Builds a wheel that carries libtether.so for this machine.
#
#   bindings/python/build_wheel.sh [LIBRARY]     # default: target/release/libtether.so
#
# Copies LIBRARY (or $TETHER_LIBRARY) to tether/<platform>/libtether.so and runs
# `pip wheel`; the wheel lands in bindings/python/dist/ as tether_iot-*-py3-none-<platform>.whl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lib="${1:-${TETHER_LIBRARY:-$root/target/release/libtether.so}}"
[ -f "$lib" ] || { echo "build_wheel: $lib is missing: cargo build --release --lib" >&2; exit 1; }
case "$(uname -m)" in
    x86_64) plat=linux-x86_64 ;;
    aarch64) plat=linux-aarch64 ;;
    armv7l) plat=linux-armv7l ;;
    *) echo "build_wheel: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
mkdir -p "$here/tether/$plat"
cp "$lib" "$here/tether/$plat/libtether.so"
python3 -m pip wheel --no-deps -w "$here/dist" "$here"
ls "$here"/dist/*.whl
