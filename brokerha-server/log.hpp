// SPDX-License-Identifier: Apache-2.0
#pragma once
// A small logger for brokerha-server: one line per message on stderr, as text
// ("2024-05-01T12:00:00.123Z info message") or as JSON lines
// ({"time":"...","level":"info","msg":"..."}), filtered by `log.level`.
//
// Thread safety: every function may be called from any thread (lines never interleave).

#include <string>

namespace brokerha::server {

enum class LogLevel { debug, info, warn, error };

/// Sets the minimum level and the format from `log.level` / `log.format` (validated values).
void configure_log(const std::string& level, const std::string& format);

void log(LogLevel level, const std::string& message);

inline void log_debug(const std::string& m) { log(LogLevel::debug, m); }
inline void log_info(const std::string& m) { log(LogLevel::info, m); }
inline void log_warn(const std::string& m) { log(LogLevel::warn, m); }
inline void log_error(const std::string& m) { log(LogLevel::error, m); }

}  // namespace brokerha::server
