// SPDX-License-Identifier: Apache-2.0
// The cluster link's protocol without I/O (cluster/link_protocol.hpp; wire format:
// docs/cluster-protocol.md, "Link layer"). Runs on its driver's thread (the cluster's control
// thread); owns no socket, clock or thread.

#include "cluster/link_protocol.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "util/bytes.hpp"

namespace brokerha::cluster {

namespace {

using util::load_be16;
using util::load_be32;
using util::load_be64;
using util::put_be16;
using util::put_be64;
using util::store_be32;
using util::store_be64;

// The hello body's fixed part: subtype, version, epoch, ack_epoch, ack_seq, name length.
constexpr std::size_t kHelloFixed = 2 + 8 + 8 + 8 + 2;

}  // namespace

const char* to_string(LinkFault f) noexcept {
  switch (f) {
    case LinkFault::none:
      return "none";
    case LinkFault::bad_length:
      return "bad frame length";
    case LinkFault::unexpected:
      return "unexpected frame before the hello";
    case LinkFault::bad_hello:
      return "bad hello";
    case LinkFault::wrong_peer:
      return "hello from another node";
    case LinkFault::bad_control:
      return "bad control frame";
    case LinkFault::zero_sequence:
      return "frame numbered 0";
    case LinkFault::bad_ack:
      return "acknowledgement of a frame never sent";
    case LinkFault::silent:
      return "silent link";
  }
  return "?";
}

// ---- frames and the hello -----------------------------------------------------------------------

LinkParse parse_link_frame(std::string_view stream, std::size_t max_length, LinkFrame& frame,
                           std::size_t& size) noexcept {
  if (stream.size() < 4) return LinkParse::partial;
  const std::size_t len = load_be32(stream.data());
  if (len < kLinkMinLength || len > max_length) return LinkParse::malformed;
  if (stream.size() - 4 < len) return LinkParse::partial;
  frame.kind = static_cast<std::uint8_t>(stream[4]);
  frame.seq = load_be64(stream.data() + 5);
  frame.body = stream.substr(kLinkFrameHeader, len - kLinkMinLength);
  size = 4 + len;
  return LinkParse::frame;
}

void put_link_header(char* out, std::size_t body_size, std::uint8_t kind, std::uint64_t seq) {
  store_be32(out, static_cast<std::uint32_t>(kLinkMinLength + body_size));
  out[4] = static_cast<char>(kind);
  store_be64(out + 5, seq);
}

// u8 subtype 0 | u8 version | u64 epoch | u64 ack_epoch | u64 ack_seq | u16 name length | name
void append_link_hello(std::string& out, const LinkHello& h) {
  char head[kLinkFrameHeader];
  put_link_header(head, kHelloFixed + h.name.size(), 0, 0);
  out.append(head, kLinkFrameHeader);
  out.push_back(static_cast<char>(LinkControl::hello));
  out.push_back(static_cast<char>(kLinkProtocolVersion));
  put_be64(out, h.epoch);
  put_be64(out, h.ack_epoch);
  put_be64(out, h.ack_seq);
  put_be16(out, static_cast<std::uint16_t>(h.name.size()));
  out += h.name;
}

bool decode_link_hello(std::string_view body, LinkHello& h, LinkFault& fault) {
  fault = LinkFault::bad_hello;
  if (body.size() < kHelloFixed || static_cast<std::uint8_t>(body[0]) != 0 ||
      static_cast<std::uint8_t>(body[1]) != kLinkProtocolVersion) {
    return false;
  }
  const std::size_t name_len = load_be16(body.data() + 26);
  if (body.size() != kHelloFixed + name_len || name_len == 0) return false;
  h.epoch = load_be64(body.data() + 2);
  h.ack_epoch = load_be64(body.data() + 10);
  h.ack_seq = load_be64(body.data() + 18);
  h.name.assign(body.substr(kHelloFixed));
  fault = LinkFault::none;
  return true;
}

// ---- InboundHello -------------------------------------------------------------------------------

InboundHello::Status InboundHello::feed(std::string_view bytes) {
  if (fault_ != LinkFault::none) return Status::refused;
  if (bytes.empty()) return Status::more;
  if (!magic_seen_) {
    if (static_cast<std::uint8_t>(bytes[0]) != kPlainMagic) {
      fault_ = LinkFault::unexpected;
      return Status::refused;
    }
    magic_seen_ = true;
    bytes.remove_prefix(1);
  }
  buf_.append(bytes);
  LinkFrame f;
  std::size_t size = 0;
  switch (parse_link_frame(buf_, kLinkMaxHello, f, size)) {
    case LinkParse::partial:
      return Status::more;
    case LinkParse::malformed:
      fault_ = LinkFault::bad_length;
      return Status::refused;
    case LinkParse::frame:
      break;
  }
  if (f.kind != 0 || f.body.empty() ||
      static_cast<std::uint8_t>(f.body[0]) != static_cast<std::uint8_t>(LinkControl::hello)) {
    fault_ = LinkFault::unexpected;
    return Status::refused;
  }
  if (!decode_link_hello(f.body, hello_, fault_)) return Status::refused;
  used_ = size;
  return Status::hello;
}

std::string_view InboundHello::rest() const noexcept {
  return std::string_view(buf_).substr(std::min(used_, buf_.size()));
}

// ---- LinkSession: sending -----------------------------------------------------------------------

LinkSession::LinkSession(const LinkSessionOptions& options, std::string peer)
    : opt_(options), peer_(std::move(peer)) {
  if (opt_.ping_interval.count() <= 0) opt_.ping_interval = std::chrono::milliseconds(1000);
  if (opt_.max_frame_bytes < kLinkMaxHello) opt_.max_frame_bytes = kLinkMaxHello;
}

bool LinkSession::send(std::uint8_t kind, std::shared_ptr<const std::string> body) {
  if (kind == 0) return false;
  if (!body) body = std::make_shared<const std::string>();
  const std::size_t size = kLinkFrameHeader + body->size();
  if (queue_bytes_ + size > opt_.max_queue_bytes ||
      kLinkMinLength + body->size() > opt_.max_frame_bytes) {
    ++dropped_;
    return false;
  }
  OutFrame f;
  f.seq = next_seq_++;
  put_link_header(f.head.data(), body->size(), kind, f.seq);
  f.body = std::move(body);
  queue_.push_back(std::move(f));
  queue_bytes_ += size;
  return true;
}

void LinkSession::drop_queue() {
  queue_.clear();
  queue_bytes_ = 0;
}

void LinkSession::resume(const Numbering& n) noexcept {
  next_seq_ = n.next_seq;
  acked_ = next_seq_ - 1;
  known_epoch_ = n.known_epoch;
  rx_epoch_ = n.rx_epoch;
  rx_seq_ = n.rx_seq;
}

// ---- LinkSession: the connection ----------------------------------------------------------------

void LinkSession::dial(TimePoint now) {
  lost();
  phase_ = Phase::hello;
  dialler_ = true;
  last_rx_ = now;
  ctrl_.push_back(static_cast<char>(kPlainMagic));
  append_link_hello(ctrl_, LinkHello{opt_.boot_epoch, rx_epoch_, rx_seq_, opt_.node_name});
}

bool LinkSession::accept(const LinkHello& hello, TimePoint now, Events& events) {
  lost();
  phase_ = Phase::hello;
  dialler_ = false;
  last_rx_ = now;
  return on_hello(hello, now, events);
}

void LinkSession::lost() {
  ++generation_;
  phase_ = Phase::none;
  fault_ = LinkFault::none;
  writing_ = false;
  std::string().swap(ctrl_);
  ack_write_due_ = ping_write_due_ = pong_due_ = false;
  std::string().swap(own_);
  round_.pieces.clear();
  ack_due_set_ = false;
  ping_outstanding_ = false;
  ping_id_ = 0;
  free_input();
  trim();
}

void LinkSession::free_input() {
  // A receive() below us may still point into in_: it is freed when that call returns.
  if (receiving_ == 0) std::string().swap(in_);
}

bool LinkSession::fail(LinkFault f) noexcept {
  fault_ = f;
  return false;
}

bool LinkSession::receive(std::string_view bytes, TimePoint now, Events& events) {
  if (phase_ == Phase::none) return false;
  last_rx_ = now;
  if (bytes.empty()) return true;
  const std::uint64_t gen = generation_;
  ++receiving_;
  std::size_t used = 0;
  bool ok;
  if (in_.empty()) {
    ok = parse(bytes, now, events, used);
    if (ok && used < bytes.size()) in_.assign(bytes.substr(used));
  } else {
    in_.append(bytes);
    ok = parse(in_, now, events, used);
    if (ok) in_.erase(0, used);
  }
  --receiving_;
  if (gen != generation_) {  // the driver ended the connection from a callback
    free_input();
    return false;
  }
  if (!ok) return false;
  if (phase_ == Phase::up && !ack_due_set_ && rx_seq_ > ack_sent_) {
    if (opt_.ack_delay.count() <= 0) {
      send_ack();
    } else {
      ack_due_set_ = true;
      ack_due_ = now + opt_.ack_delay;
    }
  }
  return true;
}

// Parses whole frames; `used`: the bytes consumed. False: a fault, or the connection ended.
bool LinkSession::parse(std::string_view data, TimePoint now, Events& events, std::size_t& used) {
  const std::uint64_t gen = generation_;
  used = 0;
  while (true) {
    LinkFrame f;
    std::size_t size = 0;
    const std::size_t limit = phase_ == Phase::up ? opt_.max_frame_bytes : kLinkMaxHello;
    switch (parse_link_frame(data.substr(used), limit, f, size)) {
      case LinkParse::partial:
        return true;
      case LinkParse::malformed:
        return fail(LinkFault::bad_length);
      case LinkParse::frame:
        break;
    }
    used += size;
    if (!on_frame(f, now, events) || gen != generation_) return false;
  }
}

bool LinkSession::on_frame(const LinkFrame& f, TimePoint now, Events& events) {
  if (phase_ != Phase::up) {
    // Only the dialler reads a hello here (an accepted stream's comes through accept()).
    if (f.kind != 0 || f.body.empty() || !dialler_ ||
        static_cast<std::uint8_t>(f.body[0]) != static_cast<std::uint8_t>(LinkControl::hello)) {
      return fail(LinkFault::unexpected);
    }
    LinkHello h;
    LinkFault fault = LinkFault::none;
    if (!decode_link_hello(f.body, h, fault)) return fail(fault);
    if (h.name != peer_) return fail(LinkFault::wrong_peer);  // someone else answers there now
    return on_hello(h, now, events);
  }
  if (f.kind == 0) {
    if (f.body.size() != 1) return fail(LinkFault::bad_control);
    switch (static_cast<LinkControl>(static_cast<std::uint8_t>(f.body[0]))) {
      case LinkControl::ack:
        return on_ack(f.seq);
      case LinkControl::ping:
        // Written with the next round; only the latest ping is answered (the peer matches the
        // pong to its one outstanding ping), so a peer that pings and never reads costs one.
        pong_due_ = true;
        pong_value_ = f.seq;
        return true;
      case LinkControl::pong:
        if (ping_outstanding_ && f.seq == ping_id_) {
          ping_outstanding_ = false;
          rtt_sample(std::chrono::duration<double>(now - ping_sent_).count());
        }
        return true;
      default:
        return fail(LinkFault::bad_control);
    }
  }
  if (f.seq == 0) return fail(LinkFault::zero_sequence);
  if (f.seq <= rx_seq_) {
    ++duplicates_;
    return true;
  }
  missing_ += f.seq - rx_seq_ - 1;  // frames the peer dropped before they reached us
  rx_seq_ = f.seq;
  ++frames_received_;
  events.link_frame(f.kind, f.body);
  return true;
}

bool LinkSession::on_hello(const LinkHello& h, TimePoint now, Events& events) {
  // A restarted peer: what we queued for its previous incarnation is dropped (and counted) and our
  // numbering restarts; its frames are numbered from 1 again. (No round refers to the queue:
  // none carries frames before the link is up.)
  if (known_epoch_ != 0 && h.epoch != known_epoch_) {
    dropped_ += queue_.size();  // never delivered: counted as dropped
    queue_.clear();
    queue_bytes_ = 0;
    next_seq_ = 1;
    acked_ = 0;
  }
  if (h.epoch != rx_epoch_) {
    rx_epoch_ = h.epoch;
    rx_seq_ = 0;
  }
  known_epoch_ = h.epoch;
  if (h.ack_epoch == opt_.boot_epoch && h.ack_seq != 0) {
    if (h.ack_seq >= next_seq_) return fail(LinkFault::bad_ack);
    if (h.ack_seq > acked_) {
      frames_acked_ += h.ack_seq - acked_;
      acked_ = h.ack_seq;
    }
  }
  trim();
  write_seq_ = acked_ + 1;
  if (!queue_.empty()) write_seq_ = std::max(write_seq_, queue_.front().seq);
  ack_sent_ = rx_seq_;
  if (!dialler_) {
    append_link_hello(ctrl_, LinkHello{opt_.boot_epoch, rx_epoch_, rx_seq_, opt_.node_name});
  }
  phase_ = Phase::up;
  send_ping(now);
  next_ping_ = now + opt_.ping_interval;
  events.link_up(h.epoch);
  return true;
}

bool LinkSession::on_ack(std::uint64_t seq) {
  // Acknowledges what was never written on this connection (or never numbered).
  if (seq >= write_seq_) return fail(LinkFault::bad_ack);
  if (seq <= acked_) return true;
  frames_acked_ += seq - acked_;
  acked_ = seq;
  trim();
  return true;
}

// ---- LinkSession: timers ------------------------------------------------------------------------

bool LinkSession::advance(TimePoint now) {
  if (phase_ != Phase::up) return true;
  if (ack_due_set_ && now >= ack_due_) {
    ack_due_set_ = false;
    send_ack();
  }
  if (now >= next_ping_) {
    if (now - last_rx_ >= kLinkDeadPings * opt_.ping_interval) return fail(LinkFault::silent);
    if (!quiet_) send_ping(now);
    next_ping_ = now + opt_.ping_interval;
  }
  return true;
}

LinkSession::TimePoint LinkSession::next_deadline() const noexcept {
  if (phase_ != Phase::up) return TimePoint::max();
  return ack_due_set_ ? std::min(ack_due_, next_ping_) : next_ping_;
}

// A kind-0 frame with a one-byte body (ack, ping, pong).
void LinkSession::append_control(LinkControl subtype, std::uint64_t value) {
  char f[kLinkFrameHeader + 1];
  put_link_header(f, 1, 0, value);
  f[kLinkFrameHeader] = static_cast<char>(subtype);
  ctrl_.append(f, sizeof f);
}

void LinkSession::send_ack() {
  if (rx_seq_ <= ack_sent_) return;
  ack_sent_ = rx_seq_;
  ack_write_due_ = true;  // cumulative: the latest goes out with the next round
}

void LinkSession::send_ping(TimePoint now) {
  ping_outstanding_ = true;
  ping_sent_ = now;
  ++ping_id_;
  ping_write_due_ = true;  // only the latest is answered, so only the latest is written
}

void LinkSession::rtt_sample(double secs) {
  ++rtt_count_;
  rtt_sum_ += secs;
  for (std::size_t i = 0; i < LinkStats::kRttBounds.size(); ++i) {
    if (secs <= LinkStats::kRttBounds[i]) ++rtt_buckets_[i];
  }
}

// ---- LinkSession: writing -----------------------------------------------------------------------

const LinkSession::Round* LinkSession::take_round(const RoundLimits& limits) {
  if (writing_ || phase_ == Phase::none) return nullptr;
  round_.pieces.clear();
  round_.bytes = 0;
  round_.frames = 0;
  // Control frames, headers and bodies up to copy_max are copied into own_, in runs; a larger
  // body is its own piece, shared with every other link that sends it. Runs are kept as
  // offsets until own_ stops growing.
  // Acks, pings and pongs wait here as flags, not bytes: a peer that never reads makes the
  // control output hold at most one of each, whatever it sends meanwhile.
  if (ack_write_due_) {
    ack_write_due_ = false;
    append_control(LinkControl::ack, ack_sent_);
  }
  if (ping_write_due_) {
    ping_write_due_ = false;
    append_control(LinkControl::ping, ping_id_);
  }
  if (pong_due_) {
    pong_due_ = false;
    append_control(LinkControl::pong, pong_value_);
  }
  own_.swap(ctrl_);
  ctrl_.clear();
  segs_.clear();
  std::size_t run = 0;  // start of the current run in own_
  if (phase_ == Phase::up && !queue_.empty()) {
    std::size_t bytes = 0;
    std::size_t i = static_cast<std::size_t>(write_seq_ - queue_.front().seq);
    for (; i < queue_.size() && round_.frames < limits.max_frames && bytes < limits.max_bytes;
         ++i) {
      const OutFrame& f = queue_[i];
      own_.append(f.head.data(), kLinkFrameHeader);
      if (f.body->size() <= limits.copy_max) {
        own_.append(*f.body);
      } else {
        segs_.push_back({nullptr, run, own_.size() - run});
        segs_.push_back({f.body->data(), 0, f.body->size()});
        run = own_.size();
      }
      bytes += f.size();
      ++round_.frames;
      ++write_seq_;
    }
  }
  if (own_.size() > run) segs_.push_back({nullptr, run, own_.size() - run});
  for (const Seg& g : segs_) {
    if (g.size == 0) continue;
    round_.pieces.emplace_back(g.data != nullptr ? g.data : own_.data() + g.offset, g.size);
    round_.bytes += g.size;
  }
  if (round_.pieces.empty()) return nullptr;
  writing_ = true;
  return &round_;
}

void LinkSession::round_written() {
  writing_ = false;
  trim();
}

// Drops acknowledged frames, unless a round (which may point into them) is out.
void LinkSession::trim() {
  if (writing_) return;
  while (!queue_.empty() && queue_.front().seq <= acked_) {
    queue_bytes_ -= queue_.front().size();
    queue_.pop_front();
  }
}

void LinkSession::fill(LinkStats& s) const {
  s.frames_acked = frames_acked_;
  s.frames_received = frames_received_;
  s.duplicates = duplicates_;
  s.missing = missing_;
  s.dropped = dropped_;
  s.queue_frames = queue_.size();
  s.queue_bytes = queue_bytes_;
  s.rtt_buckets = rtt_buckets_;
  s.rtt_count = rtt_count_;
  s.rtt_sum = rtt_sum_;
}

}  // namespace brokerha::cluster
