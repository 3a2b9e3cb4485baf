# Shared part of tether's CMake toolchain files (toolchain-<target>.cmake set
# TETHER_CROSS_TRIPLE, TETHER_CROSS_PROCESSOR and TETHER_CROSS_QEMU, then include this).
#
# TETHER_CROSS_SYSROOT overrides the target's root file system (default: Debian's cross sysroot
# /usr/<triple>); TETHER_CROSS_PREFIX the compiler prefix (default: <triple>-).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${TETHER_CROSS_PROCESSOR})

if(NOT DEFINED TETHER_CROSS_SYSROOT)
  set(TETHER_CROSS_SYSROOT "/usr/${TETHER_CROSS_TRIPLE}")
endif()
if(NOT DEFINED TETHER_CROSS_PREFIX)
  set(TETHER_CROSS_PREFIX "${TETHER_CROSS_TRIPLE}-")
endif()
set(CMAKE_C_COMPILER "${TETHER_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${TETHER_CROSS_PREFIX}g++")

# Libraries, headers and packages come from the target's root only: the sysroot, and the
# prefixes given in CMAKE_PREFIX_PATH (where tether was installed for this target). A prefix
# must be a find root, or CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY would look for it under the
# sysroot (/usr/<triple>/<prefix>) and find_package(tether) would fail.
list(APPEND CMAKE_FIND_ROOT_PATH "${TETHER_CROSS_SYSROOT}" ${CMAKE_PREFIX_PATH})
if(DEFINED ENV{CMAKE_PREFIX_PATH})
  string(REPLACE ":" ";" _tether_env_prefixes "$ENV{CMAKE_PREFIX_PATH}")
  list(APPEND CMAKE_FIND_ROOT_PATH ${_tether_env_prefixes})
  unset(_tether_env_prefixes)
endif()
list(REMOVE_DUPLICATES CMAKE_FIND_ROOT_PATH)
# Programs (code generators, ...) run on the build machine.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config: the target's .pc files, never the build machine's.
set(ENV{PKG_CONFIG_LIBDIR} "${TETHER_CROSS_SYSROOT}/lib/pkgconfig:${TETHER_CROSS_SYSROOT}/share/pkgconfig")

# Run target programs (ctest, add_custom_command with a target executable) under qemu-user.
# -L makes the target's dynamic loader and libc come from the sysroot; programs linked
# against the shared libtether also need LD_LIBRARY_PATH or an rpath to find it.
find_program(TETHER_CROSS_QEMU_PROGRAM ${TETHER_CROSS_QEMU})
if(TETHER_CROSS_QEMU_PROGRAM)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${TETHER_CROSS_QEMU_PROGRAM};-L;${TETHER_CROSS_SYSROOT}")
endif()
