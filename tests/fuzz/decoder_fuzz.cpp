// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the MQTT wire codec (mqtt::Framer, mqtt::decode, mqtt::encode), the
// UTF-8 validator and the topic functions.
//
// Input: one configuration byte, then a byte stream as a client (or server) would send it.
//   config % 3        protocol version the stream is decoded with: 3, 4 or 5
//   (config / 3) % 17 chunk size the stream is fed to the Framer in: 0 = all at once, else 1..16
//   config / 51       maximum packet size: kMaxPacketSize, 4096, 1024, 128, 16 or 2 bytes
//
// Oracles (a violation calls __builtin_trap(), which libFuzzer reports as a crash):
//  - Framing does not depend on chunking: the same frames, the same error, the same number of
//    bytes left buffered as when the stream is fed in one piece.
//  - Every frame that decodes is re-encoded (encode() succeeds, encoded_size() agrees, the first
//    byte is the frame's, the body is no longer than the frame's), the encoding frames as one
//    packet and decodes to an equal Packet whose encoding is byte-identical.
//  - Decoded packets satisfy the session-independent rules (valid topic names and filters,
//    packet identifier iff QoS > 0, ...), and topic::matches agrees with a reference matcher
//    for every decoded SUBSCRIBE/UNSUBSCRIBE filter against every decoded topic name, and
//    with filters and topics derived from each other.
//  - is_valid_utf8 agrees with a reference decoder; the topic validators agree with reference
//    implementations on raw frame bodies.
// After a CONNECT decodes, later frames are also decoded with the CONNECT's protocol version,
// as the broker does. Everything is local to one call: no state survives an iteration.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "mqtt/codec.hpp"
#include "mqtt/packet.hpp"
#include "mqtt/utf8.hpp"
#include "topic/topic.hpp"

namespace {

using namespace brokerha;
using namespace brokerha::mqtt;

#define FUZZ_CHECK(cond)           \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (false)

// ---- Reference implementations -------------------------------------------------------------

bool ref_utf8(std::string_view s, bool allow_nul) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == 0 && !allow_nul) return false;
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    std::uint32_t min;
    if ((c & 0xE0u) == 0xC0u) {
      len = 2, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0u) == 0xE0u) {
      len = 3, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8u) == 0xF0u) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0u) != 0x80u) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::vector<std::string_view> split_levels(std::string_view s) {
  std::vector<std::string_view> levels;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) {
      levels.push_back(s.substr(start));
      return levels;
    }
    levels.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

bool ref_valid_name(std::string_view name) {
  return !name.empty() && name.find('+') == std::string_view::npos &&
         name.find('#') == std::string_view::npos;
}

bool ref_valid_plain_filter(std::string_view filter) {
  if (filter.empty()) return false;
  const auto levels = split_levels(filter);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const std::string_view l = levels[i];
    if (l == "+") continue;
    if (l == "#") {
      if (i + 1 != levels.size()) return false;
      continue;
    }
    if (l.find('+') != std::string_view::npos || l.find('#') != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

constexpr std::string_view kShare = "$share/";

bool ref_is_shared(std::string_view filter) { return filter.substr(0, kShare.size()) == kShare; }

bool ref_valid_filter(std::string_view filter) {
  if (!ref_is_shared(filter)) return ref_valid_plain_filter(filter);
  const std::string_view rest = filter.substr(kShare.size());
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return false;
  const std::string_view group = rest.substr(0, slash);
  if (group.empty() || group.find_first_of("+#") != std::string_view::npos) return false;
  return ref_valid_plain_filter(rest.substr(slash + 1));
}

bool ref_matches(std::string_view filter, std::string_view topic) {
  const auto f = split_levels(filter);
  const auto t = split_levels(topic);
  if (!topic.empty() && topic[0] == '$' && (f[0] == "+" || f[0] == "#")) return false;
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#") return true;
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return f.size() == t.size();
}

// ---- Topic oracles -------------------------------------------------------------------------

// `filter` and `name` are arbitrary strings: the validators must agree with the references,
// and when both are valid (and the filter is not shared) matches() must agree too.
void check_topic_pair(std::string_view filter, std::string_view name) {
  const bool fvalid = topic::is_valid_filter(filter);
  FUZZ_CHECK(fvalid == ref_valid_filter(filter));
  const bool nvalid = topic::is_valid_name(name);
  FUZZ_CHECK(nvalid == ref_valid_name(name));
  FUZZ_CHECK(topic::has_wildcard(filter) == (filter.find_first_of("+#") != std::string_view::npos));
  topic::SharedFilter shared;
  const bool is_shared = topic::parse_shared(filter, shared);
  FUZZ_CHECK(is_shared == ref_is_shared(filter));
  if (fvalid && is_shared) {
    FUZZ_CHECK(!shared.group.empty() &&
               shared.group.find_first_of("/+#") == std::string_view::npos);
    FUZZ_CHECK(ref_valid_plain_filter(shared.filter));
    FUZZ_CHECK(kShare.size() + shared.group.size() + 1 + shared.filter.size() == filter.size());
  }
  if (!fvalid || !nvalid) return;
  const std::string_view plain = is_shared ? shared.filter : filter;
  FUZZ_CHECK(topic::matches(plain, name) == ref_matches(plain, name));
  // A wildcard-free filter equal to the name matches it.
  if (plain == name) FUZZ_CHECK(topic::matches(plain, name));
}

// Filters derived from a valid topic name must match it.
void check_name(std::string_view name) {
  FUZZ_CHECK(topic::is_valid_name(name));
  FUZZ_CHECK(ref_valid_filter(name) || ref_is_shared(name));
  if (!ref_is_shared(name)) {
    FUZZ_CHECK(topic::is_valid_filter(name));
    FUZZ_CHECK(topic::matches(name, name));
  }
  const bool dollar = name[0] == '$';
  FUZZ_CHECK(topic::matches("#", name) == !dollar);
  FUZZ_CHECK(topic::matches("+", name) == (!dollar && name.find('/') == std::string_view::npos));
  const auto levels = split_levels(name);
  // Every level but the first (which may start with '$') replaced by '+'.
  std::string f(levels[0]);
  for (std::size_t i = 1; i < levels.size(); ++i) f += "/+";
  FUZZ_CHECK(topic::is_valid_filter(f) || ref_is_shared(f));
  if (!ref_is_shared(f)) FUZZ_CHECK(topic::matches(f, name));
  // Every prefix of levels followed by '#' (the parent level too: "a/#" matches "a").
  f.clear();
  for (std::size_t i = 0; i < levels.size(); ++i) {
    if (i > 0) f += '/';
    f += levels[i];
    const std::string g = f + "/#";
    if (!ref_is_shared(g)) FUZZ_CHECK(topic::matches(g, name));
  }
  // One more level never matches without a wildcard.
  f = std::string(name) + "/x";
  if (!ref_is_shared(f)) FUZZ_CHECK(!topic::matches(f, name));
}

// A valid filter (maybe shared): topics derived from it must match it.
void check_filter(std::string_view filter) {
  FUZZ_CHECK(topic::is_valid_filter(filter));
  FUZZ_CHECK(ref_valid_filter(filter));
  topic::SharedFilter shared;
  const std::string_view plain = topic::parse_shared(filter, shared) ? shared.filter : filter;
  FUZZ_CHECK(!plain.empty());
  const auto levels = split_levels(plain);
  std::string t;
  std::string parent;  // the topic without the trailing "#" level
  bool has_hash = false;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    if (i > 0) t += '/';
    if (levels[i] == "#") {
      has_hash = true;
      parent = t.empty() ? t : t.substr(0, t.size() - 1);
      t += "h/i";
    } else if (levels[i] == "+") {
      t += "p";
    } else {
      t += levels[i];
    }
  }
  if (!t.empty()) {
    FUZZ_CHECK(topic::is_valid_name(t));
    FUZZ_CHECK(topic::matches(plain, t));
    FUZZ_CHECK(ref_matches(plain, t));
  }
  if (has_hash && levels.size() > 1 && !parent.empty()) FUZZ_CHECK(topic::matches(plain, parent));
}

// ---- Packet equality -----------------------------------------------------------------------

bool eq(const Properties& a, const Properties& b) {
  if (a.user_properties.size() != b.user_properties.size()) return false;
  for (std::size_t i = 0; i < a.user_properties.size(); ++i) {
    if (a.user_properties[i].name != b.user_properties[i].name ||
        a.user_properties[i].value != b.user_properties[i].value) {
      return false;
    }
  }
  return a.payload_format_indicator == b.payload_format_indicator &&
         a.message_expiry_interval == b.message_expiry_interval &&
         a.content_type == b.content_type && a.response_topic == b.response_topic &&
         a.correlation_data == b.correlation_data &&
         a.subscription_identifiers == b.subscription_identifiers &&
         a.session_expiry_interval == b.session_expiry_interval &&
         a.assigned_client_identifier == b.assigned_client_identifier &&
         a.server_keep_alive == b.server_keep_alive &&
         a.authentication_method == b.authentication_method &&
         a.authentication_data == b.authentication_data &&
         a.request_problem_information == b.request_problem_information &&
         a.will_delay_interval == b.will_delay_interval &&
         a.request_response_information == b.request_response_information &&
         a.response_information == b.response_information &&
         a.server_reference == b.server_reference && a.reason_string == b.reason_string &&
         a.receive_maximum == b.receive_maximum && a.topic_alias_maximum == b.topic_alias_maximum &&
         a.topic_alias == b.topic_alias && a.maximum_qos == b.maximum_qos &&
         a.retain_available == b.retain_available &&
         a.maximum_packet_size == b.maximum_packet_size &&
         a.wildcard_subscription_available == b.wildcard_subscription_available &&
         a.subscription_identifier_available == b.subscription_identifier_available &&
         a.shared_subscription_available == b.shared_subscription_available;
}

bool eq(const Connect& a, const Connect& b) {
  if (a.will.has_value() != b.will.has_value()) return false;
  if (a.will) {
    const Will& x = *a.will;
    const Will& y = *b.will;
    if (x.topic != y.topic || x.payload != y.payload || x.qos != y.qos || x.retain != y.retain ||
        !eq(x.properties, y.properties)) {
      return false;
    }
  }
  return a.version == b.version && a.clean_start == b.clean_start && a.keep_alive == b.keep_alive &&
         a.client_id == b.client_id && a.username == b.username && a.password == b.password &&
         eq(a.properties, b.properties);
}
bool eq(const Connack& a, const Connack& b) {
  return a.session_present == b.session_present && a.code == b.code &&
         eq(a.properties, b.properties);
}
bool eq(const Publish& a, const Publish& b) {
  return a.dup == b.dup && a.qos == b.qos && a.retain == b.retain && a.topic == b.topic &&
         a.packet_id == b.packet_id && a.payload == b.payload && eq(a.properties, b.properties);
}
template <PacketType T>
bool eq(const PublishAck<T>& a, const PublishAck<T>& b) {
  return a.packet_id == b.packet_id && a.reason_code == b.reason_code &&
         eq(a.properties, b.properties);
}
bool eq(const Subscribe& a, const Subscribe& b) {
  if (a.packet_id != b.packet_id || !eq(a.properties, b.properties) ||
      a.subscriptions.size() != b.subscriptions.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.subscriptions.size(); ++i) {
    const Subscription& x = a.subscriptions[i];
    const Subscription& y = b.subscriptions[i];
    if (x.filter != y.filter || x.qos != y.qos || x.no_local != y.no_local ||
        x.retain_as_published != y.retain_as_published || x.retain_handling != y.retain_handling) {
      return false;
    }
  }
  return true;
}
bool eq(const Suback& a, const Suback& b) {
  return a.packet_id == b.packet_id && a.reason_codes == b.reason_codes &&
         eq(a.properties, b.properties);
}
bool eq(const Unsubscribe& a, const Unsubscribe& b) {
  return a.packet_id == b.packet_id && a.filters == b.filters && eq(a.properties, b.properties);
}
bool eq(const Unsuback& a, const Unsuback& b) {
  return a.packet_id == b.packet_id && a.reason_codes == b.reason_codes &&
         eq(a.properties, b.properties);
}
bool eq(const Pingreq&, const Pingreq&) { return true; }
bool eq(const Pingresp&, const Pingresp&) { return true; }
bool eq(const Disconnect& a, const Disconnect& b) {
  return a.reason_code == b.reason_code && eq(a.properties, b.properties);
}
bool eq(const Auth& a, const Auth& b) {
  return a.reason_code == b.reason_code && eq(a.properties, b.properties);
}

bool eq(const Packet& a, const Packet& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        return eq(x, std::get<T>(b));
      },
      a);
}

// ---- Per-packet checks ---------------------------------------------------------------------

bool is_empty(const Properties& p) { return eq(p, Properties{}); }

// What the decoder promises about a packet it accepted, independent of the wire bytes.
void check_invariants(const Packet& packet, ProtocolVersion version, std::uint8_t first_byte) {
  FUZZ_CHECK(static_cast<unsigned>(packet_type(packet)) == (first_byte >> 4u));
  FUZZ_CHECK(packet_type_name(packet_type(packet)) != "RESERVED");
  const bool v5 = version == ProtocolVersion::v5;
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Connect>) {
          if (p.version != ProtocolVersion::v5) FUZZ_CHECK(is_empty(p.properties));
          if (p.will) {
            FUZZ_CHECK(p.will->qos <= 2);
            FUZZ_CHECK(topic::is_valid_name(p.will->topic));
            if (p.version != ProtocolVersion::v5) FUZZ_CHECK(is_empty(p.will->properties));
          }
          if (p.version != ProtocolVersion::v5 && p.password) FUZZ_CHECK(p.username.has_value());
          FUZZ_CHECK(is_valid_utf8(p.client_id));
        } else if constexpr (std::is_same_v<T, Publish>) {
          FUZZ_CHECK(p.qos <= 2);
          FUZZ_CHECK((p.packet_id != 0) == (p.qos > 0));
          FUZZ_CHECK(!(p.dup && p.qos == 0));
          if (p.topic.empty()) {
            FUZZ_CHECK(v5 && p.properties.topic_alias.has_value());
          } else {
            FUZZ_CHECK(topic::is_valid_name(p.topic));
          }
          if (p.properties.topic_alias) FUZZ_CHECK(*p.properties.topic_alias != 0);
          for (std::uint32_t id : p.properties.subscription_identifiers) {
            FUZZ_CHECK(id != 0 && id <= kMaxRemainingLength);
          }
          if (p.properties.response_topic) {
            FUZZ_CHECK(topic::is_valid_name(*p.properties.response_topic));
          }
          if (!v5) FUZZ_CHECK(is_empty(p.properties));
        } else if constexpr (std::is_same_v<T, Subscribe>) {
          FUZZ_CHECK(p.packet_id != 0);
          FUZZ_CHECK(!p.subscriptions.empty());
          FUZZ_CHECK(p.properties.subscription_identifiers.size() <= 1);
          for (const Subscription& s : p.subscriptions) {
            FUZZ_CHECK(topic::is_valid_filter(s.filter));
            FUZZ_CHECK(s.qos <= 2 && s.retain_handling <= 2);
            topic::SharedFilter shared;
            if (s.no_local) FUZZ_CHECK(!topic::parse_shared(s.filter, shared));
            if (!v5) FUZZ_CHECK(!s.no_local && !s.retain_as_published && s.retain_handling == 0);
          }
        } else if constexpr (std::is_same_v<T, Unsubscribe>) {
          FUZZ_CHECK(p.packet_id != 0);
          FUZZ_CHECK(!p.filters.empty());
          for (std::string_view f : p.filters) FUZZ_CHECK(topic::is_valid_filter(f));
        } else if constexpr (std::is_same_v<T, Suback>) {
          FUZZ_CHECK(p.packet_id != 0 && !p.reason_codes.empty());
        } else if constexpr (std::is_same_v<T, Unsuback>) {
          FUZZ_CHECK(p.packet_id != 0);
          FUZZ_CHECK(v5 ? !p.reason_codes.empty() : p.reason_codes.empty());
        } else if constexpr (std::is_same_v<T, Connack>) {
          if (p.session_present) FUZZ_CHECK(p.code == 0);
          if (!v5) FUZZ_CHECK(p.code <= 5 && is_empty(p.properties));
          if (version == ProtocolVersion::v31) FUZZ_CHECK(!p.session_present);
        } else if constexpr (std::is_same_v<T, Puback> || std::is_same_v<T, Pubrec> ||
                             std::is_same_v<T, Pubrel> || std::is_same_v<T, Pubcomp>) {
          FUZZ_CHECK(p.packet_id != 0);
          if (!v5) FUZZ_CHECK(p.reason_code == ReasonCode::success && is_empty(p.properties));
        } else if constexpr (std::is_same_v<T, Auth>) {
          FUZZ_CHECK(v5);
        } else if constexpr (std::is_same_v<T, Disconnect>) {
          if (!v5) FUZZ_CHECK(p.reason_code == ReasonCode::success && is_empty(p.properties));
        }
      },
      packet);
}

// Re-encodes a decoded packet and checks the round trip.
void check_round_trip(const Packet& packet, ProtocolVersion version, std::uint8_t first_byte,
                      std::string_view body) {
  std::string e1;
  FUZZ_CHECK(encode(packet, version, e1));
  FUZZ_CHECK(encoded_size(packet, version) == e1.size());
  FUZZ_CHECK(e1.size() >= 2);
  // MQTT 3.1 allowed DUP (flags 1010) on PUBREL, SUBSCRIBE and UNSUBSCRIBE: accepted on input,
  // never written (1010 and 0010 mean the same packet).
  const unsigned type = first_byte >> 4u;
  if (version == ProtocolVersion::v31 && (first_byte & 0x0Fu) == 0x0Au &&
      (type == 6 || type == 8 || type == 10)) {
    first_byte = static_cast<std::uint8_t>(first_byte & ~0x08u);
  }
  FUZZ_CHECK(static_cast<std::uint8_t>(e1[0]) == first_byte);

  // The encoding is exactly one frame.
  std::uint8_t first2 = 0;
  std::string_view body2;
  int frames = 0;
  Framer framer;
  const Status fs = framer.feed(e1, [&](std::uint8_t f, std::string_view b) {
    ++frames;
    first2 = f;
    body2 = b;  // the whole encoding is in one piece: `b` points into e1
    return Status::success();
  });
  FUZZ_CHECK(fs.ok() && frames == 1 && framer.idle());
  FUZZ_CHECK(first2 == first_byte);
  FUZZ_CHECK(body2.data() + body2.size() == e1.data() + e1.size());
  FUZZ_CHECK(body2.size() <= body.size());  // decoding normalises, it never adds bytes
  // The fixed header's remaining length is append_varint's encoding.
  std::string header(1, e1[0]);
  const auto remaining = static_cast<std::uint32_t>(body2.size());
  append_varint(header, remaining);
  FUZZ_CHECK(header.size() == 1 + varint_size(remaining));
  FUZZ_CHECK(header.size() + body2.size() == e1.size());
  FUZZ_CHECK(e1.compare(0, header.size(), header) == 0);

  Packet p2;
  const Status ds = decode(first2, body2, version, p2);
  FUZZ_CHECK(ds.ok());
  FUZZ_CHECK(eq(packet, p2));
  std::string e2;
  FUZZ_CHECK(encode(p2, version, e2));
  FUZZ_CHECK(e1 == e2);

  // Appending encodes after what is already in the buffer.
  std::string e3 = "xy";
  FUZZ_CHECK(encode(p2, version, e3));
  FUZZ_CHECK(std::string_view(e3).substr(2) == e1 && e3.compare(0, 2, "xy") == 0);

  if (const auto* pub = std::get_if<Publish>(&packet); pub && pub->qos > 0) {
    const std::size_t off = publish_packet_id_offset(e1);
    FUZZ_CHECK(off + 2 <= e1.size());
    const auto id = static_cast<std::uint16_t>((static_cast<std::uint8_t>(e1[off]) << 8) |
                                               static_cast<std::uint8_t>(e1[off + 1]));
    FUZZ_CHECK(id == pub->packet_id);
  }
}

// Topic names and filters seen in the stream, for the cross checks at the end. Copies: a
// frame's body is valid only during the Framer's callback.
struct Topics {
  std::vector<std::string> names;
  std::vector<std::string> filters;
};

void collect(const Packet& packet, Topics& topics) {
  auto name = [&](std::string_view n) {
    if (!n.empty() && topics.names.size() < 64) topics.names.emplace_back(n);
  };
  auto filter = [&](std::string_view f) {
    if (topics.filters.size() < 64) topics.filters.emplace_back(f);
  };
  if (const auto* p = std::get_if<Publish>(&packet)) {
    name(p->topic);
    if (p->properties.response_topic) name(*p->properties.response_topic);
  } else if (const auto* c = std::get_if<Connect>(&packet)) {
    if (c->will) {
      name(c->will->topic);
      if (c->will->properties.response_topic) name(*c->will->properties.response_topic);
    }
  } else if (const auto* s = std::get_if<Subscribe>(&packet)) {
    for (const Subscription& sub : s->subscriptions) filter(sub.filter);
  } else if (const auto* u = std::get_if<Unsubscribe>(&packet)) {
    for (std::string_view f : u->filters) filter(f);
  }
}

// Decodes one frame with `version`, checks what was decoded and collects its topics. The
// returned Status is that of decode().
Status decode_and_check(std::uint8_t first_byte, std::string_view body, ProtocolVersion version,
                        Packet& packet, Topics& topics) {
  const Status s = decode(first_byte, body, version, packet);
  if (!s.ok()) {
    FUZZ_CHECK(s.detail != nullptr && s.detail[0] != '\0');
    FUZZ_CHECK(static_cast<std::uint8_t>(s.code) >= 0x80);
    return s;
  }
  FUZZ_CHECK(s.detail != nullptr && s.detail[0] == '\0');
  // A CONNECT carries its own version; encode it with that one.
  const ProtocolVersion v =
      std::holds_alternative<Connect>(packet) ? std::get<Connect>(packet).version : version;
  check_invariants(packet, v, first_byte);
  check_round_trip(packet, v, first_byte, body);
  collect(packet, topics);
  return s;
}

// Hash of a frame sequence, to compare chunked and unchunked framing.
struct FrameLog {
  std::uint64_t hash = 1469598103934665603ULL;
  std::size_t count = 0;
  void add(std::uint8_t first, std::string_view body) {
    auto mix = [&](std::uint8_t b) { hash = (hash ^ b) * 1099511628211ULL; };
    mix(first);
    for (int i = 0; i < 32; i += 8) mix(static_cast<std::uint8_t>(body.size() >> i));
    for (char c : body) mix(static_cast<std::uint8_t>(c));
    ++count;
  }
};

constexpr std::uint32_t kMaxSizes[] = {kMaxPacketSize, 4096, 1024, 128, 16, 2};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t config = data[0];
  const ProtocolVersion version = static_cast<ProtocolVersion>(3 + config % 3);
  const std::size_t chunk = (config / 3u) % 17u;  // 0: the whole stream at once
  const std::uint32_t max_packet_size = kMaxSizes[config / 51u];
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  // UTF-8 validation of the raw stream, both flavours.
  FUZZ_CHECK(is_valid_utf8(stream, false) == ref_utf8(stream, false));
  FUZZ_CHECK(is_valid_utf8(stream, true) == ref_utf8(stream, true));

  // Reference framing: the whole stream in one feed.
  FrameLog whole_log;
  Framer whole(max_packet_size);
  FUZZ_CHECK(whole.max_packet_size() == max_packet_size && whole.idle());
  const Status whole_status = whole.feed(stream, [&](std::uint8_t first, std::string_view body) {
    FUZZ_CHECK(static_cast<std::uint64_t>(body.size()) + 2 <= max_packet_size);
    whole_log.add(first, body);
    return Status::success();
  });

  // The stream in chunks, decoding every frame.
  FrameLog log;
  Topics topics;
  ProtocolVersion session_version = version;  // set by a CONNECT, as the broker does
  Framer framer;
  framer.set_max_packet_size(max_packet_size);
  Packet reused;  // reused for every frame, as a connection may
  auto on_packet = [&](std::uint8_t first, std::string_view body) {
    log.add(first, body);
    FUZZ_CHECK(is_valid_utf8(body, false) == ref_utf8(body, false));
    FUZZ_CHECK(is_valid_utf8(body, true) == ref_utf8(body, true));
    if (body.size() <= 512) {
      // Raw topic checks: the body split at its first NUL into a filter and a name.
      const std::size_t nul = body.find('\0');
      if (nul != std::string_view::npos) {
        check_topic_pair(body.substr(0, nul), body.substr(nul + 1));
      } else {
        check_topic_pair(body, body);
      }
    }

    Packet packet;
    const Status s = decode_and_check(first, body, version, packet, topics);
    // Decoding into a Packet that holds an earlier frame's packet gives the same result.
    {
      const Status s2 = decode(first, body, version, reused);
      FUZZ_CHECK(s2.code == s.code && s2.detail == s.detail);
      if (s.ok()) FUZZ_CHECK(eq(packet, reused));
    }
    if (first >> 4u == static_cast<unsigned>(PacketType::connect)) {
      if (s.ok()) session_version = std::get<Connect>(packet).version;
      // Once the protocol level is read, a failed CONNECT still reports its version.
      if (first == 0x10 && body.size() >= 2) {
        const std::size_t name_len =
            (static_cast<std::size_t>(static_cast<std::uint8_t>(body[0])) << 8) |
            static_cast<std::uint8_t>(body[1]);
        if (body.size() >= 3 + name_len) {
          const std::string_view name = body.substr(2, name_len);
          const auto level = static_cast<std::uint8_t>(body[2 + name_len]);
          const ProtocolVersion got = std::get<Connect>(packet).version;
          if (name == "MQTT" && (level == 4 || level == 5)) {
            FUZZ_CHECK(got == static_cast<ProtocolVersion>(level));
          } else if (name == "MQIsdp" && level == 3) {
            FUZZ_CHECK(got == ProtocolVersion::v31);
          } else {
            FUZZ_CHECK(!s.ok());
          }
        } else {
          FUZZ_CHECK(!s.ok());
        }
      }
    } else if (session_version != version) {
      Packet again;
      decode_and_check(first, body, session_version, again, topics);
    }
    // Keep framing after decode errors: more frames per input, and framing must not depend
    // on what the callback does with a packet.
    return Status::success();
  };
  Status status;
  if (chunk == 0) {
    status = framer.feed(stream, on_packet);
  } else {
    for (std::size_t pos = 0; pos < stream.size() && status.ok(); pos += chunk) {
      status = framer.feed(stream.substr(pos, chunk), on_packet);
    }
  }
  FUZZ_CHECK(status.code == whole_status.code);
  FUZZ_CHECK(log.count == whole_log.count && log.hash == whole_log.hash);
  if (status.ok()) {
    FUZZ_CHECK(framer.buffered() == whole.buffered());
    FUZZ_CHECK(framer.idle() == (framer.buffered() == 0));
    framer.shrink();
    FUZZ_CHECK(framer.buffered() == whole.buffered());
  } else {
    FUZZ_CHECK(status.detail != nullptr && status.detail[0] != '\0');
  }

  // Topic cross checks over everything decoded.
  for (const std::string& n : topics.names) check_name(n);
  for (const std::string& f : topics.filters) check_filter(f);
  for (const std::string& f : topics.filters) {
    for (const std::string& n : topics.names) check_topic_pair(f, n);
  }
  return 0;
}
