# SPDX-License-Identifier: Apache-2.0
# Stand-in for the rapidjson port's CMake config (vcpkg, Conan): the `rapidjson` target, and
# deliberately no RAPIDJSON_INCLUDE_DIRS, so the target branch is the one that must work.
message(STATUS "ports stand-in: RapidJSON")
find_path(BROKERHA_STANDIN_RAPIDJSON_INCLUDE_DIR NAMES rapidjson/document.h REQUIRED)
if(NOT TARGET rapidjson)
  add_library(rapidjson INTERFACE IMPORTED)
  set_target_properties(rapidjson PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${BROKERHA_STANDIN_RAPIDJSON_INCLUDE_DIR}")
endif()
