# Cross-compile C/C++ code for 64-bit ARM Linux (aarch64, glibc) with Debian's cross compiler,
# against a tether prefix installed with
#   cmake/install.sh --target aarch64-unknown-linux-gnu PREFIX
#
#   cmake -S c-examples -B build-aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake -DCMAKE_PREFIX_PATH=PREFIX
#
# Needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (sysroot /usr/aarch64-linux-gnu);
# qemu-user, when installed, runs the results (ctest, CMAKE_CROSSCOMPILING_EMULATOR).
set(TETHER_CROSS_TRIPLE aarch64-linux-gnu)
set(TETHER_CROSS_PROCESSOR aarch64)
set(TETHER_CROSS_QEMU qemu-aarch64)
include("${CMAKE_CURRENT_LIST_DIR}/toolchain-common.cmake")
