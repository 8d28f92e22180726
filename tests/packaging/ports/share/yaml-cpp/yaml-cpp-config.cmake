# SPDX-License-Identifier: Apache-2.0
# Stand-in for the yaml-cpp 0.8 port's CMake config (vcpkg, Conan): only yaml-cpp::yaml-cpp,
# no plain `yaml-cpp` target (Debian's 0.7 has only that one).
message(STATUS "ports stand-in: yaml-cpp")
find_library(BROKERHA_STANDIN_YAML_LIBRARY NAMES yaml-cpp REQUIRED)
find_path(BROKERHA_STANDIN_YAML_INCLUDE_DIR NAMES yaml-cpp/yaml.h REQUIRED)
if(NOT TARGET yaml-cpp::yaml-cpp)
  add_library(yaml-cpp::yaml-cpp UNKNOWN IMPORTED)
  set_target_properties(yaml-cpp::yaml-cpp PROPERTIES
    IMPORTED_LOCATION "${BROKERHA_STANDIN_YAML_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${BROKERHA_STANDIN_YAML_INCLUDE_DIR}")
endif()
