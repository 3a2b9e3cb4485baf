"""Packaging hook: a wheel that carries libtether.so is platform-specific
(``py3-none-<platform>``), one without it is pure Python.

``build_wheel.sh`` (or ``TETHER_LIBRARY=... pip install .``) puts the library into
``tether/<platform>/libtether.so`` before building.
"""

import os
import platform
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
PLATFORMS = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch64", "armv7l": "linux-armv7l"}


def _copy_library() -> None:
    """Copies $TETHER_LIBRARY into the package when it is set (so that
    ``TETHER_LIBRARY=target/release/libtether.so pip install ./bindings/python`` installs a
    package that carries the library)."""
    src = os.environ.get("TETHER_LIBRARY")
    machine = platform.machine()
    if not src or machine not in PLATFORMS:
        return
    dest = HERE / "tether" / PLATFORMS[machine] / "libtether.so"
    if Path(src).is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _has_library() -> bool:
    return any((HERE / "tether").glob("linux-*/libtether.so"))


_copy_library()


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel holds a native library
        return _has_library()


cmdclass = {}
try:
    from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = not _has_library()

        def get_tag(self):
            python, abi, plat = super().get_tag()
            if _has_library():
                return "py3", "none", plat
            return python, abi, plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # building without wheel (sdist): nothing to tag
    pass

setup(distclass=BinaryDistribution, cmdclass=cmdclass)
