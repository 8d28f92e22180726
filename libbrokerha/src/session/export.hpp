// SPDX-License-Identifier: Apache-2.0
#pragma once
// Exporting and importing a session: the bytes a node hands another when a client moves
// (cluster session takeover), and the format docs/session-format.md describes.
//
// Pure functions: the caller runs them on the session's shard (export) and installs the
// imported session there (import).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "session/session.hpp"

namespace brokerha::session {

/// What a session carries besides Session's own state.
struct SessionMeta {
  std::uint8_t protocol_version = 4;
  bool clean = false;
  std::optional<std::string> username;
  std::uint32_t expiry_interval = 0;  // seconds after disconnect
};

/// Serialises `session` and `meta` (format version 1).
std::string export_session(const Session& session, const SessionMeta& meta,
                           std::chrono::steady_clock::time_point now);

/// Parses what export_session() produced. Returns nullopt (and sets `error`) on malformed or
/// truncated input, an unknown format version, or invalid topics/filters.
struct ImportedSession {
  std::unique_ptr<Session> session;
  SessionMeta meta;
};
std::optional<ImportedSession> import_session(std::string_view bytes,
                                              std::chrono::steady_clock::time_point now,
                                              std::string& error);

}  // namespace brokerha::session
