# Cross-compile C/C++ code for 32-bit ARM Linux (armv7-a, hard float, glibc) with Debian's
# cross compiler, against a tether prefix installed with
#   cmake/install.sh --target armv7-unknown-linux-gnueabihf PREFIX
#
#   cmake -S c-examples -B build-armv7 \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-armv7-linux-gnueabihf.cmake -DCMAKE_PREFIX_PATH=PREFIX
#
# Needs gcc-arm-linux-gnueabihf and libc6-dev-armhf-cross (sysroot /usr/arm-linux-gnueabihf);
# qemu-user, when installed, runs the results (ctest, CMAKE_CROSSCOMPILING_EMULATOR).
# Debian's compiler defaults to armv7-a, Thumb-2, VFPv3-D16, hard float: the same baseline as
# Rust's armv7-unknown-linux-gnueabihf, so no -march/-mfpu flags are needed.
set(TETHER_CROSS_TRIPLE arm-linux-gnueabihf)
set(TETHER_CROSS_PROCESSOR armv7l)
set(TETHER_CROSS_QEMU qemu-arm)
include("${CMAKE_CURRENT_LIST_DIR}/toolchain-common.cmake")
