// SPDX-License-Identifier: Apache-2.0
#pragma once
// How every brokerha-bench file includes Asio and its TLS streams: a standard header first.
// Asio chooses its handler allocator from _GLIBCXX_HAVE_ALIGNED_ALLOC, which is defined only
// once a libstdc++ header is in, so every translation unit must see one before <asio.hpp> to
// agree on it; clang-format would sort <asio/ssl.hpp> ahead of the standard headers, hence one
// place with the order fixed. Declarations only; any thread.
// clang-format off
#include <cstddef>
#include <asio.hpp>
#include <asio/ssl.hpp>
// clang-format on

namespace brokerha::bench {

using tcp = asio::ip::tcp;

}  // namespace brokerha::bench
