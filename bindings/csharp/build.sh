#!/usr/bin/env bash
# Builds the C# binding with mono's compiler into build/Tether.dll, with libtether.so beside
# it (where mono looks first), then the examples and the test program.
#   TETHER_LIB_DIR: the folder holding libtether.so (default: target/debug of this checkout).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lib_dir="${TETHER_LIB_DIR:-$root/target/debug}"
out="$here/build"

command -v mcs >/dev/null || { echo "build.sh: mcs is missing: apt-get install -y mono-mcs" >&2; exit 1; }
[ -f "$lib_dir/libtether.so" ] || { echo "build.sh: $lib_dir/libtether.so is missing: run cargo build --lib" >&2; exit 1; }

mkdir -p "$out"
mcs -langversion:7.2 -target:library -warnaserror -nowarn:1591 -out:"$out/Tether.dll" \
    -doc:"$out/Tether.xml" "$here"/src/*.cs
cp "$lib_dir/libtether.so" "$out/"
mcs -langversion:7.2 -warnaserror -r:"$out/Tether.dll" -out:"$out/SendTelemetry.exe" "$here/examples/SendTelemetry.cs"
mcs -langversion:7.2 -warnaserror -r:"$out/Tether.dll" -out:"$out/C2dMethodsTwin.exe" "$here/examples/C2dMethodsTwin.cs"
mcs -langversion:7.2 -warnaserror -r:"$out/Tether.dll" -r:System.Core.dll -out:"$out/TetherTests.exe" "$here"/tests/*.cs
echo "build.sh: built $out/Tether.dll"
