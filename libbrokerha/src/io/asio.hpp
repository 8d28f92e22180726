// SPDX-License-Identifier: Apache-2.0
#pragma once
// The one way our code includes Asio.
//
// Asio decides between aligned_alloc/free and operator new/delete for handler memory from
// _GLIBCXX_HAVE_ALIGNED_ALLOC, which only exists once a libstdc++ header has been included.
// A translation unit that includes <asio.hpp> first would disagree with one that includes a
// standard header first (an ODR violation that ASan reports as alloc-dealloc-mismatch), so a
// standard header always comes first here.
// The order of the two includes is the point of this header: keep clang-format away.
// clang-format off
#include <cstddef>
#include <asio.hpp>
// clang-format on
