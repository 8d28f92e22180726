// SPDX-License-Identifier: Apache-2.0
#pragma once
// The SWIM + Lifeguard protocol core, as hashicorp/memberlist runs it (see DESIGN.md and
// README.md here). Deterministic: it owns no socket, clock or random source.
//
// Inputs:  start/join/leave commands, packets, stream requests and stream replies, and the
//          current time (every call takes `now`; advance(now) fires due timers). All randomness
//          comes from one generator seeded with CoreConfig::seed.
// Outputs: through CoreOutput: packets to send, stream requests to make, member events, user
//          messages and push-pull user state. next_deadline() says when to call advance() next.
//
// Thread safety: none. One thread (the membership thread, or the simulator) owns a Core.
// Callbacks on CoreOutput run synchronously inside the Core call that caused them and must not
// call back into the Core.

#include <brokerha/membership.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "membership/codec.hpp"
#include "membership/wire.hpp"

namespace brokerha::membership {

using Duration = std::chrono::microseconds;
using TimePoint = std::chrono::microseconds;  // since an arbitrary epoch chosen by the driver

struct Address {
  std::string ip;  // raw bytes: 4 (IPv4) or 16 (IPv6)
  std::uint16_t port = 0;
  bool operator==(const Address& o) const { return port == o.port && ip == o.ip; }
  bool operator!=(const Address& o) const { return !(*this == o); }
  bool operator<(const Address& o) const { return ip != o.ip ? ip < o.ip : port < o.port; }
};
std::string to_string(const Address& a);

struct Member {
  std::string name;
  Address addr;
  std::string meta;
  NodeState state = NodeState::dead;
  std::uint32_t incarnation = 0;
  std::array<std::uint8_t, 6> vsn{};  // pmin, pmax, pcur, dmin, dmax, dcur
  TimePoint state_change{0};
};

struct MemberEvent {
  enum class Kind : std::uint8_t { join, leave, update };
  Kind kind = Kind::join;
  Member member;  // for leave: state says dead or left
};

// The protocol's settings as the public options give them, plus what the driver works out:
// the address to advertise (resolved), the packet framing and the random seed.
struct CoreConfig : MembershipProtocolOptions {
  Address advertise;
  CodecConfig codec;
  std::uint64_t seed = 1;
};

class CoreOutput {
 public:
  virtual ~CoreOutput() = default;
  virtual void send_packet(const Address& to, std::string bytes) = 0;
  // Opens a stream to `to`, writes `bytes`, and reads one reply; the driver answers with
  // Core::on_stream_reply(id, ...) (nullopt: failed or timed out after tcp_timeout).
  // expect_reply=false: write and close, no on_stream_reply.
  virtual void send_stream(std::uint64_t id, const Address& to, std::string bytes,
                           bool expect_reply) = 0;
  virtual void member_event(const MemberEvent& /*e*/) {}
  virtual void user_message(std::string_view /*payload*/) {}
  virtual std::string local_state(bool /*join*/) { return {}; }
  virtual void merge_remote_state(std::string_view /*state*/, bool /*join*/) {}
};

struct CoreStats {
  std::uint64_t packets_in = 0;
  std::uint64_t packets_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t dropped_malformed = 0;
  std::uint64_t dropped_auth = 0;
  std::uint64_t dropped_label = 0;
  std::uint64_t dropped_crc = 0;
  std::uint64_t dropped_wrong_node = 0;
  std::uint64_t unknown_ack = 0;
  std::uint64_t probes = 0;
  std::uint64_t probe_failures = 0;
  std::uint64_t tcp_fallback_saves = 0;
  std::uint64_t suspicions = 0;
  std::uint64_t refutes = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t push_pulls = 0;
  std::uint64_t oversized = 0;
  std::uint64_t stale_corrections = 0;
};

class Core {
 public:
  Core(CoreConfig cfg, CoreOutput& out);
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  void start(TimePoint now);  // alive at incarnation 1, loops staggered
  void advance(TimePoint now);
  TimePoint next_deadline() const;

  void on_packet(TimePoint now, const Address& from, std::string_view bytes);
  // A stream the driver accepted and read completely; returns the reply to write, if any.
  std::optional<std::string> on_stream(TimePoint now, const Address& from, std::string_view bytes);
  void on_stream_reply(TimePoint now, std::uint64_t id, std::optional<std::string> bytes);

  // Push-pull (join=true) with each seed; `done(ok, failed)` when every exchange finished.
  void join(TimePoint now, const std::vector<Address>& seeds,
            std::function<void(int, int)> done = nullptr);
  // Broadcasts our own Left; leave_done() once it has been retransmitted fully.
  void leave(TimePoint now);
  bool leave_done() const noexcept { return leave_done_; }

  // Best effort over UDP, one datagram; false when it does not fit udp_buffer_size.
  bool send_user_packet(const std::string& node, std::string_view payload);
  bool send_user_stream(const std::string& node, std::string_view payload);

  std::vector<Member> members() const;  // alive and suspect, as memberlist's Members()
  const Member* find(const std::string& name) const;
  const Member& self() const;
  std::size_t num_nodes() const noexcept { return nodes_.size(); }  // memberlist's estNumNodes
  int health_score() const noexcept { return awareness_; }
  const CoreStats& stats() const noexcept { return stats_; }
  const CoreConfig& config() const noexcept { return cfg_; }
  // Replaces the packet keyring (rotation); the next packet in or out uses it.
  void set_keyring(Keyring keyring) { cfg_.codec.keyring = std::move(keyring); }

  // memberlist's formulas, exactly as its code has them.
  static Duration suspicion_timeout(int mult, std::size_t n, Duration interval);
  static Duration remaining_suspicion_time(int confirmations, int k, Duration elapsed, Duration min,
                                           Duration max);
  static int retransmit_limit(int mult, std::size_t n);
  static Duration push_pull_scale(Duration interval, std::size_t n);

 private:
  struct Node {
    Member m;
  };
  struct AckHandler {
    std::function<void()> on_ack;
    std::function<void()> on_nack;
    std::uint64_t timer = 0;
  };
  struct Suspicion {
    int k = 0;
    int n = 0;
    Duration min{0};
    Duration max{0};
    TimePoint start{0};
    std::set<std::string> confirmations;
    std::uint64_t timer = 0;
  };
  struct Broadcast {
    std::string key;
    std::string msg;
    int transmits = 0;
    std::uint64_t id = 0;
    std::function<void()> finished;
  };
  struct Probe {
    bool active = false;
    std::string target;
    std::uint32_t seq = 0;
    TimePoint start{0};
    int expected_nacks = 0;
    int nacks = 0;
    bool indirect_started = false;
    bool tcp_ok = false;
    std::uint64_t timeout_timer = 0;
    std::uint64_t end_timer = 0;
  };
  struct PendingStream {
    enum class Kind : std::uint8_t { tcp_ping, push_pull } kind = Kind::push_pull;
    std::uint32_t seq = 0;
    bool join = false;
    std::uint64_t join_id = 0;
  };
  struct JoinOp {
    int pending = 0;
    int ok = 0;
    int failed = 0;
    std::function<void(int, int)> done;
  };

  // timers
  std::uint64_t schedule(TimePoint at, std::function<void()> fn);
  void cancel(std::uint64_t id);

  // loops
  void probe_tick();
  void run_probe();
  void probe_acked(std::uint32_t seq);
  void probe_timed_out(std::uint32_t seq);
  void probe_ended(std::uint32_t seq);
  void finish_probe();
  void gossip_tick();
  void push_pull_tick();
  void reset_nodes();
  std::vector<Node*> random_nodes(std::size_t k, const std::function<bool(const Node&)>& skip);

  // state machine (memberlist state.go)
  void alive_node(const Alive& a, bool bootstrap, std::function<void()> notify = nullptr);
  void suspect_node(const Suspect& s);
  void dead_node(const Dead& d);
  void refute(Node& me, std::uint32_t accused_inc);
  void correct_stale_sender();
  void merge_state(const std::vector<PushNodeState>& remote);
  Alive alive_of(const Member& m) const;
  void apply_awareness(int delta);
  Duration scaled(Duration d) const;

  // messages
  void handle_command(std::string_view msg, const Address& from, int depth);
  void handle_ping(std::string_view body, const Address& from);
  void handle_indirect_ping(std::string_view body, const Address& from);
  void handle_ack_or_nack(std::string_view body, bool is_ack);
  void queue_broadcast(const std::string& key, std::string msg,
                       std::function<void()> finished = nullptr);
  std::vector<std::string> get_broadcasts(std::size_t overhead, std::size_t limit);
  void send_msg(const Address& to, const std::string* node, std::string msg);
  void raw_send(const Address& to, const std::string* node, const std::string& msg);
  std::string ping_msg(std::uint32_t seq, const std::string& target) const;
  void start_push_pull(const Address& to, bool join, std::uint64_t join_id);
  std::string local_push_pull(bool join);
  void join_step(std::uint64_t join_id, bool ok);
  std::size_t packet_overhead() const;

  CoreConfig cfg_;
  CoreOutput& out_;
  std::mt19937_64 rng_;
  TimePoint now_{0};
  std::map<std::pair<TimePoint, std::uint64_t>, std::function<void()>> timers_;
  std::unordered_map<std::uint64_t, TimePoint> timer_at_;
  std::uint64_t next_id_ = 1;

  std::vector<std::unique_ptr<Node>> nodes_;
  std::unordered_map<std::string, Node*> map_;
  std::size_t probe_index_ = 0;
  std::uint32_t seq_ = 0;
  std::uint32_t incarnation_ = 0;
  int awareness_ = 0;
  bool leaving_ = false;
  bool leave_done_ = false;
  bool started_ = false;

  std::unordered_map<std::uint32_t, AckHandler> acks_;
  std::unordered_map<std::string, Suspicion> suspicions_;
  std::vector<Broadcast> queue_;
  Probe probe_;
  bool tick_pending_ = false;
  std::unordered_map<std::uint64_t, PendingStream> streams_;
  std::unordered_map<std::uint64_t, JoinOp> joins_;
  CoreStats stats_;
  const Address* current_from_ = nullptr;  // source of the packet being handled
};

}  // namespace brokerha::membership
