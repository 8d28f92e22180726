// SPDX-License-Identifier: Apache-2.0
#include "access/rules.hpp"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "topic/topic.hpp"
#include "util/base64.hpp"

namespace brokerha::access {

namespace {

std::string base64_decode(std::string_view in) {
  auto out = util::base64_decode(in);
  if (!out || out->empty()) throw std::runtime_error("invalid base64");
  return std::move(*out);
}

// Compares two secrets without a data-dependent time: both are hashed to a fixed size first.
bool equal_secret(std::string_view a, std::string_view b) {
  unsigned char ha[SHA256_DIGEST_LENGTH];
  unsigned char hb[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), ha);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), hb);
  return CRYPTO_memcmp(ha, hb, sizeof ha) == 0;
}

bool identity_matches(const std::optional<std::string>& username,
                      const std::optional<std::string>& client,
                      const std::optional<std::string>& remote, const Identity& who) {
  if (username && (!who.username || !glob_match(*username, *who.username))) return false;
  if (client && !glob_match(*client, who.client_id)) return false;
  if (remote && !remote_match(*remote, who.remote_ip, who.remote_port)) return false;
  return true;
}

// Parses "a.b.c.d" or an IPv6 address into 16 bytes (IPv4 as ::ffff:a.b.c.d).
bool parse_ip(std::string_view text, unsigned char out[16]) {
  if (text.find('\0') != std::string_view::npos) return false;
  const std::string s(text);
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    std::memset(out, 0, 10);
    out[10] = 0xFF;
    out[11] = 0xFF;
    std::memcpy(out + 12, &v4, 4);
    return true;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::memcpy(out, &v6, 16);
    return true;
  }
  return false;
}

}  // namespace

std::unordered_map<std::string, PasswordHash> parse_password_file(std::string_view text) {
  std::unordered_map<std::string, PasswordHash> out;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line[0] == '#') continue;
    auto fail = [&](const char* what) {
      throw std::runtime_error("line " + std::to_string(line_no) + ": " + what);
    };
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) fail("expected user:hash");
    const std::string user(line.substr(0, colon));
    const std::string_view hash = line.substr(colon + 1);
    PasswordHash h;
    try {
      if (hash.substr(0, 3) == "$7$") {
        // $7$<iterations>$<base64 salt>$<base64 hash>
        const std::string_view rest = hash.substr(3);
        const std::size_t a = rest.find('$');
        const std::size_t b = a == std::string_view::npos ? a : rest.find('$', a + 1);
        if (b == std::string_view::npos) fail("malformed $7$ hash");
        h.kind = PasswordHash::Kind::pbkdf2_sha512;
        h.iterations = std::stoi(std::string(rest.substr(0, a)));
        if (h.iterations < 1) fail("malformed $7$ hash");
        h.salt = base64_decode(rest.substr(a + 1, b - a - 1));
        h.hash = base64_decode(rest.substr(b + 1));
      } else if (hash.substr(0, 3) == "$6$") {
        const std::string_view rest = hash.substr(3);
        const std::size_t a = rest.find('$');
        if (a == std::string_view::npos) fail("malformed $6$ hash");
        h.kind = PasswordHash::Kind::sha512;
        h.salt = base64_decode(rest.substr(0, a));
        h.hash = base64_decode(rest.substr(a + 1));
      } else {
        fail("unsupported hash (expected $7$ or $6$; use mosquitto_passwd)");
      }
    } catch (const std::invalid_argument&) {
      fail("malformed hash");
    } catch (const std::out_of_range&) {
      fail("malformed hash");
    } catch (const std::runtime_error& e) {
      if (std::string_view(e.what()).substr(0, 5) == "line ") throw;
      fail("malformed hash (base64)");
    }
    if (h.hash.size() != 64) fail("hash is not 64 bytes");
    out[user] = std::move(h);
  }
  return out;
}

bool verify_password(const PasswordHash& h, std::string_view password) {
  unsigned char digest[64];
  if (h.kind == PasswordHash::Kind::pbkdf2_sha512) {
    if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                          reinterpret_cast<const unsigned char*>(h.salt.data()),
                          static_cast<int>(h.salt.size()), h.iterations, EVP_sha512(),
                          static_cast<int>(sizeof digest), digest) != 1) {
      return false;
    }
  } else {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    const bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha512(), nullptr) == 1 &&
                    EVP_DigestUpdate(ctx, password.data(), password.size()) == 1 &&
                    EVP_DigestUpdate(ctx, h.salt.data(), h.salt.size()) == 1 &&
                    EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == sizeof digest;
    EVP_MD_CTX_free(ctx);
    if (!ok) return false;
  }
  return h.hash.size() == sizeof digest && CRYPTO_memcmp(digest, h.hash.data(), sizeof digest) == 0;
}

bool glob_match(std::string_view pattern, std::string_view value) noexcept {
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    return value.substr(0, pattern.size()) == pattern;
  }
  return pattern == value;
}

bool remote_match(std::string_view pattern, std::string_view ip, std::uint16_t port) {
  // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; rules are written for a.b.c.d.
  constexpr std::string_view kMapped = "::ffff:";
  auto unmap = [&](std::string_view& a) {
    if (a.size() > kMapped.size() && a.substr(0, kMapped.size()) == kMapped &&
        a.find('.') != std::string_view::npos) {
      a.remove_prefix(kMapped.size());
    }
  };
  unmap(ip);
  if (pattern.find('/') == std::string_view::npos) unmap(pattern);
  const std::size_t slash = pattern.find('/');
  if (slash != std::string_view::npos) {
    unsigned char net[16];
    unsigned char addr[16];
    if (!parse_ip(pattern.substr(0, slash), net) || !parse_ip(ip, addr)) return false;
    const std::string_view length = pattern.substr(slash + 1);
    if (length.empty() || length.size() > 3) return false;  // "10.0.0.0/" is not "/0"
    int bits = 0;
    for (char c : length) {
      if (c < '0' || c > '9') return false;
      bits = bits * 10 + (c - '0');
      if (bits > 128) return false;
    }
    const bool v4 = pattern.substr(0, slash).find(':') == std::string_view::npos;
    if (v4) {
      if (bits > 32) return false;
      bits += 96;  // IPv4 sits in the last 32 bits of the mapped form
    }
    for (int i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
      const unsigned mask = bits >= 8 ? 0xFFu : (0xFFu << (8 - bits)) & 0xFFu;
      if ((net[i] & mask) != (addr[i] & mask)) return false;
    }
    return true;
  }
  if (glob_match(pattern, ip)) return true;
  // "ip:port" patterns, as broker-ha compared the whole remote address.
  return glob_match(pattern, std::string(ip) + ":" + std::to_string(port));
}

bool rule_covers_filter(std::string_view rule, std::string_view filter) noexcept {
  std::size_t ri = 0;
  std::size_t fi = 0;
  for (;;) {
    std::size_t re = rule.find('/', ri);
    const bool rule_last = re == std::string_view::npos;
    if (rule_last) re = rule.size();
    const std::string_view rl = rule.substr(ri, re - ri);
    if (rl == "#") return true;
    if (fi > filter.size()) return false;
    std::size_t fe = filter.find('/', fi);
    const bool filter_last = fe == std::string_view::npos;
    if (filter_last) fe = filter.size();
    const std::string_view fl = filter.substr(fi, fe - fi);
    if (rl == "+" ? fl == "#" : rl != fl) return false;
    if (rule_last) return filter_last;
    ri = re + 1;
    fi = filter_last ? filter.size() + 1 : fe + 1;
  }
}

std::unique_ptr<Rules> Rules::compile(const AccessRules& rules) {
  auto r = std::make_unique<Rules>();
  r->auth_ = rules.auth;
  r->acl_ = rules.acl;
  r->acl_default_allow_ = rules.acl_default_allow;
  for (const AclRule& rule : r->acl_) {
    for (const auto& [filter, access] : rule.filters) {
      if (!topic::is_valid_filter(filter)) {
        throw std::runtime_error("acl filter \"" + filter + "\" is not a valid topic filter");
      }
      if (access < 0 || access > 3) {
        throw std::runtime_error("acl access for \"" + filter + "\" must be 0, 1, 2 or 3");
      }
    }
  }
  if (!rules.password_file.empty()) {
    std::ifstream in(rules.password_file, std::ios::binary);
    if (!in) throw std::runtime_error(rules.password_file + ": cannot be read");
    std::ostringstream text;
    text << in.rdbuf();
    try {
      r->passwords_ = parse_password_file(text.str());
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(rules.password_file + ": " + e.what());
    }
    r->has_password_file_ = true;
  }
  return r;
}

ReasonCode Rules::authenticate(const Identity& who,
                               std::optional<std::string_view> password) const {
  bool verified = false;
  if (has_password_file_ && who.username) {
    auto it = passwords_.find(std::string(*who.username));
    if (it != passwords_.end()) {
      if (!password || !verify_password(it->second, *password)) {
        return ReasonCode::bad_username_or_password;
      }
      verified = true;
    }
  }
  if (auth_.empty()) {
    if (!has_password_file_ || verified) return ReasonCode::success;
    return ReasonCode::not_authorized;
  }
  for (const AuthRule& rule : auth_) {
    if (!identity_matches(rule.username, rule.client, rule.remote, who)) continue;
    if (rule.password && (!password || !equal_secret(*rule.password, *password))) continue;
    return rule.allow ? ReasonCode::success : ReasonCode::not_authorized;
  }
  return ReasonCode::not_authorized;
}

bool Rules::allows(const Identity& who, std::string_view name, Access access,
                   bool /*is_filter*/) const {
  const int want = access == Access::read ? 1 : 2;
  for (const AclRule& rule : acl_) {
    if (!identity_matches(rule.username, rule.client, rule.remote, who)) continue;
    if (rule.filters.empty()) return true;
    bool matched = false;
    for (const auto& [filter, granted] : rule.filters) {
      // One rule for PUBLISH topics, SUBSCRIBE filters and deliveries: a topic name is a
      // filter without wildcards. MQTT's "a wildcard never matches a leading `$`" is a rule
      // for subscriptions, not for access rules: a rule `#` covers `$SYS/...` too, so that a
      // catch-all deny stops publishing there as it stops subscribing there.
      const bool hit = rule_covers_filter(filter, name);
      if (!hit) continue;
      if (granted & want) return true;  // a granting filter wins over a denying one
      matched = true;
    }
    if (matched) return false;
  }
  return acl_default_allow_;
}

}  // namespace brokerha::access
