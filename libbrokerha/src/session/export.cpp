// SPDX-License-Identifier: Apache-2.0
#include "session/export.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "topic/topic.hpp"
#include "util/bytes.hpp"

namespace brokerha::session {

namespace {

constexpr std::string_view kMagic = "BHS";
constexpr std::uint8_t kFormatVersion = 1;

using util::put_be16;
using util::put_be32;
using util::put_be64;
using util::put_u8;

// A blob: a four-byte length, then the bytes.
void put_bytes(std::string& out, std::string_view s) {
  put_be32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}
void put_opt(std::string& out, const std::optional<std::string>& s) {
  put_u8(out, s ? 1 : 0);
  if (s) put_bytes(out, *s);
}

// The byte reader plus this format's blobs.
class Reader : public util::ByteReader {
 public:
  using ByteReader::ByteReader;
  bool bytes(std::string& s) {
    std::uint32_t n;
    std::string_view v;
    if (!be32(n) || !take(n, v)) return false;
    s.assign(v);
    return true;
  }
  bool opt(std::optional<std::string>& s) {
    std::uint8_t present;
    if (!u8(present) || present > 1) return false;
    if (present == 0) return true;
    return bytes(s.emplace());
  }
};

void put_delivery(std::string& w, const Delivery& d, std::chrono::steady_clock::time_point now) {
  const message::Message& m = *d.message;
  put_u8(w, d.qos);
  put_u8(w, d.retain ? 1 : 0);
  put_be32(w, static_cast<std::uint32_t>(d.subscription_ids.size()));
  for (std::uint32_t id : d.subscription_ids) put_be32(w, id);
  put_bytes(w, m.topic);
  put_bytes(w, m.payload);
  put_u8(w, m.qos);
  put_u8(w, m.retain ? 1 : 0);
  put_bytes(w, m.origin);
  const auto remaining = m.remaining_expiry(now);
  put_u8(w, remaining ? 1 : 0);
  if (remaining) put_be32(w, *remaining);
  put_be64(w, static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             m.created.time_since_epoch())
                                             .count()));
  const message::ForwardedProperties& p = m.properties;
  put_u8(w, p.payload_format_indicator ? 1 : 0);
  if (p.payload_format_indicator) put_u8(w, *p.payload_format_indicator);
  put_opt(w, p.content_type);
  put_opt(w, p.response_topic);
  put_opt(w, p.correlation_data);
  put_be32(w, static_cast<std::uint32_t>(p.user_properties.size()));
  for (const auto& [k, v] : p.user_properties) {
    put_bytes(w, k);
    put_bytes(w, v);
  }
}

bool get_delivery(Reader& r, Delivery& d, std::chrono::steady_clock::time_point now) {
  std::uint8_t retain, msg_retain, has_expiry, has_pfi;
  std::uint32_t n;
  if (!r.u8(d.qos) || d.qos > 2 || !r.u8(retain) || retain > 1 || !r.be32(n)) return false;
  d.retain = retain == 1;
  if (n > 65535) return false;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint32_t id;
    if (!r.be32(id) || id == 0 || id > 268'435'455) return false;
    d.subscription_ids.push_back(id);
  }
  auto m = std::make_shared<message::Message>();
  if (!r.bytes(m->topic) || !topic::is_valid_name(m->topic) || !r.bytes(m->payload) ||
      !r.u8(m->qos) || m->qos > 2 || !r.u8(msg_retain) || msg_retain > 1 || !r.bytes(m->origin) ||
      !r.u8(has_expiry) || has_expiry > 1) {
    return false;
  }
  m->retain = msg_retain == 1;
  if (has_expiry) {
    std::uint32_t seconds;
    if (!r.be32(seconds)) return false;
    m->expires_at = now + std::chrono::seconds(seconds);
  }
  std::uint64_t created_ms;
  // A creation time the clock cannot hold (past the year 2262 in nanoseconds) is not one a
  // broker wrote: refuse it rather than overflow the conversion.
  constexpr std::uint64_t kMaxCreatedMs =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::duration::max())
                                     .count());
  if (!r.be64(created_ms) || created_ms > kMaxCreatedMs) return false;
  m->created = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::milliseconds(static_cast<std::int64_t>(created_ms))));
  message::ForwardedProperties& p = m->properties;
  if (!r.u8(has_pfi) || has_pfi > 1) return false;
  if (has_pfi) {
    std::uint8_t v;
    if (!r.u8(v) || v > 1) return false;
    p.payload_format_indicator = v;
  }
  if (!r.opt(p.content_type) || !r.opt(p.response_topic) || !r.opt(p.correlation_data) ||
      !r.be32(n) || n > 1'000'000) {
    return false;
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string k, v;
    if (!r.bytes(k) || !r.bytes(v)) return false;
    p.user_properties.emplace_back(std::move(k), std::move(v));
  }
  d.message = std::move(m);
  return true;
}

}  // namespace

std::string export_session(const Session& s, const SessionMeta& meta,
                           std::chrono::steady_clock::time_point now) {
  std::string w;
  w.append(kMagic);
  put_u8(w, kFormatVersion);
  put_bytes(w, s.client_id());
  put_u8(w, meta.protocol_version);
  put_u8(w, meta.clean ? 1 : 0);
  put_opt(w, meta.username);
  put_be32(w, meta.expiry_interval);
  put_be32(w, static_cast<std::uint32_t>(s.subscriptions().size()));
  for (const auto& [filter, o] : s.subscriptions()) {
    put_bytes(w, filter);
    put_u8(w, o.qos);
    put_u8(w, static_cast<std::uint8_t>((o.no_local ? 1 : 0) | (o.retain_as_published ? 2 : 0)));
    put_u8(w, o.retain_handling);
    put_be32(w, o.identifier);
  }
  put_be16(w, s.last_packet_id());
  put_be32(w, static_cast<std::uint32_t>(s.inflight().size()));
  for (const Inflight& f : s.inflight()) {
    put_be16(w, f.packet_id);
    put_u8(w, f.released ? 1 : 0);
    put_delivery(w, f.delivery, now);
  }
  put_be32(w, static_cast<std::uint32_t>(s.queue().size()));
  for (const Delivery& d : s.queue()) put_delivery(w, d, now);
  // Sorted, so one session always exports to the same bytes.
  std::vector<std::uint16_t> ids(s.incoming_qos2_ids().begin(), s.incoming_qos2_ids().end());
  std::sort(ids.begin(), ids.end());
  put_be32(w, static_cast<std::uint32_t>(ids.size()));
  for (std::uint16_t id : ids) put_be16(w, id);
  return w;
}

std::optional<ImportedSession> import_session(std::string_view bytes,
                                              std::chrono::steady_clock::time_point now,
                                              std::string& error) {
  auto fail = [&](const char* what) {
    error = what;
    return std::nullopt;
  };
  if (bytes.substr(0, kMagic.size()) != kMagic) return fail("not an exported session");
  Reader r(bytes.substr(kMagic.size()));
  std::uint8_t version, clean;
  if (!r.u8(version)) return fail("truncated");
  if (version != kFormatVersion) return fail("unknown session format version");
  std::string client_id;
  ImportedSession out;
  if (!r.bytes(client_id) || client_id.empty() || !r.u8(out.meta.protocol_version) ||
      out.meta.protocol_version < 3 || out.meta.protocol_version > 5 || !r.u8(clean) || clean > 1 ||
      !r.opt(out.meta.username) || !r.be32(out.meta.expiry_interval)) {
    return fail("malformed session header");
  }
  out.meta.clean = clean == 1;
  out.session = std::make_unique<Session>(std::move(client_id));
  std::uint32_t n;
  if (!r.be32(n)) return fail("truncated subscriptions");
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string filter;
    SubscriptionOptions o;
    std::uint8_t flags;
    if (!r.bytes(filter) || !topic::is_valid_filter(filter) || !r.u8(o.qos) || o.qos > 2 ||
        !r.u8(flags) || flags > 3 || !r.u8(o.retain_handling) || o.retain_handling > 2 ||
        !r.be32(o.identifier) || o.identifier > 268'435'455) {
      return fail("malformed subscription");
    }
    o.no_local = flags & 1;
    o.retain_as_published = flags & 2;
    out.session->subscriptions()[filter] = o;
  }
  std::uint16_t last_id;
  if (!r.be16(last_id)) return fail("truncated");
  out.session->set_last_packet_id(last_id);
  if (!r.be32(n) || n > 65535) return fail("malformed in-flight list");
  for (std::uint32_t i = 0; i < n; ++i) {
    Inflight f;
    std::uint8_t released;
    if (!r.be16(f.packet_id) || f.packet_id == 0 || !r.u8(released) || released > 1 ||
        !get_delivery(r, f.delivery, now) || f.delivery.qos == 0) {
      return fail("malformed in-flight message");
    }
    f.released = released == 1;
    if (f.released && f.delivery.qos != 2) return fail("a released in-flight QoS 1 delivery");
    for (const Inflight& other : out.session->inflight()) {
      if (other.packet_id == f.packet_id) return fail("two in-flight deliveries share a packet id");
    }
    out.session->restore_inflight(std::move(f));
  }
  if (!r.be32(n)) return fail("truncated queue");
  for (std::uint32_t i = 0; i < n; ++i) {
    Delivery d;
    if (!get_delivery(r, d, now)) return fail("malformed queued message");
    out.session->restore_queued(std::move(d));
  }
  if (!r.be32(n) || n > 65535) return fail("malformed QoS 2 list");
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint16_t id;
    if (!r.be16(id) || id == 0) return fail("malformed QoS 2 packet id");
    out.session->receive_qos2(id);
  }
  if (!r.empty()) return fail("bytes after the end of the session");
  return out;
}

}  // namespace brokerha::session
