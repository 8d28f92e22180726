// SPDX-License-Identifier: Apache-2.0
#pragma once
// A session as the broker keeps it (ClientSession: the session state plus its owner's
// bookkeeping and the client attached to it) and a shard's table of them by client id.
//
// Thread: a session belongs to one shard, chosen by its client id (its home shard); only that
// shard's thread touches it, its table and its attachment. Other threads hold a
// ClientSessionPtr only to hand a delivery to that shard.

#include <brokerha/error.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "message/message.hpp"
#include "mqtt/packet.hpp"
#include "session/session.hpp"

namespace brokerha::session {

using Clock = std::chrono::steady_clock;

/// A will waiting to be published (MQTT 5.0 will delay, or until the session ends).
struct PendingWill {
  MessagePtr message;
  Clock::time_point due;
};

/// The client connected to a session, as the router and the registry see it (the MQTT
/// protocol of that client's connection implements it). Called on the session's shard only.
class Attachment {
 public:
  /// Deliveries were queued on the session: send what the client's window allows now.
  virtual void pump() = 0;
  /// Another connection takes the session over, an operator disconnects the client, or the
  /// broker stops: the client is told (v5 DISCONNECT with `reason`) and the connection closes.
  virtual void kick(ReasonCode reason) = 0;
  /// The client's address (after a PROXY header: the one it names), for rules and the API.
  virtual const std::string& remote_address() const noexcept = 0;
  virtual std::uint16_t remote_port() const noexcept = 0;

 protected:
  ~Attachment() = default;
};

/// Where the client of an offline session was connected from: the read check of what is
/// queued for it meanwhile sees the address it had (address rules keep applying).
struct LastPeer {
  std::string address;
  std::uint16_t port = 0;
};

/// A session as the broker keeps it: the pure session state plus who is connected to it.
/// Owned by its shard (shared_ptr so deliveries in flight between shards keep it alive).
struct ClientSession {
  explicit ClientSession(std::string id, unsigned shard_index)
      : state(std::move(id)), shard(shard_index) {}

  // (Ordered largest first: one of these exists per session, idle memory counts.)
  Session state;
  Attachment* attached = nullptr;  // the client connected to it (same shard), or null
  std::optional<std::string> username;
  std::optional<Clock::time_point> expires_at;  // set while offline
  std::unique_ptr<PendingWill> will;            // a delayed will waiting for its time
  std::unique_ptr<LastPeer> last_peer;          // set while offline
  const unsigned shard;
  std::uint32_t expiry_interval = 0;  // seconds after disconnect (v5; v3: 0 or inf)
  mqtt::ProtocolVersion version = mqtt::ProtocolVersion::v311;
  bool clean = true;
  bool removed = false;  // discarded: no longer registered
  /// A moved session's trail on its old node (SessionRegistry): its subscriptions stay in
  /// the local tree but no longer count for the routes this node announces. Written and
  /// read under the route table's lock.
  bool uncounted = false;
};
using ClientSessionPtr = std::shared_ptr<ClientSession>;

/// The sessions of a shard by client id: open addressing with linear probing over one array
/// of pointers. The key is the session's own client id (never changed while registered), so
/// an entry costs 16 bytes over a load of at most 3/4 (~21 bytes a session) where an
/// unordered_map node with its bucket costs 72 and a second copy of the id: it counts in the
/// memory of an idle connection. Deletion shifts entries back (no tombstones).
///
/// Thread safety: none; the shard's thread.
class SessionTable {
 public:
  /// The session registered for `id`, or null.
  const ClientSessionPtr* find(std::string_view id) const noexcept;
  ClientSessionPtr* find(std::string_view id) noexcept {
    return const_cast<ClientSessionPtr*>(std::as_const(*this).find(id));
  }
  bool contains(std::string_view id) const noexcept { return find(id) != nullptr; }
  /// Registers `s`; its client id must not be registered yet.
  void insert(ClientSessionPtr s);
  /// Removes `s` if it is the session registered for its client id.
  bool erase(const ClientSession* s) noexcept;
  std::size_t size() const noexcept { return size_; }
  template <typename F>
  void for_each(F&& f) const {
    for (const ClientSessionPtr& s : slots_) {
      if (s) f(s);
    }
  }

 private:
  std::size_t home(std::string_view id) const noexcept {
    return std::hash<std::string_view>{}(id) & (slots_.size() - 1);
  }
  void grow();

  std::vector<ClientSessionPtr> slots_;  // size 0 or a power of two
  std::size_t size_ = 0;
};

}  // namespace brokerha::session
