// SPDX-License-Identifier: Apache-2.0
#pragma once
// The built-in authentication and ACL rules (docs/access-rules.md): `mqtt.auth`, `mqtt.acl`,
// `mqtt.acl_default` and `mqtt.password_file`, compiled once per (re)load.
//
// Immutable after compile(): any thread may evaluate a Rules object; the broker swaps the
// whole object on reload.

#include <brokerha/error.hpp>
#include <brokerha/hooks.hpp>
#include <brokerha/options.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace brokerha::access {

/// Who is asking.
struct Identity {
  std::string_view client_id;
  std::optional<std::string_view> username;
  std::string_view remote_ip;
  std::uint16_t remote_port = 0;
};

/// A password hash from a Mosquitto password file.
struct PasswordHash {
  enum class Kind { pbkdf2_sha512, sha512 } kind = Kind::pbkdf2_sha512;
  int iterations = 0;
  std::string salt;
  std::string hash;
};

/// Parses a Mosquitto password file's text. Throws std::runtime_error("<line>: <problem>").
std::unordered_map<std::string, PasswordHash> parse_password_file(std::string_view text);

/// True when `password` matches `hash` (constant time in the hash comparison).
bool verify_password(const PasswordHash& hash, std::string_view password);

/// True when `pattern` matches `value`: equality, or a prefix when the pattern ends in '*'.
bool glob_match(std::string_view pattern, std::string_view value) noexcept;

/// True when `pattern` (an IP, a CIDR such as 10.0.0.0/8, or an "ip:port" glob) matches the
/// peer address.
bool remote_match(std::string_view pattern, std::string_view ip, std::uint16_t port);

/// True when an ACL rule filter covers a SUBSCRIBE filter or a topic name: levels compared as
/// text, except that a rule '+' matches any one level but '#', and a rule '#' matches the rest
/// (a level starting with `$` included).
bool rule_covers_filter(std::string_view rule, std::string_view filter) noexcept;

class Rules {
 public:
  /// Compiles `rules`, reading the password file. Throws std::runtime_error on a bad file.
  static std::unique_ptr<Rules> compile(const AccessRules& rules);

  /// success, not_authorized (no rule allows) or bad_username_or_password.
  ReasonCode authenticate(const Identity& who, std::optional<std::string_view> password) const;

  /// The ACL decision for a topic (PUBLISH write, delivery read) or, with `is_filter`, a
  /// SUBSCRIBE filter (read). Both are matched with rule_covers_filter(): the same rule for
  /// every action, `$` topics included (a rule `#` or `+` covers a `$` level).
  bool allows(const Identity& who, std::string_view topic, Access access, bool is_filter) const;

  /// True when every ACL check allows (no rules, default allow): the hot path skips them.
  bool acl_allows_everything() const noexcept { return acl_.empty() && acl_default_allow_; }

 private:
  std::vector<AuthRule> auth_;
  std::vector<AclRule> acl_;
  bool acl_default_allow_ = true;
  bool has_password_file_ = false;
  std::unordered_map<std::string, PasswordHash> passwords_;
};

}  // namespace brokerha::access
