// SPDX-License-Identifier: Apache-2.0
// /proxy's request signature (http/proxy_auth.hpp).

#include "http/proxy_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cctype>
#include <cstdlib>

namespace brokerha::http {

namespace {

constexpr std::string_view kMacLabel = "brokerha /proxy request mac v1";
constexpr std::size_t kMaxNonces = 100000;  // remembered at once; beyond, the oldest go

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 0xF]);
  }
  return out;
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string mac(const std::string& key, const std::string& method, const std::string& path,
                const std::string& query, const std::string& time, const std::string& nonce,
                const std::string& body) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  const std::string text = method + "\n" + path + "\n" + query + "\n" + time + "\n" + nonce + "\n" +
                           hex(digest, sizeof digest);
  const std::string m = hmac(hmac(key, kMacLabel), text);
  return hex(reinterpret_cast<const unsigned char*>(m.data()), m.size());
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_' || c == '.' || c == '~' || c == ':' ||
        c == ',' || c == '/') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xF]);
    }
  }
  return out;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string proxy_query(const httplib::Request& req) {
  std::string out;
  char sep = '?';
  for (const auto& [k, v] : req.params) {
    out += sep + percent_encode(k) + "=" + percent_encode(v);
    sep = '&';
  }
  return out;
}

httplib::Headers sign_proxy_request(const std::string& key, const std::string& method,
                                    const std::string& path, const std::string& query,
                                    const std::string& body) {
  unsigned char raw[16];
  RAND_bytes(raw, sizeof raw);
  const std::string nonce = hex(raw, sizeof raw);
  const std::string time = std::to_string(now_seconds());
  httplib::Headers h;
  h.emplace(kProxyTimeHeader, time);
  h.emplace(kProxyNonceHeader, nonce);
  h.emplace(kProxyMacHeader, mac(key, method, path, query, time, nonce, body));
  return h;
}

bool ProxyVerifier::signed_request(const httplib::Request& req) {
  return req.has_header(kProxyMacHeader);
}

bool ProxyVerifier::verify(const httplib::Request& req, const std::vector<std::string>& keys,
                           std::string& why) {
  if (keys.empty()) {
    why = "this node has no cluster key to check the /proxy signature with";
    return false;
  }
  const std::string time = req.get_header_value(kProxyTimeHeader);
  const std::string nonce = req.get_header_value(kProxyNonceHeader);
  const std::string got = req.get_header_value(kProxyMacHeader);
  char* end = nullptr;
  const long long t = std::strtoll(time.c_str(), &end, 10);
  if (time.empty() || end == nullptr || *end != '\0' || nonce.size() != 32 || got.size() != 64) {
    why = "malformed /proxy signature";
    return false;
  }
  const std::int64_t now = now_seconds();
  if (t < now - kProxyWindow.count() || t > now + kProxyWindow.count()) {
    why = "stale /proxy signature (clocks more than 60 s apart?)";
    return false;
  }
  // HEAD is answered as GET by the route table; the signer signed the method it sent.
  const std::string query = proxy_query(req);
  bool ok = false;
  for (const std::string& key : keys) {
    const std::string want = mac(key, req.method, req.path, query, time, nonce, req.body);
    ok = CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0 || ok;
  }
  if (!ok) {
    why = "the /proxy signature does not verify with this node's cluster keys";
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  while (!order_.empty() &&
         (order_.front().first < now - 2 * kProxyWindow.count() || order_.size() >= kMaxNonces)) {
    seen_.erase(order_.front().second);
    order_.pop_front();
  }
  if (!seen_.insert(nonce).second) {
    why = "replayed /proxy signature";
    return false;
  }
  order_.emplace_back(t, nonce);
  return true;
}

}  // namespace brokerha::http
