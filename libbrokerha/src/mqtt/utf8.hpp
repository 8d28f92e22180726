// SPDX-License-Identifier: Apache-2.0
#pragma once
// UTF-8 validation for MQTT strings (MQTT 5.0 section 1.5.4, 3.1.1 section 1.5.3).

#include <string_view>

namespace brokerha::mqtt {

/// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates
/// U+D800..U+DFFF, nothing above U+10FFFF). An MQTT UTF-8 string must also not contain
/// U+0000 (`allow_nul` false); a payload marked as UTF-8 may (`allow_nul` true).
bool is_valid_utf8(std::string_view s, bool allow_nul = false) noexcept;

}  // namespace brokerha::mqtt
