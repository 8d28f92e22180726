# SPDX-License-Identifier: Apache-2.0
# brokerha_set_warnings(<target>)
#
# Applies the project's warning flags PRIVATE to one of our own targets (never to a consumer's),
# plus -Werror / /WX when BROKERHA_WARNINGS_AS_ERRORS is ON (the `ci` preset sets it).
# gcc 12 gives some -O2 false positives (-Wstringop-overflow, -Warray-bounds) in inlined code:
# silence those narrowly where they occur, with a comment, never here.
function(brokerha_set_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4)
    if(BROKERHA_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wconversion -Wshadow)
    if(BROKERHA_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
