# SPDX-License-Identifier: Apache-2.0
# Sanitizer support.
#
# BROKERHA_SANITIZER is "" (none), "address,undefined" (also "address" or "undefined" alone) or
# "thread". brokerha_set_sanitizers(<target>) adds the flags to the compile and link of one of our
# targets (PRIVATE: consumers of an installed brokerha are never affected). Static and OBJECT
# libraries have no link step, so every executable that links them calls it too.
#
# TSan needs clang here: gcc 12 + -fsanitize=thread + Asio 1.22 warns (-Wtsan from
# asio/detail/std_fenced_block.hpp), which -Werror turns into a failure.
#
# With BROKERHA_BUILD_FUZZERS, brokerha_set_fuzzer_instrumentation(<target>) compiles library
# code with -fsanitize=fuzzer-no-link (coverage feedback for libFuzzer); the fuzz targets
# themselves are linked with -fsanitize=fuzzer,address,undefined (tests/fuzz/CMakeLists.txt).

set(_brokerha_sanitizer_choices "" "address,undefined" "undefined,address" "address" "undefined"
    "thread")
if(NOT BROKERHA_SANITIZER IN_LIST _brokerha_sanitizer_choices)
  message(FATAL_ERROR
    "BROKERHA_SANITIZER='${BROKERHA_SANITIZER}' is not supported; use \"\", "
    "\"address,undefined\" or \"thread\".")
endif()

if(BROKERHA_SANITIZER)
  if(MSVC)
    message(FATAL_ERROR "BROKERHA_SANITIZER is only supported with gcc and clang.")
  endif()
  if(BROKERHA_SANITIZER STREQUAL "thread" AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR
      "BROKERHA_SANITIZER=thread needs clang (found ${CMAKE_CXX_COMPILER_ID} "
      "${CMAKE_CXX_COMPILER_VERSION}): gcc 12 with -fsanitize=thread warns inside Asio "
      "(-Wtsan). Configure with -DCMAKE_CXX_COMPILER=clang++ or use the `tsan` preset.")
  endif()
  message(STATUS "brokerha: sanitizers: ${BROKERHA_SANITIZER}")
endif()

function(brokerha_set_sanitizers target)
  if(NOT BROKERHA_SANITIZER)
    return()
  endif()
  set(flags "-fsanitize=${BROKERHA_SANITIZER}" -fno-omit-frame-pointer)
  if(BROKERHA_SANITIZER MATCHES "undefined")
    # Make every UBSan finding fatal, also when a test binary runs outside ctest; except
    # pointer-overflow, which stays recoverable so tests/ubsan.supp can suppress it for one
    # third-party header (the test environment sets halt_on_error=1, which still stops on
    # any unsuppressed report: UBSan ignores suppressions for non-recoverable checks).
    list(APPEND flags -fno-sanitize-recover=undefined -fsanitize-recover=pointer-overflow)
  endif()
  target_compile_options(${target} PRIVATE ${flags})
  target_link_options(${target} PRIVATE "-fsanitize=${BROKERHA_SANITIZER}")
endfunction()

function(brokerha_set_fuzzer_instrumentation target)
  if(BROKERHA_BUILD_FUZZERS)
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
  endif()
endfunction()
