// SPDX-License-Identifier: Apache-2.0
#include "cluster/protocol.hpp"

#include <algorithm>
#include <cstring>

#include "util/bytes.hpp"

namespace brokerha::cluster {

namespace {

using util::put_le;
using util::put_leb128;
using util::put_u8;

// A string: its length as LEB128, then its bytes.
void put_str(std::string& out, std::string_view s) {
  put_leb128(out, s.size());
  out.append(s.data(), s.size());
}

// The byte reader plus this format's strings.
class Reader : public util::ByteReader {
 public:
  using ByteReader::ByteReader;
  bool str(std::string_view& s) noexcept {
    std::uint64_t n;
    return leb128(n) && n <= remaining() && take(static_cast<std::size_t>(n), s);
  }
};

// Message flags.
constexpr std::uint8_t kQosMask = 0x03;
constexpr std::uint8_t kRetain = 0x04;
constexpr std::uint8_t kHasExpiry = 0x08;
constexpr std::uint8_t kHasVersion = 0x10;
constexpr std::uint8_t kHasProperties = 0x20;
constexpr std::uint8_t kKnownFlags = 0x3F;

// Property presence bits.
constexpr std::uint8_t kPayloadFormat = 0x01;
constexpr std::uint8_t kContentType = 0x02;
constexpr std::uint8_t kResponseTopic = 0x04;
constexpr std::uint8_t kCorrelation = 0x08;
constexpr std::uint8_t kUserProperties = 0x10;
constexpr std::uint8_t kKnownProperties = 0x1F;

void put_version(std::string& out, const hlc::Version& v) {
  put_le(out, v.hlc, 8);
  put_str(out, v.node);
}

bool read_version(Reader& r, hlc::Version& v) {
  std::string_view node;
  if (!r.le(v.hlc, 8) || !r.str(node)) return false;
  v.node.assign(node.data(), node.size());
  return true;
}

void put_message(std::string& out, const message::Message& m, const hlc::Version* version,
                 message::Message::Clock::time_point now) {
  const auto& p = m.properties;
  const bool has_props = p.payload_format_indicator || p.content_type || p.response_topic ||
                         p.correlation_data || !p.user_properties.empty();
  const auto expiry = m.remaining_expiry(now);
  std::uint8_t flags = static_cast<std::uint8_t>(m.qos & kQosMask);
  if (m.retain) flags |= kRetain;
  if (expiry) flags |= kHasExpiry;
  if (version != nullptr) flags |= kHasVersion;
  if (has_props) flags |= kHasProperties;
  put_u8(out, flags);
  put_str(out, m.topic);
  put_str(out, m.origin);
  put_le(out,
         static_cast<std::uint64_t>(
             std::chrono::duration_cast<std::chrono::milliseconds>(m.created.time_since_epoch())
                 .count()),
         8);
  if (expiry) put_le(out, *expiry, 4);
  if (version != nullptr) put_version(out, *version);
  if (has_props) {
    std::uint8_t present = 0;
    if (p.payload_format_indicator) present |= kPayloadFormat;
    if (p.content_type) present |= kContentType;
    if (p.response_topic) present |= kResponseTopic;
    if (p.correlation_data) present |= kCorrelation;
    if (!p.user_properties.empty()) present |= kUserProperties;
    put_u8(out, present);
    if (p.payload_format_indicator) put_u8(out, *p.payload_format_indicator);
    if (p.content_type) put_str(out, *p.content_type);
    if (p.response_topic) put_str(out, *p.response_topic);
    if (p.correlation_data) put_str(out, *p.correlation_data);
    if (!p.user_properties.empty()) {
      put_leb128(out, p.user_properties.size());
      for (const auto& [k, v] : p.user_properties) {
        put_str(out, k);
        put_str(out, v);
      }
    }
  }
  put_str(out, m.payload);
}

bool read_message(Reader& r, WireMessage& w) {
  std::uint8_t flags;
  if (!r.u8(flags) || (flags & ~kKnownFlags) != 0) return false;
  w.qos = flags & kQosMask;
  if (w.qos > 2) return false;
  w.retain = (flags & kRetain) != 0;
  std::uint64_t created;
  if (!r.str(w.topic) || !r.str(w.origin) || !r.le(created, 8)) return false;
  w.created_ms = static_cast<std::int64_t>(created);
  if ((flags & kHasExpiry) != 0) {
    std::uint64_t e;
    if (!r.le(e, 4)) return false;
    w.expiry = static_cast<std::uint32_t>(e);
  }
  if ((flags & kHasVersion) != 0) {
    hlc::Version v;
    if (!read_version(r, v)) return false;
    w.version = std::move(v);
  }
  if ((flags & kHasProperties) != 0) {
    std::uint8_t present;
    if (!r.u8(present) || (present & ~kKnownProperties) != 0) return false;
    if ((present & kPayloadFormat) != 0) {
      std::uint8_t f;
      if (!r.u8(f) || f > 1) return false;
      w.payload_format = f;
    }
    std::string_view s;
    if ((present & kContentType) != 0) {
      if (!r.str(s)) return false;
      w.content_type = s;
    }
    if ((present & kResponseTopic) != 0) {
      if (!r.str(s)) return false;
      w.response_topic = s;
    }
    if ((present & kCorrelation) != 0) {
      if (!r.str(s)) return false;
      w.correlation_data = s;
    }
    if ((present & kUserProperties) != 0) {
      std::uint64_t n;
      // Each pair takes at least two bytes: a count beyond that is a lie.
      if (!r.leb128(n) || n == 0 || n > r.remaining() / 2) return false;
      w.user_properties.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) {
        std::string_view k, v;
        if (!r.str(k) || !r.str(v)) return false;
        w.user_properties.emplace_back(k, v);
      }
    }
  }
  return r.str(w.payload);
}

// Reads `n` non-empty strings (elements std::string or std::string_view).
template <class T>
bool read_names(Reader& r, std::uint64_t n, std::vector<T>& out) {
  out.clear();
  out.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string_view f;
    if (!r.str(f) || f.empty()) return false;
    out.emplace_back(f);
  }
  return true;
}

std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 1469598103934665603ull) noexcept {
  for (char c : s) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string encode_message(const message::Message& m, const hlc::Version* version,
                           message::Message::Clock::time_point now) {
  std::string out;
  out.reserve(32 + m.topic.size() + m.origin.size() + m.payload.size());
  put_message(out, m, version, now);
  return out;
}

bool decode_message(std::string_view body, WireMessage& out) {
  Reader r(body);
  return read_message(r, out) && r.empty();
}

std::shared_ptr<message::Message> to_message(const WireMessage& w,
                                             message::Message::Clock::time_point now) {
  auto m = std::make_shared<message::Message>();
  m->topic.assign(w.topic.data(), w.topic.size());
  m->payload.assign(w.payload.data(), w.payload.size());
  m->qos = w.qos;
  m->retain = w.retain;
  m->origin.assign(w.origin.data(), w.origin.size());
  m->created = std::chrono::system_clock::time_point(std::chrono::milliseconds(w.created_ms));
  if (w.expiry) m->expires_at = now + std::chrono::seconds(*w.expiry);
  auto& p = m->properties;
  p.payload_format_indicator = w.payload_format;
  if (w.content_type) p.content_type = std::string(*w.content_type);
  if (w.response_topic) p.response_topic = std::string(*w.response_topic);
  if (w.correlation_data) p.correlation_data = std::string(*w.correlation_data);
  p.user_properties.reserve(w.user_properties.size());
  for (const auto& [k, v] : w.user_properties) p.user_properties.emplace_back(k, v);
  return m;
}

std::string encode_publish_shared(const std::vector<std::string_view>& shares,
                                  std::string_view message_body) {
  std::string out;
  std::size_t size = 10 + message_body.size();
  for (std::string_view f : shares) size += 5 + f.size();
  out.reserve(size);
  put_leb128(out, shares.size());
  for (std::string_view f : shares) put_str(out, f);
  out.append(message_body.data(), message_body.size());
  return out;
}

bool decode_publish_shared(std::string_view body, std::vector<std::string_view>& shares,
                           WireMessage& out) {
  Reader r(body);
  std::uint64_t n;
  // Each name takes at least two bytes (a length and one byte).
  if (!r.leb128(n) || n == 0 || n > r.remaining() / 2) return false;
  return read_names(r, n, shares) && read_message(r, out) && r.empty();
}

std::string encode_routes_full(std::uint64_t number, const std::vector<std::string>& filters) {
  std::string out;
  put_le(out, number, 8);
  put_leb128(out, filters.size());
  for (const auto& f : filters) put_str(out, f);
  return out;
}

bool decode_routes_full(std::string_view body, std::uint64_t& number,
                        std::vector<std::string>& filters) {
  Reader r(body);
  std::uint64_t n;
  if (!r.le(number, 8) || !r.leb128(n) || n > r.remaining()) return false;
  return read_names(r, n, filters) && r.empty();
}

std::string encode_routes_part(std::uint64_t number, bool last,
                               const std::vector<std::string>& filters) {
  std::string out;
  put_u8(out, last ? 1 : 0);
  out += encode_routes_full(number, filters);
  return out;
}

bool decode_routes_part(std::string_view body, std::uint64_t& number, bool& last,
                        std::vector<std::string>& filters) {
  if (body.empty() || static_cast<std::uint8_t>(body[0]) > 1) return false;
  last = body[0] == 1;
  return decode_routes_full(body.substr(1), number, filters);
}

std::string encode_routes_delta(std::uint64_t number, const std::vector<RouteChange>& changes) {
  std::string out;
  put_le(out, number, 8);
  put_leb128(out, changes.size());
  for (const auto& c : changes) {
    put_u8(out, c.add ? 1 : 0);
    put_str(out, c.filter);
  }
  return out;
}

bool decode_routes_delta(std::string_view body, std::uint64_t& number,
                         std::vector<RouteChange>& changes) {
  Reader r(body);
  std::uint64_t n;
  if (!r.le(number, 8) || !r.leb128(n) || n > r.remaining()) return false;
  changes.clear();
  changes.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    std::uint8_t op;
    std::string_view f;
    if (!r.u8(op) || op > 1 || !r.str(f) || f.empty()) return false;
    changes.push_back(RouteChange{op == 1, std::string(f)});
  }
  return r.empty();
}

std::string encode_u64(std::uint64_t v) {
  std::string out;
  put_le(out, v, 8);
  return out;
}

bool decode_u64(std::string_view body, std::uint64_t& v) {
  Reader r(body);
  return r.le(v, 8) && r.empty();
}

void begin_retained(std::string& body) {
  body.clear();
  put_le(body, 0, 4);
}

void append_retained(std::string& body, const std::string& topic, const retained::Store::Entry& e,
                     message::Message::Clock::time_point now) {
  put_str(body, topic);
  put_version(body, e.version);
  if (!e.message) {
    put_u8(body, 0);
    return;
  }
  put_u8(body, 1);
  put_message(body, *e.message, nullptr, now);
}

void finish_retained(std::string& body, std::uint32_t count) {
  for (int i = 0; i < 4; ++i)
    body[static_cast<std::size_t>(i)] = static_cast<char>((count >> (8 * i)) & 0xFF);
}

bool decode_retained(std::string_view body, std::vector<WireRetained>& out) {
  Reader r(body);
  std::uint64_t n;
  if (!r.le(n, 4) || n > r.remaining()) return false;
  out.clear();
  out.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    WireRetained e;
    std::uint8_t live;
    if (!r.str(e.topic) || e.topic.empty() || !read_version(r, e.version) || !r.u8(live) ||
        live > 1)
      return false;
    if (live == 1) {
      WireMessage m;
      if (!read_message(r, m) || m.topic != e.topic) return false;
      e.message = std::move(m);
    }
    out.push_back(std::move(e));
  }
  return r.empty();
}

std::size_t bucket_of(std::string_view topic) noexcept {
  return static_cast<std::size_t>(fnv1a(topic) % kDigestBuckets);
}

std::uint64_t entry_hash(std::string_view topic, const hlc::Version& v, bool tombstone) noexcept {
  std::uint64_t h = fnv1a(topic);
  char buf[9];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((v.hlc >> (8 * i)) & 0xFF);
  buf[8] = tombstone ? 1 : 0;
  h = fnv1a(std::string_view(buf, sizeof buf), h);
  h = fnv1a(v.node, h);
  // Mix so that XOR over entries does not cancel structure.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

std::string encode_digest(const Digest& d) {
  std::string out;
  out.reserve(kDigestBuckets * 8);
  for (std::uint64_t v : d) put_le(out, v, 8);
  return out;
}

bool decode_digest(std::string_view body, Digest& d) {
  Reader r(body);
  for (std::uint64_t& v : d) {
    if (!r.le(v, 8)) return false;
  }
  return r.empty();
}

std::string encode_buckets(const std::vector<std::uint16_t>& buckets) {
  std::string out;
  put_leb128(out, buckets.size());
  for (std::uint16_t b : buckets) put_le(out, b, 2);
  return out;
}

bool decode_buckets(std::string_view body, std::vector<std::uint16_t>& buckets) {
  Reader r(body);
  std::uint64_t n;
  if (!r.leb128(n) || n > kDigestBuckets) return false;
  buckets.clear();
  for (std::uint64_t i = 0; i < n; ++i) {
    std::uint64_t b;
    if (!r.le(b, 2) || b >= kDigestBuckets) return false;
    buckets.push_back(static_cast<std::uint16_t>(b));
  }
  return r.empty();
}

// ---- claims -------------------------------------------------------------------------------------

std::string encode_claim_request(std::uint64_t request, std::string_view client_id) {
  std::string out;
  put_le(out, request, 8);
  put_str(out, client_id);
  return out;
}

bool decode_claim_request(std::string_view body, ClaimRequest& out) {
  Reader r(body);
  return r.le(out.request, 8) && r.str(out.client_id) && r.empty();
}

std::string encode_claim_grant(std::uint64_t request, std::uint64_t hlc) {
  std::string out;
  put_le(out, request, 8);
  put_le(out, hlc, 8);
  return out;
}

bool decode_claim_grant(std::string_view body, std::uint64_t& request, std::uint64_t& hlc) {
  Reader r(body);
  return r.le(request, 8) && r.le(hlc, 8) && r.empty();
}

std::string encode_take_request(const TakeRequest& t) {
  std::string out;
  put_le(out, t.request, 8);
  put_str(out, t.client_id);
  put_version(out, t.version);
  put_u8(out, t.resume ? 1 : 0);
  return out;
}

bool decode_take_request(std::string_view body, TakeRequest& out) {
  Reader r(body);
  std::uint8_t resume = 0;
  if (!r.le(out.request, 8) || !r.str(out.client_id) || !read_version(r, out.version) ||
      !r.u8(resume) || resume > 1 || !r.empty()) {
    return false;
  }
  out.resume = resume == 1;
  return true;
}

std::string encode_take_reply(const TakeReply& t) {
  std::string out;
  put_le(out, t.request, 8);
  put_str(out, t.client_id);
  put_version(out, t.version);
  put_u8(out, static_cast<std::uint8_t>(t.outcome));
  if (t.outcome == TakeOutcome::moved) put_str(out, t.session);
  return out;
}

bool decode_take_reply(std::string_view body, TakeReply& out) {
  Reader r(body);
  std::uint8_t outcome = 0;
  if (!r.le(out.request, 8) || !r.str(out.client_id) || !read_version(r, out.version) ||
      !r.u8(outcome) || outcome > static_cast<std::uint8_t>(TakeOutcome::moved_in_parts)) {
    return false;
  }
  out.outcome = static_cast<TakeOutcome>(outcome);
  out.session = {};
  if (out.outcome == TakeOutcome::moved && !r.str(out.session)) return false;
  return r.empty();
}

namespace {
// `u64 request`, `str s`: the body of session_part and of trail_end.
std::string request_and_string(std::uint64_t request, std::string_view str) {
  std::string out;
  put_le(out, request, 8);
  put_str(out, str);
  return out;
}
bool read_request_and_string(std::string_view body, std::uint64_t& request, std::string_view& str) {
  Reader r(body);
  return r.le(request, 8) && r.str(str) && r.empty();
}
}  // namespace

std::string encode_session_part(std::uint64_t request, std::string_view slice) {
  return request_and_string(request, slice);
}

bool decode_session_part(std::string_view body, std::uint64_t& request, std::string_view& slice) {
  return read_request_and_string(body, request, slice);
}

std::string encode_take_ack(const TakeAck& a) {
  std::string out;
  put_le(out, a.request, 8);
  put_str(out, a.client_id);
  put_u8(out, a.ok ? 1 : 0);
  return out;
}

bool decode_take_ack(std::string_view body, TakeAck& out) {
  Reader r(body);
  std::uint8_t ok = 0;
  if (!r.le(out.request, 8) || !r.str(out.client_id) || !r.u8(ok) || ok > 1) return false;
  out.ok = ok == 1;
  return r.empty();
}

std::string encode_trail_end(std::uint64_t request, std::string_view client_id) {
  return request_and_string(request, client_id);
}

bool decode_trail_end(std::string_view body, std::uint64_t& request, std::string_view& client_id) {
  return read_request_and_string(body, request, client_id);
}

std::string encode_session_handoff(const HandOffFrame& h) {
  std::string out;
  put_le(out, h.request, 8);
  put_str(out, h.client_id);
  put_version(out, h.version);
  return out;
}

bool decode_session_handoff(std::string_view body, HandOffFrame& out) {
  Reader r(body);
  return r.le(out.request, 8) && r.str(out.client_id) && read_version(r, out.version) && r.empty();
}

std::string encode_claims_held(const std::vector<HeldClaim>& claims) {
  std::string out;
  put_leb128(out, claims.size());
  for (const HeldClaim& c : claims) {
    put_str(out, c.client_id);
    put_version(out, c.version);
  }
  return out;
}

bool decode_claims_held(std::string_view body, std::vector<HeldClaim>& out) {
  Reader r(body);
  std::uint64_t n = 0;
  out.clear();
  // Each entry takes at least 10 bytes (two lengths and the HLC): a count beyond what the
  // body can hold is malformed, not a reason to reserve memory.
  if (!r.leb128(n) || n > r.remaining() / 10) return false;
  out.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string_view id;
    HeldClaim c;
    if (!r.str(id) || !read_version(r, c.version)) return false;
    c.client_id.assign(id.data(), id.size());
    out.push_back(std::move(c));
  }
  return r.empty();
}

// ---- capabilities -----------------------------------------------------------------------------

std::string encode_capabilities(const Capabilities& c) {
  std::string out;
  put_u8(out, c.min);
  put_u8(out, c.max);
  return out;
}

bool decode_capabilities(std::string_view body, Capabilities& out) {
  Reader r(body);
  if (!r.u8(out.min) || !r.u8(out.max)) return false;
  return out.min != 0 && out.min <= out.max;
}

std::uint8_t common_version(const Capabilities& mine, const Capabilities& theirs) noexcept {
  const std::uint8_t top = std::min(mine.max, theirs.max);
  return top >= std::max(mine.min, theirs.min) ? top : 0;
}

}  // namespace brokerha::cluster
