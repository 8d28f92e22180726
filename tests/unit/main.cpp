// SPDX-License-Identifier: Apache-2.0
// The doctest main of every test suite (built once as brokerha_doctest_main).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
