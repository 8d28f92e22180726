// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster's messages between nodes: the bodies of the data-plane frames (link.hpp carries
// them, reliably and in order, tagged with a kind). docs/cluster-protocol.md describes the
// formats byte by byte.
//
// Integers are little-endian fixed width; strings and byte blocks are a varint length then
// the bytes. Every decoder takes untrusted bytes and returns false on anything malformed
// (truncation, lengths past the end, trailing bytes, invalid enum values): the caller drops
// the frame and counts it, never crashes. Decoded views point into the frame body.
//
// Sans-I/O: no Asio, no threads.

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message/message.hpp"
#include "retained/store.hpp"

namespace brokerha::cluster {

/// Frame kinds (LinkManager kinds 1..255).
enum class Kind : std::uint8_t {
  publish = 1,           // one message to route locally (never forwarded again)
  routes_full = 2,       // the sender's complete set of filters; answered with routes_ack
  routes_delta = 3,      // filters added/removed, numbered; answered with routes_ack
  routes_ack = 4,        // the receiver applied deltas up to this number
  snapshot_request = 5,  // "send me your retained set" (a joining node asks one peer)
  retained_entries = 6,  // retained entries (snapshot or repair), tombstones included
  snapshot_end = 7,      // the snapshot is complete
  digest = 8,            // per-bucket hashes of the retained set (anti-entropy)
  bucket_request = 9,    // "send me your entries of these buckets"
  // Cluster-wide client ids (cluster/claims.hpp).
  claim_request = 10,   // "stamp my claim on this client id" (to the id's arbiter)
  claim_grant = 11,     // the arbiter's stamp (an HLC reading)
  take_request = 12,    // "give up this client id (and hand me its session when resuming)"
  take_reply = 13,      // what the receiver did, with the session's bytes when it moved
  claims_held = 14,     // the client ids this node holds sessions for (sent on link up)
  publish_shared = 16,  // a message plus the "$share/g/f" groups the receiver serves
  // Version 2 of the cluster protocol (capabilities tells which version a peer speaks; frames
  // of a later version are sent only to peers that speak it).
  capabilities = 20,     // the protocol versions the sender speaks: sent first on every link up
  routes_part = 21,      // a part of the full route set (a set too large for one frame)
  session_part = 22,     // a slice of a moved session's bytes (before its take_reply)
  take_ack = 23,         // the claimant installed (or refused) a session moved to it
  session_handoff = 24,  // a draining node hands a session (its session_parts) to its next owner
  // Version 3.
  trail_end = 25,  // what reached a moved session's old node after it left (its session_parts)
};

/// The cluster protocol versions this build speaks. Version 1 is what 0.1.0 spoke: a peer
/// that never sends `capabilities` speaks it. Each side uses the highest version both speak;
/// a kind or a field introduced in version N goes only to peers at N or above.
inline constexpr std::uint8_t kClusterProtocolMin = 1;
inline constexpr std::uint8_t kClusterProtocolMax = 3;

struct Capabilities {
  std::uint8_t min = 1;
  std::uint8_t max = 1;
};
/// capabilities: {min, max}; a receiver ignores bytes after them (later versions may add
/// fields), and a range with min > max or min 0 is malformed.
std::string encode_capabilities(const Capabilities& c);
bool decode_capabilities(std::string_view body, Capabilities& out);
/// The version two nodes use: the highest both speak, or 0 when the ranges do not meet.
std::uint8_t common_version(const Capabilities& mine, const Capabilities& theirs) noexcept;

/// A message on the wire: what a node needs to route it as if published locally.
struct WireMessage {
  std::string_view topic;
  std::string_view payload;
  std::uint8_t qos = 0;
  bool retain = false;
  std::string_view origin;              // publisher's client id (no-local)
  std::optional<std::uint32_t> expiry;  // remaining seconds
  std::optional<hlc::Version> version;  // retained messages: the write's version
  std::int64_t created_ms = 0;          // unix ms
  // MQTT 5.0 properties forwarded with the message.
  std::optional<std::uint8_t> payload_format;
  std::optional<std::string_view> content_type;
  std::optional<std::string_view> response_topic;
  std::optional<std::string_view> correlation_data;
  std::vector<std::pair<std::string_view, std::string_view>> user_properties;
};

/// Encodes `m` (with its remaining expiry at `now`, and `version` for a retained write).
std::string encode_message(const message::Message& m, const hlc::Version* version,
                           message::Message::Clock::time_point now);
bool decode_message(std::string_view body, WireMessage& out);
/// A Message built from a decoded one (expiry counted from `now`).
std::shared_ptr<message::Message> to_message(const WireMessage& w,
                                             message::Message::Clock::time_point now);

/// publish_shared: the shared groups ("$share/g/f", at least one) the receiver delivers the
/// message to (one local member each), then a message body as encode_message() made it (the
/// same bytes a publish frame carries, so they are encoded once per message).
std::string encode_publish_shared(const std::vector<std::string_view>& shares,
                                  std::string_view message_body);
/// Fills `shares` (views into `body`) and `out`; false when malformed (no group, an empty
/// one, a bad message, trailing bytes).
bool decode_publish_shared(std::string_view body, std::vector<std::string_view>& shares,
                           WireMessage& out);

/// Routes: the complete set (routes_full) or numbered changes (routes_delta).
struct RouteChange {
  bool add = true;
  std::string filter;
};
/// routes_full carries the number of the last delta it includes, acknowledged like a delta.
std::string encode_routes_full(std::uint64_t number, const std::vector<std::string>& filters);
bool decode_routes_full(std::string_view body, std::uint64_t& number,
                        std::vector<std::string>& filters);
std::string encode_routes_delta(std::uint64_t number, const std::vector<RouteChange>& changes);
bool decode_routes_delta(std::string_view body, std::uint64_t& number,
                         std::vector<RouteChange>& changes);
/// routes_part (version 2): `u8 last`, then a routes_full body. The parts of one set arrive in
/// order; the receiver applies their union as a routes_full when the last one arrives.
std::string encode_routes_part(std::uint64_t number, bool last,
                               const std::vector<std::string>& filters);
bool decode_routes_part(std::string_view body, std::uint64_t& number, bool& last,
                        std::vector<std::string>& filters);
std::string encode_u64(std::uint64_t v);  // routes_ack, snapshot_request, snapshot_end
bool decode_u64(std::string_view body, std::uint64_t& v);

/// Retained entries: each a topic, a version and the message (none = tombstone).
struct WireRetained {
  std::string_view topic;
  hlc::Version version;
  std::optional<WireMessage> message;
};
/// Appends one entry to a retained_entries body under construction (count patched by
/// finish_retained()).
void begin_retained(std::string& body);
void append_retained(std::string& body, const std::string& topic, const retained::Store::Entry& e,
                     message::Message::Clock::time_point now);
void finish_retained(std::string& body, std::uint32_t count);
bool decode_retained(std::string_view body, std::vector<WireRetained>& out);

/// Anti-entropy digest: kDigestBuckets hashes, one per bucket of topics.
inline constexpr std::size_t kDigestBuckets = 256;
using Digest = std::array<std::uint64_t, kDigestBuckets>;
std::size_t bucket_of(std::string_view topic) noexcept;
/// The hash an entry contributes to its bucket (topic, version, live or tombstone).
std::uint64_t entry_hash(std::string_view topic, const hlc::Version& v, bool tombstone) noexcept;
std::string encode_digest(const Digest& d);
bool decode_digest(std::string_view body, Digest& d);
std::string encode_buckets(const std::vector<std::uint16_t>& buckets);
bool decode_buckets(std::string_view body, std::vector<std::uint16_t>& buckets);

// ---- cluster-wide client ids (claims) ----

/// A claim's version: the arbiter's HLC reading and the claiming node (ties broken by name).
using ClaimVersion = hlc::Version;

struct ClaimRequest {
  std::uint64_t request = 0;
  std::string_view client_id;
};
std::string encode_claim_request(std::uint64_t request, std::string_view client_id);
bool decode_claim_request(std::string_view body, ClaimRequest& out);
/// claim_grant: {request, hlc}.
std::string encode_claim_grant(std::uint64_t request, std::uint64_t hlc);
bool decode_claim_grant(std::string_view body, std::uint64_t& request, std::uint64_t& hlc);

struct TakeRequest {
  std::uint64_t request = 0;
  std::string_view client_id;
  ClaimVersion version;
  bool resume = false;  // clean start 0: move the session, else discard it
};
std::string encode_take_request(const TakeRequest& t);
bool decode_take_request(std::string_view body, TakeRequest& out);

enum class TakeOutcome : std::uint8_t {
  none = 0,        // no session for the id here
  moved = 1,       // the session is in the reply and gone from here
  discarded = 2,   // the session was ended here (clean start)
  newer_here = 3,  // this node holds or is making a newer claim: the requester lost
  // Version 2: moved, the bytes in the session_part frames of this request sent before the
  // reply; the sender keeps a copy until take_ack.
  moved_in_parts = 4,
};
struct TakeReply {
  std::uint64_t request = 0;
  std::string_view client_id;
  ClaimVersion version;  // the claim being answered
  TakeOutcome outcome = TakeOutcome::none;
  std::string_view session;  // moved: session::export_session() bytes
};
std::string encode_take_reply(const TakeReply& t);
bool decode_take_reply(std::string_view body, TakeReply& out);

/// session_part (version 2): `u64 request`, `str slice`.
std::string encode_session_part(std::uint64_t request, std::string_view slice);
bool decode_session_part(std::string_view body, std::uint64_t& request, std::string_view& slice);

/// take_ack (version 2): `u64 request`, `str client_id`, `u8 ok`: the claimant installed the
/// session moved for `request` (ok 1: the sender forgets its copy) or could not (ok 0: the
/// sender keeps it as an offline session).
struct TakeAck {
  std::uint64_t request = 0;
  std::string_view client_id;
  bool ok = false;
};
std::string encode_take_ack(const TakeAck& a);
bool decode_take_ack(std::string_view body, TakeAck& out);

/// trail_end (version 3): `u64 request`, `str client_id`: the messages the old node of a
/// session moved for `request` received for it after the move (the session_part frames of
/// `request` sent just before, an exported session holding them; none when empty). With
/// version 3 the claimant sends take_ack only once its routes for the session are
/// acknowledged by every peer, and answers CONNACK only after trail_end (or a bound).
std::string encode_trail_end(std::uint64_t request, std::string_view client_id);
bool decode_trail_end(std::string_view body, std::uint64_t& request, std::string_view& client_id);

/// session_handoff (version 2): `u64 request`, `str client_id`, *version* (the claim the
/// session is held under). The session's bytes are the session_part frames of `request`
/// sent just before; answered with take_ack.
struct HandOffFrame {
  std::uint64_t request = 0;
  std::string_view client_id;
  ClaimVersion version;
};
std::string encode_session_handoff(const HandOffFrame& h);
bool decode_session_handoff(std::string_view body, HandOffFrame& out);

struct HeldClaim {
  std::string client_id;
  ClaimVersion version;
};
std::string encode_claims_held(const std::vector<HeldClaim>& claims);
bool decode_claims_held(std::string_view body, std::vector<HeldClaim>& out);

}  // namespace brokerha::cluster
