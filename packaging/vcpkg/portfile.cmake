# SPDX-License-Identifier: Apache-2.0
# vcpkg overlay port of brokerha, built from the repository this file sits in:
#
#   vcpkg install brokerha --overlay-ports=<repo>/packaging/vcpkg          (classic mode)
#   vcpkg install brokerha[server] --overlay-ports=<repo>/packaging/vcpkg
#
# or, in manifest mode, list "brokerha" in the consumer's vcpkg.json and this directory under
# "overlay-ports" in its vcpkg-configuration.json. brokerha has no release archive yet; once it
# does, replace SOURCE_PATH below with vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO ...
# REF v${VERSION} SHA512 ...).
#
# The CMake options set here must exist in the top-level CMakeLists.txt; scripts/check-packaging.py
# (the `packaging` stage of scripts/test.sh) checks them, the version and the target name.

get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    http-api BROKERHA_WITH_HTTP_API
    server   BROKERHA_BUILD_SERVER
)

# BUILD_SHARED_LIBS follows VCPKG_LIBRARY_LINKAGE (vcpkg_cmake_configure passes it).
vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DBROKERHA_INSTALL=ON
    -DBROKERHA_BUILD_TESTS=OFF
    -DBROKERHA_BUILD_EXAMPLES=OFF
    -DBROKERHA_BUILD_BENCH=OFF
    -DBROKERHA_BUILD_FUZZERS=OFF
    -DBROKERHA_WARNINGS_AS_ERRORS=OFF
    # The server's allocator is the user's choice here: the port declares no mimalloc.
    -DBROKERHA_WITH_MIMALLOC=OFF
)
vcpkg_cmake_install()

# The package config is installed to lib/cmake/brokerha; vcpkg wants it in share/brokerha.
vcpkg_cmake_config_fixup(PACKAGE_NAME brokerha CONFIG_PATH lib/cmake/brokerha)
vcpkg_fixup_pkgconfig()

if("server" IN_LIST FEATURES)
  vcpkg_copy_tools(TOOL_NAMES brokerha-server AUTO_CLEAN)
endif()

file(REMOVE_RECURSE
  "${CURRENT_PACKAGES_DIR}/debug/include"
  "${CURRENT_PACKAGES_DIR}/debug/share")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE" "${SOURCE_PATH}/NOTICE")
