# SPDX-License-Identifier: Apache-2.0
# Stand-in for the cpp-httplib port's CMake config (vcpkg, Conan: httplib::httplib, header-only
# there). Debian's httplib.h needs its compiled library, so the stand-in links it, with the
# defines that library was built with.
message(STATUS "ports stand-in: httplib")
find_library(BROKERHA_STANDIN_HTTPLIB_LIBRARY NAMES cpp-httplib REQUIRED)
find_path(BROKERHA_STANDIN_HTTPLIB_INCLUDE_DIR NAMES httplib.h REQUIRED)
if(NOT TARGET httplib::httplib)
  add_library(httplib::httplib INTERFACE IMPORTED)
  set_target_properties(httplib::httplib PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${BROKERHA_STANDIN_HTTPLIB_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS
      "CPPHTTPLIB_OPENSSL_SUPPORT;CPPHTTPLIB_ZLIB_SUPPORT;CPPHTTPLIB_BROTLI_SUPPORT"
    INTERFACE_LINK_LIBRARIES "${BROKERHA_STANDIN_HTTPLIB_LIBRARY}")
endif()
