"""Packaging: the wheel carries libtether.so, so it is platform-specific (``py3-none-<platform>``;
the binding is ctypes, so one wheel serves every Python 3 on that platform).

Where the library comes from:

* ``TETHER_LIBRARY=/path/to/libtether.so pip install ./bindings/python`` copies a prebuilt
  library into ``tether/<platform>/libtether.so`` (``build_wheels.sh`` does this for
  cross-built ARM libraries, with ``TETHER_PLATFORM`` naming the target machine);
* otherwise setuptools-rust builds the crate at ``../../Cargo.toml`` as a plain cdylib with
  cargo (release profile; ``SETUPTOOLS_RUST_CARGO_PROFILE=dev`` for a debug build,
  ``CARGO_TARGET_DIR`` to reuse a target directory) and installs it as
  ``tether/_libtether*.so``. This needs the source tree: an sdist does not carry the crate.
"""

import os
import platform
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
PLATFORMS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64", "armv7l": "linux-armv7l"}


def _copy_prebuilt() -> bool:
    """Copies $TETHER_LIBRARY into the package; True when a prebuilt library is used."""
    src = os.environ.get("TETHER_LIBRARY")
    if not src:
        return False
    if not Path(src).is_file():
        raise SystemExit(f"TETHER_LIBRARY={src} is not a file")
    machine = os.environ.get("TETHER_PLATFORM") or platform.machine()
    if machine not in PLATFORMS:
        raise SystemExit(f"no tether platform for machine {machine!r} (one of {sorted(PLATFORMS)})")
    for old in (HERE / "tether").glob("linux-*/libtether.so"):
        old.unlink()  # one library per wheel
    dest = HERE / "tether" / PLATFORMS[machine] / "libtether.so"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return True


# setuptools copies build/lib into the wheel and never empties it: a library from an earlier
# build (a prebuilt one, another machine's) would ride along. Start from nothing.
shutil.rmtree(HERE / "build", ignore_errors=True)

rust_extensions = []
if not _copy_prebuilt():
    for old in (HERE / "tether").glob("linux-*/libtether.so"):
        old.unlink()  # a library left by an earlier prebuilt install must not shadow the build
    from setuptools_rust import Binding, RustExtension

    rust_extensions.append(
        RustExtension(
            "tether._libtether",
            path=str(HERE.parent.parent / "Cargo.toml"),
            binding=Binding.NoBinding,
            py_limited_api=False,
        )
    )


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel always holds a native library
        return True


cmdclass = {}
try:
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
    except ImportError:
        from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

    class PlatformWheel(bdist_wheel):
        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):  # type: ignore[no-untyped-def]
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # building without wheel (sdist): nothing to tag
    pass

setup(distclass=BinaryDistribution, cmdclass=cmdclass, rust_extensions=rust_extensions, zip_safe=False)
