#!/bin/sh
# Install tether into PREFIX: lib/libtether.{a,so}, include/{tether,rustls}.h,
# lib/cmake/tether (find_package), lib/pkgconfig/tether.pc and bin/tether (the CLI).
#
#   cmake/install.sh [--target TRIPLE] [--profile release|debug|firmware] [--no-build] PREFIX
#
# --target cross-builds (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf; see
# README.md); --no-build installs what the last cargo build left in target/ (or
# $CARGO_TARGET_DIR); the CLI is installed when that build made it.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
target=""
profile=release
build=1
prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
        *) prefix="$1"; shift ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: PREFIX is required" >&2; exit 2; }

cd "$root"
if [ "$build" = 1 ]; then
    set -- --lib --bin tether
    # cargo calls the debug profile "dev"; its output folder is named debug.
    set -- "$@" --profile "$([ "$profile" = debug ] && echo dev || echo "$profile")"
    [ -n "$target" ] && set -- "$@" --target "$target"
    cargo build "$@"
fi
[ "$profile" = dev ] && profile=debug
out="${CARGO_TARGET_DIR:-target}/${target:+$target/}$profile"
[ -f "$out/libtether.a" ] || { echo "install.sh: $out/libtether.a is missing; build first" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}
minor=$(echo "$version" | cut -d. -f2)
if [ "$major" = 0 ]; then soname="libtether.so.0.$minor"; else soname="libtether.so.$major"; fi
# What rustc --print native-static-libs reports for linux-gnu targets.
static_flags="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
static_cmake=$(echo "$static_flags" | sed 's/-l//g; s/ /;/g')

rustls_include=""
for f in $(ls -t "$out"/build/tether-*/out/rustls-include 2>/dev/null); do
    rustls_include=$(cat "$f"); break
done

mkdir -p "$prefix/lib/cmake/tether" "$prefix/lib/pkgconfig" "$prefix/include" "$prefix/bin"
prefix=$(cd "$prefix" && pwd)
cp "$out/libtether.a" "$prefix/lib/"
cp "$out/libtether.so" "$prefix/lib/$soname"
ln -sf "$soname" "$prefix/lib/libtether.so"
cp include/tether.h "$prefix/include/"
if [ -f "$out/tether" ]; then
    cp "$out/tether" "$prefix/bin/tether"
else
    echo "install.sh: $out/tether was not built; the CLI is not installed" >&2
fi
if [ -f "$out/libtether_hub.so" ]; then
    # The local IoT Hub stand-in's plugin, where `tether hub` looks for it (PREFIX/lib/tether).
    mkdir -p "$prefix/lib/tether"
    cp "$out/libtether_hub.so" "$prefix/lib/tether/"
fi
if [ -n "$rustls_include" ] && [ -f "$rustls_include/rustls.h" ]; then
    cp "$rustls_include/rustls.h" "$prefix/include/"
fi
subst() {
    sed -e "s|@VERSION@|$version|g" -e "s|@VERSION_MAJOR@|$major|g" -e "s|@SONAME@|$soname|g" \
        -e "s|@STATIC_LIBS@|$static_cmake|g" -e "s|@STATIC_LIBS_FLAGS@|$static_flags|g" \
        -e "s|@PREFIX@|$prefix|g" "$1" > "$2"
}
subst cmake/tetherConfig.cmake.in "$prefix/lib/cmake/tether/tetherConfig.cmake"
subst cmake/tetherConfigVersion.cmake.in "$prefix/lib/cmake/tether/tetherConfigVersion.cmake"
subst cmake/tether.pc.in "$prefix/lib/pkgconfig/tether.pc"
echo "installed tether $version ($out) into $prefix"
