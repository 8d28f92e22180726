# SPDX-License-Identifier: Apache-2.0
# Finds everything brokerha builds against, as targets. Two shapes of each package are handled:
# Debian 12's (scripts/install-deps.sh) and the vcpkg/Conan ports' (packaging/vcpkg, /conan).
#
#   target / variable          Debian 12                        vcpkg / Conan port
#   Threads::Threads           pthreads                         pthreads
#   asio::asio                 cmake/Findasio.cmake (no config)  asio config (asio::asio)
#   OpenSSL::SSL, ::Crypto     FindOpenSSL                      FindOpenSSL / OpenSSL config
#   BROKERHA_CARES_TARGET      PkgConfig::BROKERHA_CARES         c-ares::cares (c-ares config)
#                              (pkg-config `libcares`)
#   BROKERHA_HTTPLIB_TARGET    PkgConfig::BROKERHA_HTTPLIB       httplib::httplib (httplib
#                              (pkg-config `cpp-httplib`: a       config; header-only there)
#                              *compiled* library; its
#                              CPPHTTPLIB_*_SUPPORT defines must
#                              match the library's: ABI)
#   brokerha_rapidjson         include dir (RapidJSON's config   the `rapidjson` target
#                              sets only RAPIDJSON_INCLUDE_DIRS)
#   yaml-cpp::yaml-cpp         0.7 names it `yaml-cpp` (aliased) yaml-cpp::yaml-cpp
#   doctest::doctest           + doctest_discover_tests (tests only)
#
# BROKERHA_CARES_TARGET and BROKERHA_HTTPLIB_TARGET are part of the installed package: a static
# libbrokerha.a exports them as $<LINK_ONLY:...>, and brokerha-config.cmake.in finds them again
# the same way (it is configured with these variables). Keep the two files in step.
# tests/packaging/ports/ holds stand-ins of the ports' config files; scripts/check-packaging.py
# configures against them, so the port branches are exercised here too.

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)

# vcpkg/Conan ship an asio config exporting asio::asio; Debian does not (cmake/Findasio.cmake).
find_package(asio CONFIG QUIET)
if(NOT TARGET asio::asio)
  find_package(asio 1.22 MODULE REQUIRED)
endif()

find_package(OpenSSL 1.1.1 REQUIRED)

find_package(PkgConfig QUIET)

# brokerha_find_package_or_pkgconfig(<VAR> <config package> <config target> <pkg-config module>
#                                    <pkg-config prefix>)
# Sets <VAR> to <config target> when find_package(<config package> CONFIG) defines it, else to
# PkgConfig::<prefix> from pkg_check_modules (required).
function(brokerha_find_package_or_pkgconfig var package target module prefix)
  find_package(${package} CONFIG QUIET)
  if(TARGET ${target})
    set(${var} "${target}" PARENT_SCOPE)
    message(STATUS "brokerha: ${package}: ${target} (CMake config)")
    return()
  endif()
  if(NOT PKG_CONFIG_FOUND)
    message(FATAL_ERROR "brokerha: neither a ${package} CMake config (${target}) nor pkg-config "
                        "to find the ${module} module")
  endif()
  pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET ${module})
  set(${var} "PkgConfig::${prefix}" PARENT_SCOPE)
  message(STATUS "brokerha: ${package}: PkgConfig::${prefix} (pkg-config ${module})")
endfunction()

brokerha_find_package_or_pkgconfig(BROKERHA_CARES_TARGET c-ares c-ares::cares libcares
                                   BROKERHA_CARES)

set(BROKERHA_HTTPLIB_TARGET "")
if(BROKERHA_WITH_HTTP_API)
  brokerha_find_package_or_pkgconfig(BROKERHA_HTTPLIB_TARGET httplib httplib::httplib cpp-httplib
                                     BROKERHA_HTTPLIB)

  if(NOT TARGET brokerha_rapidjson)
    add_library(brokerha_rapidjson INTERFACE IMPORTED)
    find_package(RapidJSON CONFIG QUIET)
    if(TARGET rapidjson)
      # vcpkg and Conan define the `rapidjson` target.
      set_target_properties(brokerha_rapidjson PROPERTIES INTERFACE_LINK_LIBRARIES rapidjson)
      message(STATUS "brokerha: RapidJSON: rapidjson (CMake config)")
    else()
      if(NOT RAPIDJSON_INCLUDE_DIRS)
        find_path(RAPIDJSON_INCLUDE_DIRS NAMES rapidjson/document.h)
      endif()
      if(NOT RAPIDJSON_INCLUDE_DIRS)
        message(FATAL_ERROR "RapidJSON not found (Debian: rapidjson-dev), needed by "
                            "BROKERHA_WITH_HTTP_API=ON.")
      endif()
      set_target_properties(brokerha_rapidjson PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${RAPIDJSON_INCLUDE_DIRS}")
      message(STATUS "brokerha: RapidJSON: ${RAPIDJSON_INCLUDE_DIRS}")
    endif()
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

# mimalloc (Debian: libmimalloc-dev) replaces malloc in brokerha-server only: an I/O thread
# allocates a message and another frees it after delivering it, the pattern glibc's malloc
# serves worst (docs/benchmarks.md measured 25-30 % of the broker's CPU per delivery). The
# library itself never picks an allocator for its embedder. Optional: without it the server
# runs on the C library's malloc. Sanitizers replace malloc themselves, so not with them.
set(BROKERHA_MIMALLOC_TARGET "")
if(BROKERHA_BUILD_SERVER AND BROKERHA_WITH_MIMALLOC AND NOT BROKERHA_SANITIZER)
  find_package(mimalloc CONFIG QUIET)
  if(TARGET mimalloc)
    set(BROKERHA_MIMALLOC_TARGET mimalloc)
    message(STATUS "brokerha: brokerha-server uses mimalloc ${mimalloc_VERSION}")
  else()
    message(STATUS "brokerha: mimalloc not found (Debian: libmimalloc-dev); brokerha-server "
                   "uses the C library's malloc")
  endif()
endif()

if(BROKERHA_BUILD_TESTS)
  find_package(doctest 2.4 CONFIG REQUIRED)
  # doctest.cmake (doctest_discover_tests) sits next to doctestConfig.cmake (Debian, vcpkg);
  # Conan puts it on the module path instead.
  if(EXISTS "${doctest_DIR}/doctest.cmake")
    include("${doctest_DIR}/doctest.cmake")
  else()
    include(doctest)
  endif()
endif()
