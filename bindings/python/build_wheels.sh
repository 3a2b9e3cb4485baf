#!/usr/bin/env bash
# Builds the wheels of the Python binding with standard manylinux tags for x86_64, aarch64
# and armv7l (ARM cross-built with the gcc cross toolchains and rustup targets .ci/setup
# installs; linkers in .cargo/config.toml).
#
#   bindings/python/build_wheels.sh [ARCH...]      # default: x86_64 aarch64 armv7l
#
# For each machine: `cargo build --release --lib --target T`, then `pip wheel` with that
# library as the prebuilt one (TETHER_LIBRARY, TETHER_PLATFORM), tagged linux_<arch>; then
# `auditwheel show` checks the library against the manylinux policies (only glibc and
# libgcc_s symbols, none newer than the policy allows) and the wheel gets the manylinux tag
# it is consistent with (`wheel tags`), checked again by auditwheel.
# Wheels land in bindings/python/dist/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dist="$here/dist"
tools="$root/target/wheel-tools"
[ -x "$tools/bin/auditwheel" ] || {
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q auditwheel wheel setuptools setuptools-rust
}
mkdir -p "$dist"
rm -f "$dist"/tether_iot-*.whl

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64 armv7l)
for arch in "${arches[@]}"; do
    case "$arch" in
        x86_64) triple=x86_64-unknown-linux-gnu ;;
        aarch64) triple=aarch64-unknown-linux-gnu ;;
        armv7l) triple=armv7-unknown-linux-gnueabihf ;;
        *) echo "build_wheels: unknown machine $arch (x86_64, aarch64, armv7l)" >&2; exit 2 ;;
    esac
    echo "== $arch ($triple)"
    (cd "$root" && cargo build --release --lib --target "$triple")
    lib="$root/target/$triple/release/libtether.so"
    raw="$root/target/wheels-raw/$arch"
    rm -rf "$raw" && mkdir -p "$raw"
    TETHER_LIBRARY="$lib" TETHER_PLATFORM="$arch" "$tools/bin/pip" wheel -q --no-deps --no-build-isolation \
        --config-settings=--build-option=--plat-name=linux_"$arch" -w "$raw" "$here"
    wheel=$(ls "$raw"/tether_iot-*-py3-none-linux_"$arch".whl)
    "$tools/bin/auditwheel" show "$wheel" | tee "$raw/show.txt"
    plat=$(grep -Eo 'manylinux_[0-9]+_[0-9]+_'"$arch" "$raw/show.txt" | head -n 1)
    [ -n "$plat" ] || { echo "build_wheels: $wheel is not manylinux-compatible" >&2; exit 1; }
    # Retag (auditwheel repair only retags wheels of this machine's architecture; the
    # library needs nothing grafted, as `show` found only glibc and libgcc_s), then show again.
    "$tools/bin/python" -m wheel tags --platform-tag "$plat" "$wheel" >/dev/null
    mv "$raw"/tether_iot-*-py3-none-"$plat".whl "$dist/"
    shown=$("$tools/bin/auditwheel" show "$dist"/tether_iot-*-py3-none-"$plat".whl 2>&1 | tr -s " \n" "  ")
    [[ "$shown" == *"consistent with"*"\"$plat\""* ]] \
        || { echo "build_wheels: auditwheel does not accept the tagged wheel: $shown" >&2; exit 1; }
    echo "auditwheel: $(basename "$dist"/tether_iot-*-py3-none-"$plat".whl) is consistent with $plat"
done
rm -rf "$here/build" "$here"/*.egg-info "$here"/tether/linux-*
echo "== wheels"
for w in "$dist"/tether_iot-*.whl; do
    echo "$(basename "$w"): $(unzip -p "$w" '*.dist-info/WHEEL' | grep '^Tag:' | tr '\n' ' ')"
done
