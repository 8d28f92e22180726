// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha::Membership: SWIM gossip with Lifeguard, wire-compatible with hashicorp/memberlist.
// One UDP socket and one TCP listener on the same port, driven by its own thread.
//
//   brokerha::MembershipOptions o;
//   o.name = "node-1";
//   o.bind_address = "127.0.0.1";
//   o.port = 0;                              // a free port (UDP and TCP share it)
//   brokerha::Membership m(o);
//   m.set_event_callback([](const brokerha::MemberEvent& e) { ... });  // before start()
//   m.start();                               // binds synchronously; throws std::system_error
//   m.join({"127.0.0.1:7946"});
//   auto view = m.members();
//   m.leave(std::chrono::seconds(5));        // graceful: peers record "left"
//   m.stop();                                // without leave(): peers detect a failure
//
// Thread safety: every member function may be called from any thread. join(), leave(),
// send() and send_reliable() wait for the membership thread and return errc::invalid_argument when
// called from inside a callback (which runs on that thread); members(), local_health(),
// bound_port() and stop() never wait for the protocol. Callbacks must be set before start();
// whatever they use must outlive the Membership or its stop() (which joins the thread that runs
// them).

#include <brokerha/error.hpp>
#include <brokerha/export.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace brokerha {

namespace detail {
struct MembershipAccess;  // the library's own access (the data plane's stream hand-over)
}  // namespace detail

/// The gossip protocol's own settings: who this node is and memberlist's knobs, with
/// broker-ha's effective defaults (memberlist's DefaultLocalConfig as broker-ha changes it).
/// MembershipOptions adds where it listens and how its packets are framed.
struct MembershipProtocolOptions {
  std::string name;  // unique node name (required)
  std::string meta;  // node metadata (at most 512 bytes)

  std::chrono::milliseconds tcp_timeout{1000};
  std::chrono::milliseconds push_pull_interval{15000};
  std::chrono::milliseconds probe_interval{500};
  std::chrono::milliseconds probe_timeout{200};
  std::chrono::milliseconds gossip_interval{100};
  std::chrono::milliseconds gossip_to_the_dead_time{15000};
  std::chrono::milliseconds dead_node_reclaim_time{0};
  int indirect_checks = 1;
  int retransmit_mult = 2;
  int suspicion_mult = 3;
  int suspicion_max_timeout_mult = 6;
  int awareness_max_multiplier = 8;
  int gossip_nodes = 3;
  std::size_t udp_buffer_size = 1400;
  bool disable_tcp_pings = false;

  // The delegate version triple (serf uses 2/5/5).
  std::uint8_t delegate_protocol_min = 0;
  std::uint8_t delegate_protocol_max = 0;
  std::uint8_t delegate_protocol_version = 0;
};

/// Membership settings: the protocol's (above), where to listen and advertise, and the
/// packet framing (key, label, compression). The knobs are broker-ha's `cluster.config.*`.
struct MembershipOptions : MembershipProtocolOptions {
  std::string bind_address = "0.0.0.0";  // numeric IPv4 address
  std::uint16_t port = 7946;             // UDP and TCP; 0 = a free port
  std::string advertise_address;         // empty: bind_address (required when that is 0.0.0.0)
  std::uint16_t advertise_port = 0;      // 0: the bound port
  std::string secret_key;                // raw bytes, 16/24/32; empty: no encryption
  /// More keys (rotation): every key decrypts; secret_key, when set, comes first and
  /// encrypts, else secret_keys[0] does (memberlist's keyring). See keyring().
  std::vector<std::string> secret_keys;
  std::string label;  // memberlist's Label; empty: none
  bool enable_compression = true;
  bool skip_inbound_label_check = false;
  bool gossip_verify_incoming = true;  // false: accept plaintext too while migrating to a key

  std::size_t max_concurrent_streams = 128;  // TCP streams in each direction

  /// secret_key (when set) then secret_keys, without repeats: the first encrypts.
  std::vector<std::string> keyring() const {
    std::vector<std::string> out;
    if (!secret_key.empty()) out.push_back(secret_key);
    for (const std::string& k : secret_keys) {
      if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
    }
    return out;
  }
};

enum class MemberState : std::uint8_t { alive = 0, suspect = 1, dead = 2, left = 3 };

/// One node as this node sees it (memberlist.Node).
struct Member {
  std::string name;
  std::string address;  // numeric, "10.0.0.1" or "::1"
  std::uint16_t port = 0;
  std::string meta;
  MemberState state = MemberState::alive;
  std::uint32_t incarnation = 0;
  std::uint8_t protocol_min = 0, protocol_max = 0, protocol_cur = 0;
  std::uint8_t delegate_min = 0, delegate_max = 0, delegate_cur = 0;
};

struct MemberEvent {
  enum class Kind : std::uint8_t { join, leave, failed, update };
  Kind kind = Kind::join;
  Member member;
};

/// Counters (plain data).
struct MembershipStats {
  std::uint64_t packets_in = 0;
  std::uint64_t packets_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t dropped = 0;  // malformed, wrong key, wrong label, bad CRC, wrong node
  std::uint64_t streams_in = 0;
  std::uint64_t streams_out = 0;
  std::uint64_t streams_refused = 0;  // over max_concurrent_streams
  std::uint64_t streams_failed = 0;   // timeouts, resets, malformed
  std::uint64_t streams_routed = 0;   // handed to the stream handler
  std::uint64_t accept_errors = 0;    // failed accepts (EMFILE...), each followed by a back-off
  std::uint64_t probe_failures = 0;
  std::uint64_t suspicions = 0;
};

class BROKERHA_API Membership {
 public:
  /// Runs on the membership thread; must not block and must not call join()/leave()/send().
  using EventCallback = std::function<void(const MemberEvent&)>;
  /// A user message from another node; runs on the membership thread; must not block.
  using MessageCallback = std::function<void(std::string_view payload)>;
  /// Push-pull user state (memberlist's Delegate.LocalState / MergeRemoteState): what this
  /// node sends with every push-pull (`join`: the exchange is part of a join), and what it
  /// gets from the other side (never empty). Both run on the membership thread, inside the
  /// protocol, so they must be quick and must not call into the Membership.
  using LocalStateCallback = std::function<std::string(bool join)>;
  using MergeStateCallback = std::function<void(std::string_view state, bool join)>;

  explicit Membership(MembershipOptions options);
  ~Membership();  // stop()
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  /// Before start() only.
  void set_event_callback(EventCallback cb);
  void set_message_callback(MessageCallback cb);
  void set_state_callbacks(LocalStateCallback local, MergeStateCallback merge);

  /// Binds UDP and TCP on the same port, marks this node alive and starts the thread.
  /// Throws std::system_error (bind failure, bad options: errc::invalid_argument,
  /// errc::already_started).
  void start();
  void start(std::error_code& ec) noexcept;

  /// Closes the sockets and joins the thread, without announcing a leave (peers see a
  /// failure). Idempotent; any thread (from the membership thread it does not join).
  void stop() noexcept;

  /// Push-pull with every seed ("ip:port" or "ip", port 7946). Returns how many answered;
  /// errc::timed_out if none did, errc::invalid_argument for a seed that does not parse.
  int join(const std::vector<std::string>& seeds, std::error_code& ec);
  int join(const std::vector<std::string>& seeds);  // throws std::system_error

  /// Announces our leave and waits until it has been gossiped (or `timeout`).
  std::error_code leave(std::chrono::milliseconds timeout);

  /// Alive and suspect members, this node included (as memberlist's Members()). Never waits.
  std::vector<Member> members() const;
  /// Lifeguard's local health score, 0 (healthy) .. awareness_max_multiplier-1.
  int local_health() const noexcept;
  /// The bound port (after start()), 0 before.
  std::uint16_t bound_port() const noexcept;
  MembershipStats stats() const;

  /// Best effort, one UDP datagram to `node`. errc::invalid_argument: unknown node or too
  /// large for udp_buffer_size.
  std::error_code send(const std::string& node, std::string_view payload);

  /// A user message to `node` over a TCP stream (memberlist's SendReliable): not limited by
  /// udp_buffer_size and not lost to UDP drops; delivered to the peer's message callback.
  /// errc::invalid_argument: unknown node.
  std::error_code send_reliable(const std::string& node, std::string_view payload);

  /// Replaces the keyring (rotation): keys[0] encrypts, every key decrypts. Applied on the
  /// membership thread between two packets; waits for it (at most 5 s). errc::invalid_argument:
  /// no key, a key not 16, 24 or 32 bytes, or a membership started without a key (turning
  /// encryption on or off needs a restart); errc::not_started before start().
  std::error_code set_keys(const std::vector<std::string>& keys);

 private:
  friend struct detail::MembershipAccess;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace brokerha
