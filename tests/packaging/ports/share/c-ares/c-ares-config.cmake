# SPDX-License-Identifier: Apache-2.0
# Stand-in for the c-ares port's CMake config (vcpkg, Conan: c-ares::cares), made from Debian's
# libcares. scripts/check-packaging.py configures brokerha against these stand-ins so the port
# branches of cmake/dependencies.cmake and brokerha-config.cmake.in run here.
message(STATUS "ports stand-in: c-ares")
find_library(BROKERHA_STANDIN_CARES_LIBRARY NAMES cares REQUIRED)
find_path(BROKERHA_STANDIN_CARES_INCLUDE_DIR NAMES ares.h REQUIRED)
if(NOT TARGET c-ares::cares)
  add_library(c-ares::cares UNKNOWN IMPORTED)
  set_target_properties(c-ares::cares PROPERTIES
    IMPORTED_LOCATION "${BROKERHA_STANDIN_CARES_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${BROKERHA_STANDIN_CARES_INCLUDE_DIR}")
endif()
