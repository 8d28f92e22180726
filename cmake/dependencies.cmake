# Finds everything brokerha builds against, as targets (Debian 12 packages; see STYLE.md §10).
#
#   Threads::Threads                          pthreads
#   asio::asio                                standalone Asio 1.22, header-only (Findasio.cmake)
#   OpenSSL::SSL, OpenSSL::Crypto             TLS listeners, websocket handshake
#   PkgConfig::BROKERHA_CARES                 c-ares (DNS SRV discovery), pkg-config `libcares`
#   PkgConfig::BROKERHA_HTTPLIB               cpp-httplib 0.11, a *compiled* library on Debian:
#                                             its defines (CPPHTTPLIB_*_SUPPORT) come with the
#                                             target and must match the library's (ABI)
#   brokerha_rapidjson                        RapidJSON include dir (its CMake file sets only
#                                             RAPIDJSON_INCLUDE_DIRS)
#   yaml-cpp::yaml-cpp                        brokerha-server only (Debian 0.7 names it `yaml-cpp`)
#   doctest::doctest + doctest_discover_tests tests only
#
# The pkg-config target names are part of the installed package: a static libbrokerha.a
# exports them as $<LINK_ONLY:...>, and brokerha-config.cmake.in recreates them with the same
# names. Keep the two files in step.

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)

# vcpkg/Conan ship an asio config exporting asio::asio; Debian does not (cmake/Findasio.cmake).
find_package(asio CONFIG QUIET)
if(NOT TARGET asio::asio)
  find_package(asio 1.22 MODULE REQUIRED)
endif()

find_package(OpenSSL 1.1.1 REQUIRED)

find_package(PkgConfig REQUIRED)
pkg_check_modules(BROKERHA_CARES REQUIRED IMPORTED_TARGET libcares)

if(BROKERHA_WITH_HTTP_API)
  pkg_check_modules(BROKERHA_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

  find_package(RapidJSON CONFIG QUIET)
  if(NOT RAPIDJSON_INCLUDE_DIRS)
    find_path(RAPIDJSON_INCLUDE_DIRS NAMES rapidjson/document.h)
  endif()
  if(NOT RAPIDJSON_INCLUDE_DIRS)
    message(FATAL_ERROR "RapidJSON not found (Debian: rapidjson-dev), needed by "
                        "BROKERHA_WITH_HTTP_API=ON.")
  endif()
  if(NOT TARGET brokerha_rapidjson)
    add_library(brokerha_rapidjson INTERFACE IMPORTED)
    set_target_properties(brokerha_rapidjson PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${RAPIDJSON_INCLUDE_DIRS}")
  endif()
endif()

if(BROKERHA_BUILD_SERVER)
  find_package(yaml-cpp 0.7 CONFIG REQUIRED)
  # Debian's yaml-cpp 0.7 exports `yaml-cpp`; vcpkg/Conan and yaml-cpp >= 0.8 `yaml-cpp::yaml-cpp`.
  if(NOT TARGET yaml-cpp::yaml-cpp)
    if(TARGET yaml-cpp)
      add_library(yaml-cpp::yaml-cpp ALIAS yaml-cpp)
    else()
      message(FATAL_ERROR "yaml-cpp was found but defines neither yaml-cpp nor yaml-cpp::yaml-cpp")
    endif()
  endif()
endif()

if(BROKERHA_BUILD_TESTS)
  find_package(doctest 2.4 CONFIG REQUIRED)
  # doctest.cmake (doctest_discover_tests) sits next to doctestConfig.cmake.
  include("${doctest_DIR}/doctest.cmake")
endif()
