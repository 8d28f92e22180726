// SPDX-License-Identifier: Apache-2.0
#pragma once
// Go's compress/lzw as memberlist uses it: LSB bit order, 8-bit literals, codes of 9 to 12
// bits, clear = 256, eof = 257. The encoder emits what Go's Writer emits (a leading clear code,
// a clear when the table fills, eof, then the last partial byte).

#include <cstddef>
#include <string>
#include <string_view>

namespace brokerha::membership {

std::string lzw_compress(std::string_view in);
// False on an invalid code, a missing eof, or output beyond max_out.
bool lzw_decompress(std::string_view in, std::string& out, std::size_t max_out = 40u << 20);

}  // namespace brokerha::membership
