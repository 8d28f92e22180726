// SPDX-License-Identifier: Apache-2.0
#pragma once
// /proxy's request signature (docs/api.md, "/proxy"): a node forwards a request to another
// member without the caller's credentials, signed with a MAC derived from the cluster's key;
// the member accepts a fresh, unseen, verifying signature in place of Basic auth.
//
//   mac key  = HMAC-SHA256(secret key, "brokerha /proxy request mac v1")
//   mac      = HMAC-SHA256(mac key, method \n path \n query \n time \n nonce \n SHA-256(body))
//
// `query` is the percent-encoded query as the forwarding node writes it (both sides build it
// from the parsed parameters with proxy_query()); `time` is Unix seconds, accepted within
// kProxyWindow of the receiver's clock; `nonce` is 32 hex digits, accepted once.
//
// Threads: ProxyVerifier is thread-safe (one mutex around its nonce set); the functions are
// pure.

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace brokerha::http {

inline constexpr const char* kProxyTimeHeader = "X-Brokerha-Proxy-Time";
inline constexpr const char* kProxyNonceHeader = "X-Brokerha-Proxy-Nonce";
inline constexpr const char* kProxyMacHeader = "X-Brokerha-Proxy-Mac";
inline constexpr std::chrono::seconds kProxyWindow{60};

/// "?k=v&..." from the request's parameters, percent-encoded ("" without parameters).
std::string proxy_query(const httplib::Request& req);

/// The three signature headers for a request to `path` + `query` with `body`, signed with
/// `key`.
httplib::Headers sign_proxy_request(const std::string& key, const std::string& method,
                                    const std::string& path, const std::string& query,
                                    const std::string& body);

class ProxyVerifier {
 public:
  /// True when `req` carries a signature header at all.
  static bool signed_request(const httplib::Request& req);
  /// True when the signature verifies with one of `keys`, its time is within kProxyWindow and
  /// its nonce was not seen (then remembered). `why` says what failed.
  bool verify(const httplib::Request& req, const std::vector<std::string>& keys, std::string& why);

 private:
  std::mutex mu_;
  std::set<std::string> seen_;
  std::deque<std::pair<std::int64_t, std::string>> order_;  // (time, nonce), oldest first
};

}  // namespace brokerha::http
