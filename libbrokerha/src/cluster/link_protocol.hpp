// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster link's protocol without I/O (wire format: docs/cluster-protocol.md, "Link
// layer"): framing, the hello and boot epochs, sequence numbers, cumulative acknowledgements,
// delivery once per (peer, peer epoch), the bounded re-send queue, and pings. Bytes and time
// go in; bytes to write, frames for the layer above, "this connection is over" and the next
// deadline come out. No socket, no Asio, no clock: every call that needs the time takes `now`.
//
//  - parse_link_frame(): one frame off the front of a byte stream.
//  - LinkHello, append_link_hello(), decode_link_hello(): the first frame each way.
//  - InboundHello: an accepted stream up to the dialler's hello (which names the peer, so it
//    comes before the peer's LinkSession is known).
//  - LinkSession: our side of the link to one peer across its connections: the send queue and
//    its numbering, what was delivered from the peer, and the current connection's state.
//
// The driver (cluster/link.cpp, LinkManager) owns sockets, TLS (io/tls_engine.hpp), timers,
// reconnects and the counters other threads read. Tests drive two sessions back to back
// (tests/unit/link_protocol_test.cpp).
//
// Thread: none of its own; one thread at a time (the cluster's control thread in the broker).
// Events callbacks run synchronously inside the call that caused them.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace brokerha::cluster {

/// First byte of a plaintext data-plane stream (not a memberlist message type).
inline constexpr std::uint8_t kPlainMagic = 0xB7;
/// Version of the link protocol in the hello; a peer with another version is refused.
inline constexpr std::uint8_t kLinkProtocolVersion = 1;
/// First byte of a stream that is TLS from its start (a handshake record).
inline constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

inline constexpr std::size_t kLinkFrameHeader = 13;  // u32 length | u8 kind | u64 sequence
inline constexpr std::size_t kLinkMinLength = 9;     // the length field's least: kind + sequence
inline constexpr std::size_t kLinkMaxHello = 4096;   // length limit of a frame before the hello
inline constexpr int kLinkDeadPings = 5;             // ping intervals of silence = dead link

/// Subtypes of kind 0 (the first body byte).
enum class LinkControl : std::uint8_t { hello = 0, ack = 1, ping = 2, pong = 3 };

/// True when `first`, the first byte of an accepted stream, opens a link in our mode: a TLS
/// handshake record with a key, the magic byte without one.
inline bool link_stream_start_ok(std::uint8_t first, bool tls) noexcept {
  return first == (tls ? kTlsHandshakeRecord : kPlainMagic);
}

/// What the protocol needs of the link options (cluster/link.hpp's LinkOptions adds the
/// driver's: the key, timeouts and reconnect backoff).
struct LinkSessionOptions {
  std::string node_name;         // ours (required)
  std::uint64_t boot_epoch = 0;  // ours: changes on every start (e.g. ms since 1970 at start);
                                 // 0: microseconds since 1970 at construction
  std::size_t max_queue_bytes = 64u << 20;            // per peer, unacknowledged frames included
  std::size_t max_frame_bytes = (16u << 20) + 65536;  // a larger incoming frame closes the link;
                                                      // send() refuses a larger one (dropped)
  std::chrono::milliseconds ping_interval{1000};      // round-trip samples; silence 5x = dead link
  std::chrono::milliseconds ack_delay{5};             // acknowledgements are coalesced this long
};

/// Counters of one link (plain data, any thread through LinkManager::stats()).
struct LinkStats {
  std::string peer;
  std::string address;  // "ip:port" dialled or accepted from
  bool connected = false;
  std::uint64_t peer_epoch = 0;
  std::uint64_t frames_sent = 0;  // written to the socket (re-sends included)
  std::uint64_t frames_acked = 0;
  std::uint64_t frames_received = 0;  // delivered to on_frame
  std::uint64_t duplicates = 0;       // received again after a reconnect and not delivered
  std::uint64_t missing = 0;          // numbered by the peer, never received: gaps (dropped there)
  std::uint64_t dropped = 0;          // refused by send(): queue full (or frame too large)
  std::uint64_t failures = 0;         // connects that failed, links lost, handshakes refused
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::size_t queue_frames = 0;  // waiting to be written or acknowledged
  std::size_t queue_bytes = 0;
  // Round trip of pings: cumulative counts of samples <= each bound (Prometheus buckets).
  static constexpr std::array<double, 8> kRttBounds{0.0005, 0.001, 0.0025, 0.005,
                                                    0.01,   0.025, 0.1,    1.0};
  std::array<std::uint64_t, 8> rtt_buckets{};
  std::uint64_t rtt_count = 0;
  double rtt_sum = 0;  // seconds
};

/// Why the protocol ended a connection.
enum class LinkFault : std::uint8_t {
  none,
  bad_length,     // a frame's length field below 9 or above the limit
  unexpected,     // before the hello: a frame that is not a hello, or no magic byte first
  bad_hello,      // a malformed hello, or another protocol version
  wrong_peer,     // the hello of a dialled peer names another node
  bad_control,    // a kind-0 frame of the wrong length or an unknown subtype (a second hello)
  zero_sequence,  // a frame of kinds 1..255 numbered 0
  bad_ack,        // an acknowledgement (in an ack or a hello) of a frame never numbered
  silent,         // nothing received for kLinkDeadPings ping intervals
};
const char* to_string(LinkFault f) noexcept;

/// A frame cut from a stream: views into it.
struct LinkFrame {
  std::uint8_t kind = 0;
  std::uint64_t seq = 0;
  std::string_view body;
};

enum class LinkParse : std::uint8_t { frame, partial, malformed };
/// Cuts the first frame off `stream`: `frame` with `size` its bytes on the wire; `partial`
/// when it is not all there yet; `malformed` when its length field is below 9 or above
/// `max_length` (decided from the header alone).
LinkParse parse_link_frame(std::string_view stream, std::size_t max_length, LinkFrame& frame,
                           std::size_t& size) noexcept;

/// Writes the 13-byte header of a frame with a `body_size`-byte body to out[0, 13).
void put_link_header(char* out, std::size_t body_size, std::uint8_t kind, std::uint64_t seq);

/// The hello's fields (docs/cluster-protocol.md, "Hello").
struct LinkHello {
  std::uint64_t epoch = 0;      // the sender's boot epoch
  std::uint64_t ack_epoch = 0;  // the receiver's epoch the sender last heard of (0: none)
  std::uint64_t ack_seq = 0;    // the highest sequence the sender delivered from ack_epoch
  std::string name;             // the sender (1..65535 bytes)
};
/// Appends a whole hello frame (kind 0, sequence 0).
void append_link_hello(std::string& out, const LinkHello& hello);
/// A hello frame's body (its subtype byte first); false when it is malformed or of another
/// protocol version (`fault` says which).
bool decode_link_hello(std::string_view body, LinkHello& hello, LinkFault& fault);

/// The start of an accepted stream after the first-byte check and TLS: the magic byte, then
/// the dialler's hello (a frame of at most kLinkMaxHello bytes). Then the driver finds the
/// session of the peer it names and hands it the hello and what followed.
class InboundHello {
 public:
  enum class Status { more, hello, refused };
  /// Plaintext of the stream. After `hello`, hello() is the dialler's and rest() the bytes
  /// that followed it (valid until this object changes); feed nothing more.
  Status feed(std::string_view bytes);
  const LinkHello& hello() const noexcept { return hello_; }
  std::string_view rest() const noexcept;
  LinkFault fault() const noexcept { return fault_; }

 private:
  bool magic_seen_ = false;
  std::string buf_;
  std::size_t used_ = 0;
  LinkHello hello_;
  LinkFault fault_ = LinkFault::none;
};

class LinkSession {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;  // the driver's clock; never read here

  /// The driver's side of what receive() and accept() find. Both run inside those calls; the
  /// driver may end the connection (lost()) or stop from inside them: the session then returns
  /// without touching the connection again.
  class Events {
   public:
    virtual ~Events() = default;
    /// The hello exchange is done; `epoch` is the peer's (a new value: the peer restarted and
    /// whatever state it had from us is gone).
    virtual void link_up(std::uint64_t epoch) = 0;
    /// A frame of the layer above: each once per peer epoch, in the peer's order. `body` is
    /// valid during the call only.
    virtual void link_frame(std::uint8_t kind, std::string_view body) = 0;
  };

  /// One write: views into the session's own buffer and into queued bodies, valid until
  /// round_written() or lost().
  struct Round {
    std::vector<std::string_view> pieces;
    std::size_t bytes = 0;
    std::size_t frames = 0;  // frames of kinds 1..255 in it
  };
  struct RoundLimits {
    std::size_t max_bytes;   // of queued frames per round (control frames come on top)
    std::size_t max_frames;  // queued frames per round
    std::size_t copy_max;    // bodies up to this size are copied; larger ones are referenced
  };

  /// Our numbering and what we delivered, kept by the driver when a peer is removed so that
  /// adding it again within our epoch goes on where it stopped.
  struct Numbering {
    std::uint64_t next_seq, known_epoch, rx_epoch, rx_seq;
  };

  LinkSession(const LinkSessionOptions& options, std::string peer);
  LinkSession(const LinkSession&) = delete;
  LinkSession& operator=(const LinkSession&) = delete;

  // ---- sending (connected or not) -------------------------------------------------------------

  /// Queues a frame of `kind` 1..255: numbered now, written in order on every connection until
  /// acknowledged. False when it would pass max_queue_bytes or max_frame_bytes (counted as
  /// dropped) or kind is 0. A null body is an empty one.
  bool send(std::uint8_t kind, std::shared_ptr<const std::string> body);
  /// Forgets every queued frame (the peer was removed); numbering goes on.
  void drop_queue();

  // ---- one connection at a time -----------------------------------------------------------------

  /// We dialled and the stream is open (TLS done): our magic byte and hello are queued.
  void dial(TimePoint now);
  /// The peer dialled; InboundHello read its hello (its name is this session's peer, checked by
  /// the driver). Answers with our hello. False: the connection must close (fault()).
  bool accept(const LinkHello& hello, TimePoint now, Events& events);
  /// Plaintext read from the connection (after the magic byte when the peer dialled). False:
  /// the connection must close (fault() says why, or the driver ended it from a callback).
  bool receive(std::string_view bytes, TimePoint now, Events& events);
  /// Bytes arrived on the connection that carry no link bytes (TLS records): not silent.
  void heard(TimePoint now) noexcept { last_rx_ = now; }
  /// Fires what is due: the coalesced acknowledgement, the ping, the silence check. False: the
  /// connection must close (LinkFault::silent).
  bool advance(TimePoint now);
  /// When advance() is next due (TimePoint::max(): nothing is, the link is not up).
  TimePoint next_deadline() const noexcept;
  /// The connection ended (call it after its socket is closed: nothing written from a round is
  /// referenced any more). Queue and numbering stay for the next connection.
  void lost();

  /// The next write on the connection: control frames, then (once up) queued frames not yet
  /// written on it. Null when there is nothing to write or a round is still being written.
  const Round* take_round(const RoundLimits& limits);
  /// The round taken is written (or copied): acknowledged frames may be freed now.
  void round_written();

  // ---- state ------------------------------------------------------------------------------------

  const std::string& peer() const noexcept { return peer_; }
  bool connected() const noexcept { return phase_ != Phase::none; }
  bool up() const noexcept { return phase_ == Phase::up; }
  LinkFault fault() const noexcept { return fault_; }
  /// Every numbered frame acknowledged.
  bool idle() const noexcept { return acked_ + 1 >= next_seq_; }
  std::size_t queue_frames() const noexcept { return queue_.size(); }
  std::size_t queue_bytes() const noexcept { return queue_bytes_; }
  std::uint64_t frames_received() const noexcept { return frames_received_; }
  std::uint64_t dropped() const noexcept { return dropped_; }
  /// No pings are queued while quiet (the driver holds the connection's bytes: a partition).
  void set_quiet(bool quiet) noexcept { quiet_ = quiet; }
  /// Writes the counters the protocol keeps into `s`: frames acknowledged, received,
  /// duplicates, dropped, the queue, the round-trip histogram.
  void fill(LinkStats& s) const;

  Numbering numbering() const noexcept { return {next_seq_, known_epoch_, rx_epoch_, rx_seq_}; }
  void resume(const Numbering& n) noexcept;

 private:
  enum class Phase : std::uint8_t { none, hello, up };
  // A queued frame: its header (fixed once numbered, so a re-send is the same bytes) and the
  // body shared with every other link it goes to.
  struct OutFrame {
    std::uint64_t seq = 0;
    std::array<char, kLinkFrameHeader> head{};
    std::shared_ptr<const std::string> body;
    std::size_t size() const noexcept { return kLinkFrameHeader + body->size(); }
  };

  bool fail(LinkFault f) noexcept;
  bool parse(std::string_view data, TimePoint now, Events& events, std::size_t& used);
  bool on_frame(const LinkFrame& f, TimePoint now, Events& events);
  bool on_hello(const LinkHello& h, TimePoint now, Events& events);
  bool on_ack(std::uint64_t seq);
  void append_control(LinkControl subtype, std::uint64_t value);
  void send_ping(TimePoint now);
  void send_ack();
  void rtt_sample(double secs);
  void trim();
  void free_input();

  LinkSessionOptions opt_;
  std::string peer_;
  // Sending (our epoch).
  std::deque<OutFrame> queue_;  // seqs contiguous; frames <= acked_ are trimmed lazily
  std::uint64_t next_seq_ = 1;
  std::uint64_t acked_ = 0;
  std::size_t queue_bytes_ = 0;
  // Receiving.
  std::uint64_t known_epoch_ = 0;  // the peer's epoch at the last handshake (0: never)
  std::uint64_t rx_epoch_ = 0;
  std::uint64_t rx_seq_ = 0;  // last delivered for rx_epoch_
  // The connection.
  Phase phase_ = Phase::none;
  bool dialler_ = false;
  bool quiet_ = false;
  LinkFault fault_ = LinkFault::none;
  std::uint64_t generation_ = 0;  // changes with every connection start and end
  int receiving_ = 0;             // receive() calls on the stack
  std::uint64_t write_seq_ = 1;   // next queued frame to write on this connection
  std::uint64_t ack_sent_ = 0;
  bool ack_due_set_ = false;
  TimePoint ack_due_{};
  TimePoint next_ping_{};
  TimePoint last_rx_{};
  std::uint64_t ping_id_ = 0;
  bool ping_outstanding_ = false;
  TimePoint ping_sent_{};
  std::string in_;                // an incomplete frame
  std::string ctrl_;              // control frames (and magic/hello) waiting to be written
  bool ack_write_due_ = false;    // an ack of ack_sent_ goes out with the next round
  bool ping_write_due_ = false;   // a ping of ping_id_ goes out with the next round
  bool pong_due_ = false;         // a pong for the latest ping goes out with the next round
  std::uint64_t pong_value_ = 0;  // ... answering this ping
  std::string own_;               // the round's copied bytes
  bool writing_ = false;          // a round is out
  Round round_;
  struct Seg {
    const char* data;  // a shared body, or nullptr: `offset` into own_
    std::size_t offset, size;
  };
  std::vector<Seg> segs_;
  // Counters (fill()).
  std::uint64_t frames_acked_ = 0;
  std::uint64_t frames_received_ = 0;
  std::uint64_t duplicates_ = 0;
  std::uint64_t missing_ = 0;
  std::uint64_t dropped_ = 0;
  std::array<std::uint64_t, 8> rtt_buckets_{};
  std::uint64_t rtt_count_ = 0;
  double rtt_sum_ = 0;
};

}  // namespace brokerha::cluster
