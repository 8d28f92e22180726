# SPDX-License-Identifier: Apache-2.0
# Stand-in for the asio port's CMake config (vcpkg, Conan: asio::asio, standalone).
message(STATUS "ports stand-in: asio")
find_path(BROKERHA_STANDIN_ASIO_INCLUDE_DIR NAMES asio.hpp REQUIRED)
if(NOT TARGET asio::asio)
  set(THREADS_PREFER_PTHREAD_FLAG ON)
  find_package(Threads REQUIRED)
  add_library(asio::asio INTERFACE IMPORTED)
  set_target_properties(asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${BROKERHA_STANDIN_ASIO_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
