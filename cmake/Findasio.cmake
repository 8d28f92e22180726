# SPDX-License-Identifier: Apache-2.0
# Findasio: standalone Asio (https://think-async.com/Asio/), header-only.
#
# Debian's libasio-dev ships neither a CMake config nor a pkg-config file, so this module is the
# fallback; vcpkg and Conan export the same `asio::asio` target from their own config files
# (microsoft/vcpkg: ports/asio), and dependencies.cmake tries CONFIG mode first.
#
# Result variables: asio_FOUND, asio_VERSION, asio_INCLUDE_DIR (cache).
# Imported target:  asio::asio (INTERFACE: include dir, ASIO_STANDALONE, Threads::Threads).

include(FindPackageHandleStandardArgs)

find_path(asio_INCLUDE_DIR NAMES asio.hpp DOC "Directory containing asio.hpp (standalone Asio)")
mark_as_advanced(asio_INCLUDE_DIR)

if(asio_INCLUDE_DIR AND EXISTS "${asio_INCLUDE_DIR}/asio/version.hpp")
  # "#define ASIO_VERSION 102201 // 1.22.1": major * 100000 + minor * 100 + patch.
  file(STRINGS "${asio_INCLUDE_DIR}/asio/version.hpp" _asio_version_line
       REGEX "^#define ASIO_VERSION [0-9]+")
  string(REGEX REPLACE "^#define ASIO_VERSION ([0-9]+).*$" "\\1" _asio_version_number
                       "${_asio_version_line}")
  math(EXPR _asio_major "${_asio_version_number} / 100000")
  math(EXPR _asio_minor "${_asio_version_number} / 100 % 1000")
  math(EXPR _asio_patch "${_asio_version_number} % 100")
  set(asio_VERSION "${_asio_major}.${_asio_minor}.${_asio_patch}")
  unset(_asio_version_line)
  unset(_asio_version_number)
  unset(_asio_major)
  unset(_asio_minor)
  unset(_asio_patch)
endif()

find_package_handle_standard_args(asio
  REQUIRED_VARS asio_INCLUDE_DIR
  VERSION_VAR asio_VERSION)

if(asio_FOUND AND NOT TARGET asio::asio)
  set(THREADS_PREFER_PTHREAD_FLAG ON)
  find_package(Threads REQUIRED)
  add_library(asio::asio INTERFACE IMPORTED)
  set_target_properties(asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${asio_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE"
    INTERFACE_LINK_LIBRARIES "Threads::Threads")
endif()
