// SPDX-License-Identifier: Apache-2.0
#pragma once
// Character scans for the hot path.
//
// std::string_view::find_first_of(set) calls memchr over `set` once per character of the
// string: for a topic name on every PUBLISH that is one library call per byte. contains_any()
// scans the string once per character of `set` instead (a handful of vectorised memchr
// calls over the whole string).

#include <cstring>
#include <string_view>

namespace brokerha::util {

/// True when `s` contains any character of `set`.
inline bool contains_any(std::string_view s, std::string_view set) noexcept {
  if (s.empty()) return false;
  for (const char c : set) {
    if (std::memchr(s.data(), c, s.size()) != nullptr) return true;
  }
  return false;
}

}  // namespace brokerha::util
