// SPDX-License-Identifier: Apache-2.0
#pragma once
// Hooks an embedding program implements to decide authentication and access control, and to
// observe what the broker does.
//
// Chaining: hooks run in registration order; the first decision that is not `defer` wins;
// the built-in config rules run last; when every hook defers, the default applies (allow, or
// the configured `acl_default`). An embedder's hook can therefore always veto.
//
// Threads: every hook method runs on the I/O thread of the client concerned, and must not
// block. `done` callbacks may be called exactly once, from any thread, inline or later; the
// broker resumes the client on its own thread. Requests are valid only during the call:
// copy what you need for later.

#include <brokerha/error.hpp>
#include <brokerha/export.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace brokerha {

/// A hook's answer.
enum class Decision { allow, deny, defer };

/// What a client presented in CONNECT.
struct AuthRequest {
  std::string_view client_id;
  std::optional<std::string_view> username;
  std::optional<std::string_view> password;  // binary data
  std::string_view remote_address;           // peer IP address, textual
  std::uint16_t remote_port = 0;
  int protocol_version = 4;  // 3, 4 or 5
};

/// Decides whether a client may connect.
class AuthHook {
 public:
  virtual ~AuthHook() = default;
  /// Runs on the client's I/O thread; must not block. Call `done` exactly once.
  virtual void authenticate(const AuthRequest& request, std::function<void(Decision)> done) = 0;
};

/// The access an ACL check asks for.
enum class Access { read = 1, write = 2 };

/// A topic access by a connected client.
struct AclRequest {
  std::string_view client_id;
  std::optional<std::string_view> username;
  std::string_view remote_address;
  std::string_view topic;  // a topic name, or a topic filter when `is_filter` (SUBSCRIBE)
  Access access = Access::read;
  bool is_filter = false;
};

/// Decides what a client may publish, subscribe to and receive.
class AclHook {
 public:
  virtual ~AclHook() = default;
  /// PUBLISH (write) and SUBSCRIBE (read, `is_filter`) checks. Runs on the client's I/O
  /// thread; must not block; call `done` exactly once, inline or later.
  virtual void check(const AclRequest& request, std::function<void(Decision)> done) = 0;
  /// The read check on every delivery of a message to a client: synchronous, on the
  /// receiving client's I/O thread, on the hot path. Must be fast and must not block.
  virtual Decision check_delivery(const AclRequest& request) noexcept = 0;
};

/// A client connecting or disconnecting.
struct ClientEvent {
  std::string_view client_id;
  std::optional<std::string_view> username;
  std::string_view remote_address;
  int protocol_version = 4;
  bool session_present = false;             // on_connect: an existing session was resumed
  ReasonCode reason = ReasonCode::success;  // on_disconnect: why (success = client's DISCONNECT)
};

/// A subscription added or removed.
struct SubscriptionEvent {
  std::string_view client_id;
  std::string_view filter;  // as subscribed, "$share/..." included
  int qos = 0;              // on_subscribe: the granted QoS
};

/// A message: accepted from a publisher (after the ACL check), or delivered to a subscriber
/// (queued on its connection).
struct MessageEvent {
  std::string_view client_id;  // the publisher, or the receiving client
  std::string_view topic;
  std::string_view payload;
  int qos = 0;
  bool retain = false;
};

/// Observes what the broker does. Every method runs on the I/O thread of the client
/// concerned, on the message path: it must be quick and must not block (hand work off to
/// another thread). Views are valid only during the call.
class EventHook {
 public:
  virtual ~EventHook() = default;
  virtual void on_connect(const ClientEvent&) {}
  virtual void on_disconnect(const ClientEvent&) {}
  virtual void on_subscribe(const SubscriptionEvent&) {}
  virtual void on_unsubscribe(const SubscriptionEvent&) {}
  virtual void on_publish(const MessageEvent&) {}
  virtual void on_deliver(const MessageEvent&) {}
};

}  // namespace brokerha
