// SPDX-License-Identifier: Apache-2.0
#include "net/connection.hpp"

#include <unistd.h>

#include <algorithm>

namespace brokerha::net {

namespace {

// A connection that is closing but whose peer does not read is closed after this long.
constexpr auto kCloseGrace = std::chrono::seconds(5);
// Read rounds per readiness event before yielding to other connections on the shard.
constexpr int kReadRounds = 4;
constexpr std::size_t kMaxBacklogBytes = protocol::ClientProtocol::kMaxBacklogBytes;
// A lingering close reads and discards at most this much, for at most this long.
constexpr std::size_t kLingerBytes = 64 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(1);

}  // namespace

struct Connection::Linger {
  explicit Linger(asio::io_context& ctx) : timer(ctx) {}
  asio::steady_timer timer;
  std::size_t discarded = 0;
};

Connection::Connection(Runtime& runtime, Shard& shard, Socket socket,
                       std::unique_ptr<Transport> transport)
    : rt_(runtime),
      shard_(&shard),
      socket_(std::move(socket)),
      protocol_(*this, runtime.options().max_packet_size, Clock::now()),
      transport_(std::move(transport)) {
  std::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);
  const auto peer = socket_.remote_endpoint(ec);
  if (!ec) {
    const asio::ip::address a = peer.address();
    // IPv4 peers of a dual-stack listener are reported as IPv4 (for rules, logs and the API).
    protocol_.set_peer(a.is_v6() && a.to_v6().is_v4_mapped()
                           ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                           : a.to_string(),
                       peer.port());
  }
}

Connection::~Connection() { rt_.connection_count.fetch_sub(1, std::memory_order_relaxed); }

void Connection::start() {
  link_ = shard_->connections.insert(shard_->connections.end(), weak_from_this());
  linked_ = true;
  router::Counters::add(shard_->counters.connections_total);
  start_read();
}

// ---- reading ---------------------------------------------------------------------------------

void Connection::start_read() {
  if (reading_ || protocol_.closing() || protocol_.paused() || memory_paused_) return;
  reading_ = true;
  socket_.async_wait(
      asio::ip::tcp::socket::wait_read,
      [self = shared_from_this()](const std::error_code& ec) { self->on_readable(ec); });
}

void Connection::on_readable(const std::error_code& ec) {
  reading_ = false;
  if (protocol_.closed()) return;
  if (ec) {
    if (ec != asio::error::operation_aborted) protocol_.close();
    return;
  }
  in_handler_ = true;
  std::vector<char>& buffer = shard_->read_buffer;
  for (int round = 0; round < kReadRounds; ++round) {
    std::error_code rec;
    const std::size_t n = socket_.read_some(asio::buffer(buffer), rec);
    if (rec == asio::error::would_block || rec == asio::error::try_again) break;
    if (rec) {
      protocol_.close();  // EOF or reset without DISCONNECT: the will is published
      break;
    }
    router::Counters::add(shard_->counters.bytes_received, n);
    protocol_.on_activity(Clock::now());
    if (transport_) {
      if (!transport_input(buffer, n) || protocol_.closing() || n < buffer.size()) break;
      continue;
    }
    if (!protocol_.on_bytes(std::string_view(buffer.data(), n), Clock::now())) break;
    if (n < buffer.size()) break;
  }
  in_handler_ = false;
  // What this read routed and wrote leaves once the shard has run every handler that is
  // ready now: the other readable connections of this round add to the same posts to other
  // shards and to the same write per subscriber.
  rt_.schedule_flush(*shard_);
  protocol_.shrink_idle();
  if (backlog() >= kMaxBacklogBytes) {
    // The client does not read what it asks for (PINGRESP, acks, deliveries): stop reading
    // it until its backlog drains, so its output cannot grow without bound.
    return;
  }
  if (protocol_.take_published() && rt_.memory_over()) {
    // Back-pressure: this publisher is not read again until the queues drain (or the next
    // sweep), so TCP pushes back on it instead of the broker dropping messages.
    memory_paused_ = true;
    shard_->memory_paused.push_back(shared_from_this());
    return;
  }
  start_read();
}

void Connection::take_transport_peer() {
  if (auto peer = transport_->take_peer()) {  // before CONNECT is judged
    protocol_.set_peer(std::move(peer->first), peer->second);
  }
}

bool Connection::transport_input(std::vector<char>& buffer, std::size_t n) {
  const Transport::Result r =
      transport_->input(buffer.data(), buffer.size(), n, [this](std::string_view bytes) {
        take_transport_peer();
        return protocol_.on_bytes(bytes, Clock::now());
      });
  take_transport_peer();
  if (protocol_.closed()) return false;
  if (transport_->has_output()) output_ready();
  switch (r) {
    case Transport::Result::ok:
      if (transport_->passthrough()) transport_.reset();  // PROXY header read on plain TCP
      return true;
    case Transport::Result::stop:
      return false;
    case Transport::Result::closing:
      protocol_.close_after_write();
      return false;
    case Transport::Result::error:
      protocol_.close();
      return false;
  }
  return false;
}

void Connection::resume_reading() {
  if (!memory_paused_) return;
  memory_paused_ = false;
  start_read();
}

// ---- protocol::Host --------------------------------------------------------------------------

void Connection::output_ready() {
  if (dirty_) return;
  if (!write_active_) output_moved_ = shard_->sweeps;  // the backlog begins
  dirty_ = true;
  shard_->dirty.push_back(shared_from_this());
  rt_.schedule_flush(*shard_);
}

void Connection::post(std::function<void()> f) {
  asio::post(shard_->ctx, [self = shared_from_this(), f = std::move(f)] { f(); });
}

void Connection::resumed() {
  rt_.flush(*shard_);
  start_read();
}

router::RouteResult Connection::publish(const message::MessagePtr& message,
                                        std::uint16_t packet_id) {
  const router::RouteResult r = rt_.route(message, *shard_);
  if (rt_.message_to.active()) {
    rt_.emit_message_to(message, protocol_.version(), packet_id, *shard_);
  }
  return r;
}

std::optional<std::string> Connection::certificate_username() {
  if (!transport_ || !transport_->use_identity_as_username()) return std::nullopt;
  return transport_->identity();
}

bool Connection::claim(const std::string& client_id, bool resume,
                       std::function<void(router::ClaimResult)> done) {
  if (rt_.cluster == nullptr) return false;
  rt_.cluster->claim(client_id, resume, shard_->index, std::move(done));
  return true;
}

bool Connection::await_routes(std::vector<std::string> filters, std::function<void()> done) {
  if (rt_.cluster == nullptr || (filters.empty() && shard_->outbox.route_changes.empty())) {
    return false;
  }
  std::vector<std::string>& changes = shard_->outbox.route_changes;
  filters.insert(filters.end(), std::make_move_iterator(changes.begin()),
                 std::make_move_iterator(changes.end()));
  changes.clear();
  asio::io_context* ctx = &shard_->ctx;
  rt_.cluster->routes_changed(std::move(filters),
                              [ctx, done = std::move(done)] { asio::post(*ctx, done); });
  return true;
}

void Connection::place(std::shared_ptr<protocol::ConnectInfo> info) {
  if (protocol_.closed()) return;
  if (rt_.home_shard(info->client_id) == shard_->index) {
    protocol_.placed(std::move(info));
    return;
  }
  if (in_handler_) {
    // Move once the read handler has finished with this shard's state.
    asio::post(shard_->ctx, [self = shared_from_this(), info = std::move(info)]() mutable {
      self->migrate_and_place(std::move(info));
    });
  } else {
    migrate_and_place(std::move(info));
  }
}

void Connection::migrate_and_place(std::shared_ptr<protocol::ConnectInfo> info) {
  if (protocol_.closed()) return;
  if (write_active_) {
    // A transport's handshake answer is still being written (plain TCP writes nothing before
    // CONNACK): move once it is done, with no operation pending on the socket.
    transport_->after_write = [self = shared_from_this(), info = std::move(info)]() mutable {
      self->migrate_and_place(std::move(info));
    };
    return;
  }
  // No operation is pending on the socket here: reading stopped when CONNECT paused the
  // connection, and nothing was written before CONNACK.
  std::error_code ec;
  const auto protocol = socket_.local_endpoint(ec).protocol();
  const int fd = ec ? -1 : socket_.release(ec);
  if (ec || fd < 0) {
    protocol_.close();
    return;
  }
  Shard& target = rt_.shard(rt_.home_shard(info->client_id));
  if (linked_) {
    shard_->connections.erase(link_);
    linked_ = false;
  }
  shard_ = &target;
  asio::post(
      target.ctx, [self = shared_from_this(), fd, protocol, info = std::move(info)]() mutable {
        std::error_code aec;
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 sees Asio's move of a just-constructed, closed socket as reading uninitialized
// reactor data (it is not read for a closed socket).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
        self->socket_ = Socket(self->shard_->ctx);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
        self->socket_.assign(protocol, fd, aec);
        if (aec) {
          ::close(fd);
          self->protocol_.close();
          return;
        }
        self->socket_.non_blocking(true, aec);
        self->link_ = self->shard_->connections.insert(self->shard_->connections.end(), self);
        self->linked_ = true;
        self->protocol_.placed(std::move(info));
      });
}

// ---- writing ---------------------------------------------------------------------------------

void Connection::flush() {
  dirty_ = false;
  if (write_active_ || !has_output() || protocol_.closed()) return;
  if (!writing_) writing_ = std::make_unique<Writing>();
  Writing& w = *writing_;
  if (protocol::OutputQueue* q = protocol_.output()) q->take(w.chunks, w.own);
  w.buffers.clear();
  for (const protocol::Chunk& c : w.chunks) {
    if (c.shared != nullptr) {
      w.buffers.push_back(asio::buffer(*c.shared));
    } else {
      w.buffers.push_back(asio::buffer(w.own.data() + c.begin, c.end - c.begin));
    }
  }
  if (transport_) {
    transport_->wrap(w.buffers, w.wire, w.wire_buffers);
    w.buffers.swap(w.wire_buffers);
  }
  write_active_ = true;
  // The completion condition runs after every partial write: a consumer that reads slowly
  // but steadily is not mistaken for a stuck one (see check_timeouts()).
  auto progress = [this, last = std::size_t{0}](const std::error_code& ec,
                                                std::size_t n) mutable -> std::size_t {
    if (n != last) {
      last = n;
      output_moved_ = shard_->sweeps;
    }
    return asio::transfer_all()(ec, n);
  };
  asio::async_write(socket_, w.buffers, progress,
                    [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                      self->on_written(ec, n);
                    });
}

void Connection::on_written(const std::error_code& ec, std::size_t bytes) {
  write_active_ = false;
  router::Counters::add(shard_->counters.bytes_sent, bytes);
  Writing& w = *writing_;  // kept while a write is active
  std::size_t queued = 0;
  for (const protocol::Chunk& c : w.chunks) queued += c.size();
  protocol_.written(queued);
  w.chunks.clear();
  w.own.clear();
  if (w.own.capacity() > 64 * 1024) std::string().swap(w.own);
  if (protocol_.closed()) {
    writing_.reset();
    return;
  }
  if (ec) {
    protocol_.close();
    return;
  }
  if (protocol_.closing() && !has_output()) {
    finish_closing();
    return;
  }
  if (transport_ && transport_->after_write) {
    auto next = std::move(transport_->after_write);
    transport_->after_write = nullptr;
    next();
    return;
  }
  protocol_.pump();
  if (!protocol_.has_output() && last_write_sweep_ != shard_->sweeps) {
    // The first write since the last sweep, and nothing follows it: a quiet connection (a
    // CONNACK, a PINGRESP). Its buffers go back now, while the allocator can hand them to
    // the next connection; a busy one keeps them (at most one allocation per sweep).
    writing_.reset();
    protocol_.shrink_idle();
  }
  last_write_sweep_ = shard_->sweeps;
  flush();
  if (!reading_ && backlog() < kMaxBacklogBytes / 2) start_read();
}

// ---- ending ----------------------------------------------------------------------------------

void Connection::close_when_written(int ws_close_code) {
  if (protocol_.closed()) return;
  if (transport_) transport_->closing(static_cast<std::uint16_t>(ws_close_code));
  if (!write_active_ && !has_output()) {
    finish_closing();
    return;
  }
  output_ready();
}

void Connection::finish_closing() {
  linger_on_close_ = true;
  protocol_.close();  // detaches the session, then close_socket()
}

void Connection::close_socket() {
  if (transport_) transport_->after_write = nullptr;  // it holds this connection
  std::error_code ec;
  if (linger_on_close_ && !write_active_ && !linger_ && socket_.is_open()) {
    // Our FIN follows the last packet; the client's bytes in flight are read, not reset.
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    if (!ec) {
      writing_.reset();
      linger_ = std::make_unique<Linger>(shard_->ctx);
      linger_->timer.expires_after(kLingerTime);
      linger_->timer.async_wait([self = shared_from_this()](const std::error_code& tec) {
        if (tec != asio::error::operation_aborted) self->end_linger();
      });
      linger_read();
      return;
    }
  }
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  if (!write_active_) writing_.reset();
}

void Connection::linger_read() {
  socket_.async_wait(asio::ip::tcp::socket::wait_read,
                     [self = shared_from_this()](const std::error_code& ec) {
                       if (ec) {
                         self->end_linger();
                         return;
                       }
                       std::vector<char>& buffer = self->shard_->read_buffer;
                       for (;;) {
                         std::error_code rec;
                         const std::size_t n = self->socket_.read_some(asio::buffer(buffer), rec);
                         if (rec == asio::error::would_block || rec == asio::error::try_again) {
                           break;
                         }
                         self->linger_->discarded += n;
                         if (rec || self->linger_->discarded >= kLingerBytes) {
                           self->end_linger();  // EOF, an error, or enough
                           return;
                         }
                       }
                       self->linger_read();
                     });
}

void Connection::end_linger() {
  if (!linger_ || !socket_.is_open()) return;
  std::error_code ec;
  linger_->timer.cancel();
  socket_.close(ec);
}

void Connection::check_timeouts(Clock::time_point now) {
  if (protocol_.closed()) return;
  if (protocol_.closing()) {
    if (now - protocol_.closing_since() > kCloseGrace) protocol_.close();
    return;
  }
  if (protocol_.backlog() != 0 && protocol_.connected()) {
    const auto stuck_for = std::chrono::seconds(std::uint32_t(shard_->sweeps - output_moved_));
    if (stuck_for >= rt_.options().stuck_consumer_timeout && rt_.memory_over()) {
      // Its output has not moved for the timeout and the broker is over its memory bound:
      // keeping it would keep every publisher paused. It cannot read a DISCONNECT either.
      router::Counters::add(shard_->counters.stuck_consumers_closed);
      protocol_.close(ReasonCode::quota_exceeded);
      return;
    }
  }
  // Idle output: hand the buffers back (an active connection re-allocates at most once per
  // sweep; an idle one holds none).
  if (!write_active_ && !protocol_.has_output()) {
    writing_.reset();
    protocol_.shrink_idle();
  }
  protocol_.on_tick(now, memory_paused_ || backlog() >= kMaxBacklogBytes);
}

}  // namespace brokerha::net
