// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the bodies of the cluster's frames (cluster/protocol.hpp) and the
// session export format a moved session travels in (session/export.hpp): what a peer sends
// after the link handshake, decoded by every node.
//
// Input: one selector byte, then the body. selector % 23 picks the decoder; the body is
// handed to it as a peer's frame would be.
//
// Oracles (a violation calls __builtin_trap()):
//  - a body that decodes re-encodes (with the frame's own encoder) to bytes that decode to
//    the same values, and that re-encoding is a fixed point (encoding it again after decoding
//    gives the same bytes);
//  - a session export that imports exports again, imports again, and the second export is
//    byte-identical to the first;
//  - every decoder survives any input (ASan and UBSan watch).
// Everything is local to one call.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/protocol.hpp"
#include "session/export.hpp"

namespace {

using namespace brokerha;
using namespace brokerha::cluster;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool same(const hlc::Version& a, const hlc::Version& b) {
  return a.hlc == b.hlc && a.node == b.node;
}

// decode(body) -> value; encode(value) -> bytes; decode(bytes) must give an equal value, and
// encode(decode(bytes)) == bytes.
template <class T, class Decode, class Encode, class Equal>
void round_trip(std::string_view body, Decode decode, Encode encode, Equal equal) {
  T first{};
  if (!decode(body, first)) return;
  const std::string bytes = encode(first);
  T second{};
  check(decode(bytes, second));
  check(equal(first, second));
  check(encode(second) == bytes);
}

void session_export(std::string_view body) {
  const auto now = std::chrono::steady_clock::now();
  std::string error;
  auto first = session::import_session(body, now, error);
  if (!first) return;
  const std::string a = session::export_session(*first->session, first->meta, now);
  auto second = session::import_session(a, now, error);
  check(second.has_value());
  check(session::export_session(*second->session, second->meta, now) == a);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned selector = data[0] % 23u;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (selector) {
    case 0:
      round_trip<Capabilities>(
          body, [](std::string_view b, Capabilities& c) { return decode_capabilities(b, c); },
          [](const Capabilities& c) { return encode_capabilities(c); },
          [](const Capabilities& a, const Capabilities& b) {
            return a.min == b.min && a.max == b.max;
          });
      break;
    case 1: {
      WireMessage w;
      if (decode_message(body, w)) check(w.qos <= 2);
      break;
    }
    case 2: {
      std::vector<std::string_view> shares;
      WireMessage w;
      if (decode_publish_shared(body, shares, w)) check(!shares.empty());
      break;
    }
    case 3: {
      struct Full {
        std::uint64_t number = 0;
        std::vector<std::string> filters;
      };
      round_trip<Full>(
          body,
          [](std::string_view b, Full& f) { return decode_routes_full(b, f.number, f.filters); },
          [](const Full& f) { return encode_routes_full(f.number, f.filters); },
          [](const Full& a, const Full& b) {
            return a.number == b.number && a.filters == b.filters;
          });
      break;
    }
    case 4: {
      struct Delta {
        std::uint64_t number = 0;
        std::vector<RouteChange> changes;
      };
      round_trip<Delta>(
          body,
          [](std::string_view b, Delta& d) { return decode_routes_delta(b, d.number, d.changes); },
          [](const Delta& d) { return encode_routes_delta(d.number, d.changes); },
          [](const Delta& a, const Delta& b) {
            if (a.number != b.number || a.changes.size() != b.changes.size()) return false;
            for (std::size_t i = 0; i < a.changes.size(); ++i) {
              if (a.changes[i].add != b.changes[i].add ||
                  a.changes[i].filter != b.changes[i].filter) {
                return false;
              }
            }
            return true;
          });
      break;
    }
    case 5: {
      struct Part {
        std::uint64_t number = 0;
        bool last = false;
        std::vector<std::string> filters;
      };
      round_trip<Part>(
          body,
          [](std::string_view b, Part& p) {
            return decode_routes_part(b, p.number, p.last, p.filters);
          },
          [](const Part& p) { return encode_routes_part(p.number, p.last, p.filters); },
          [](const Part& a, const Part& b) {
            return a.number == b.number && a.last == b.last && a.filters == b.filters;
          });
      break;
    }
    case 6:
      round_trip<std::uint64_t>(
          body, [](std::string_view b, std::uint64_t& v) { return decode_u64(b, v); },
          [](std::uint64_t v) { return encode_u64(v); },
          [](std::uint64_t a, std::uint64_t b) { return a == b; });
      break;
    case 7: {
      std::vector<WireRetained> entries;
      if (decode_retained(body, entries)) {
        for (const WireRetained& e : entries) check(!e.message || e.message->qos <= 2);
      }
      break;
    }
    case 8:
      round_trip<Digest>(
          body, [](std::string_view b, Digest& d) { return decode_digest(b, d); },
          [](const Digest& d) { return encode_digest(d); },
          [](const Digest& a, const Digest& b) { return a == b; });
      break;
    case 9:
      round_trip<std::vector<std::uint16_t>>(
          body,
          [](std::string_view b, std::vector<std::uint16_t>& v) { return decode_buckets(b, v); },
          [](const std::vector<std::uint16_t>& v) { return encode_buckets(v); },
          [](const std::vector<std::uint16_t>& a, const std::vector<std::uint16_t>& b) {
            return a == b;
          });
      break;
    case 10:
      round_trip<ClaimRequest>(
          body, [](std::string_view b, ClaimRequest& r) { return decode_claim_request(b, r); },
          [](const ClaimRequest& r) { return encode_claim_request(r.request, r.client_id); },
          [](const ClaimRequest& a, const ClaimRequest& b) {
            return a.request == b.request && a.client_id == b.client_id;
          });
      break;
    case 11: {
      struct Grant {
        std::uint64_t request = 0, hlc = 0;
      };
      round_trip<Grant>(
          body,
          [](std::string_view b, Grant& g) { return decode_claim_grant(b, g.request, g.hlc); },
          [](const Grant& g) { return encode_claim_grant(g.request, g.hlc); },
          [](const Grant& a, const Grant& b) { return a.request == b.request && a.hlc == b.hlc; });
      break;
    }
    case 12:
      round_trip<TakeRequest>(
          body, [](std::string_view b, TakeRequest& t) { return decode_take_request(b, t); },
          [](const TakeRequest& t) { return encode_take_request(t); },
          [](const TakeRequest& a, const TakeRequest& b) {
            return a.request == b.request && a.client_id == b.client_id &&
                   same(a.version, b.version) && a.resume == b.resume;
          });
      break;
    case 13:
      round_trip<TakeReply>(
          body, [](std::string_view b, TakeReply& t) { return decode_take_reply(b, t); },
          [](const TakeReply& t) { return encode_take_reply(t); },
          [](const TakeReply& a, const TakeReply& b) {
            return a.request == b.request && a.client_id == b.client_id &&
                   same(a.version, b.version) && a.outcome == b.outcome && a.session == b.session;
          });
      break;
    case 14:
      round_trip<std::vector<HeldClaim>>(
          body,
          [](std::string_view b, std::vector<HeldClaim>& v) { return decode_claims_held(b, v); },
          [](const std::vector<HeldClaim>& v) { return encode_claims_held(v); },
          [](const std::vector<HeldClaim>& a, const std::vector<HeldClaim>& b) {
            if (a.size() != b.size()) return false;
            for (std::size_t i = 0; i < a.size(); ++i) {
              if (a[i].client_id != b[i].client_id || !same(a[i].version, b[i].version)) {
                return false;
              }
            }
            return true;
          });
      break;
    case 15: {
      struct Part {
        std::uint64_t request = 0;
        std::string_view slice;
      };
      round_trip<Part>(
          body,
          [](std::string_view b, Part& p) { return decode_session_part(b, p.request, p.slice); },
          [](const Part& p) { return encode_session_part(p.request, p.slice); },
          [](const Part& a, const Part& b) {
            return a.request == b.request && a.slice == b.slice;
          });
      break;
    }
    case 16:
      round_trip<TakeAck>(
          body, [](std::string_view b, TakeAck& a) { return decode_take_ack(b, a); },
          [](const TakeAck& a) { return encode_take_ack(a); },
          [](const TakeAck& a, const TakeAck& b) {
            return a.request == b.request && a.client_id == b.client_id && a.ok == b.ok;
          });
      break;
    case 17:
      round_trip<HandOffFrame>(
          body, [](std::string_view b, HandOffFrame& h) { return decode_session_handoff(b, h); },
          [](const HandOffFrame& h) { return encode_session_handoff(h); },
          [](const HandOffFrame& a, const HandOffFrame& b) {
            return a.request == b.request && a.client_id == b.client_id &&
                   same(a.version, b.version);
          });
      break;
    case 22: {
      struct Trail {
        std::uint64_t request = 0;
        std::string_view client_id;
      };
      round_trip<Trail>(
          body,
          [](std::string_view b, Trail& t) { return decode_trail_end(b, t.request, t.client_id); },
          [](const Trail& t) { return encode_trail_end(t.request, t.client_id); },
          [](const Trail& a, const Trail& b) {
            return a.request == b.request && a.client_id == b.client_id;
          });
      break;
    }
    default:  // 18..21
      session_export(body);
      break;
  }
  return 0;
}
