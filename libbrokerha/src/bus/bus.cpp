// SPDX-License-Identifier: Apache-2.0
// brokerha::Bus. Locks: a channel's mutex guards its subscriber list and is held while an
// event is offered to each subscriber, whose own mutex guards its buffer (order: channel,
// then subscriber; pop() takes only the subscriber's). The subscriber count is mirrored in an
// atomic so that a publish on an idle channel is one load and no lock.

#include <brokerha/bus.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace brokerha {
namespace detail {

struct BusSubscriberState {
  BusSubscriberState(std::size_t cap, std::size_t bytes_cap)
      : capacity(cap), max_bytes(bytes_cap) {}

  const std::size_t capacity;
  const std::size_t max_bytes;  // 0 = no bound on the buffered data
  mutable std::mutex mutex;
  std::condition_variable cv;
  std::deque<BusEvent> buffer;  // guarded by mutex
  std::size_t bytes = 0;        // data bytes in buffer; guarded by mutex
  bool closed = false;          // guarded by mutex
  std::atomic<std::uint64_t> dropped{0};

  // False when the buffer is full, in events or in bytes (the event is dropped for this
  // subscriber). An empty buffer takes one event of any size.
  bool offer(const std::string& channel, std::string&& data) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (closed) return true;
      if (buffer.size() >= capacity || (max_bytes != 0 && !buffer.empty() &&
                                        data.size() > max_bytes - std::min(bytes, max_bytes))) {
        dropped.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      bytes += data.size();
      buffer.push_back(BusEvent{channel, std::move(data)});
    }
    cv.notify_one();
    return true;
  }
  // The front event; the caller holds `mutex` and the buffer is not empty.
  BusEvent take() {
    BusEvent e = std::move(buffer.front());
    buffer.pop_front();
    bytes -= std::min(bytes, e.data.size());
    return e;
  }
};

struct BusChannelState {
  explicit BusChannelState(std::string n) : name(std::move(n)) {}

  const std::string name;
  std::atomic<std::size_t> subscriber_count{0};
  std::atomic<std::uint64_t> dropped{0};
  std::mutex mutex;
  std::vector<std::shared_ptr<BusSubscriberState>> subscribers;  // guarded by mutex

  void add(const std::shared_ptr<BusSubscriberState>& s) {
    std::lock_guard<std::mutex> lock(mutex);
    subscribers.push_back(s);
    subscriber_count.store(subscribers.size(), std::memory_order_relaxed);
  }
  void remove(const BusSubscriberState* s) {
    std::lock_guard<std::mutex> lock(mutex);
    subscribers.erase(std::remove_if(subscribers.begin(), subscribers.end(),
                                     [s](const auto& p) { return p.get() == s; }),
                      subscribers.end());
    subscriber_count.store(subscribers.size(), std::memory_order_relaxed);
  }
  void publish(std::string data) {
    std::lock_guard<std::mutex> lock(mutex);
    const std::size_t n = subscribers.size();
    for (std::size_t i = 0; i < n; ++i) {
      std::string copy = i + 1 == n ? std::move(data) : data;
      if (!subscribers[i]->offer(name, std::move(copy))) {
        dropped.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
};

}  // namespace detail

// ---- BusChannel --------------------------------------------------------------------------------

BusChannel::BusChannel(std::shared_ptr<detail::BusChannelState> state) noexcept
    : state_(std::move(state)) {}

bool BusChannel::active() const noexcept {
  return state_ && state_->subscriber_count.load(std::memory_order_relaxed) != 0;
}

void BusChannel::publish(std::string data) const {
  if (active()) state_->publish(std::move(data));
}

const std::string& BusChannel::name() const noexcept {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

// ---- BusSubscription ---------------------------------------------------------------------------

BusSubscription::BusSubscription(std::shared_ptr<detail::BusSubscriberState> state,
                                 std::vector<std::shared_ptr<detail::BusChannelState>> channels)
    : state_(std::move(state)), channels_(std::move(channels)) {}

BusSubscription::~BusSubscription() { close(); }

std::optional<BusEvent> BusSubscription::pop(std::chrono::milliseconds timeout) {
  detail::BusSubscriberState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  s.cv.wait_for(lock, timeout, [&] { return !s.buffer.empty() || s.closed; });
  if (s.buffer.empty()) return std::nullopt;
  return s.take();
}

std::optional<BusEvent> BusSubscription::try_pop() {
  detail::BusSubscriberState& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.buffer.empty()) return std::nullopt;
  return s.take();
}

void BusSubscription::close() noexcept {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->closed) return;
    state_->closed = true;
  }
  state_->cv.notify_all();
  // Taking each channel's lock also waits for a publish that is offering to us right now.
  for (const auto& c : channels_) c->remove(state_.get());
}

bool BusSubscription::closed() const noexcept {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->closed;
}

std::uint64_t BusSubscription::dropped() const noexcept {
  return state_->dropped.load(std::memory_order_relaxed);
}

std::size_t BusSubscription::capacity() const noexcept { return state_->capacity; }

const std::vector<std::string>& BusSubscription::channels() const noexcept { return names_; }

// ---- Bus ---------------------------------------------------------------------------------------

struct Bus::Impl {
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<detail::BusChannelState>, std::less<>> channels;

  std::shared_ptr<detail::BusChannelState> get(std::string_view name) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = channels.find(name);
    if (it == channels.end()) {
      it = channels
               .emplace(std::string(name),
                        std::make_shared<detail::BusChannelState>(std::string(name)))
               .first;
    }
    return it->second;
  }
  std::shared_ptr<detail::BusChannelState> find(std::string_view name) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = channels.find(name);
    return it == channels.end() ? nullptr : it->second;
  }
};

Bus::Bus() : impl_(std::make_unique<Impl>()) {
  for (std::string_view n :
       {bus_channels::kMessageTo, bus_channels::kMessageFrom, bus_channels::kNewMember}) {
    impl_->get(n);
  }
}

Bus::~Bus() = default;

BusChannel Bus::channel(std::string_view name) { return BusChannel(impl_->get(name)); }

std::unique_ptr<BusSubscription> Bus::subscribe(const std::vector<std::string>& channels,
                                                std::size_t buffer_size) {
  return subscribe(channels, buffer_size, 0);
}

std::unique_ptr<BusSubscription> Bus::subscribe(const std::vector<std::string>& channels,
                                                std::size_t buffer_size, std::size_t max_bytes) {
  if (channels.empty()) throw std::invalid_argument("Bus::subscribe: no channel");
  auto state = std::make_shared<detail::BusSubscriberState>(std::max<std::size_t>(1, buffer_size),
                                                            max_bytes);
  std::vector<std::shared_ptr<detail::BusChannelState>> states;
  std::vector<std::string> names;
  for (const std::string& n : channels) {
    if (std::find(names.begin(), names.end(), n) != names.end()) continue;
    names.push_back(n);
    states.push_back(impl_->get(n));
  }
  std::unique_ptr<BusSubscription> sub(new BusSubscription(state, states));
  sub->names_ = std::move(names);
  for (const auto& c : states) c->add(state);
  return sub;
}

void Bus::publish(std::string_view name, std::string data) {
  if (auto c = impl_->find(name)) {
    if (c->subscriber_count.load(std::memory_order_relaxed) != 0) c->publish(std::move(data));
  }
}

bool Bus::has_subscribers(std::string_view name) const {
  auto c = impl_->find(name);
  return c && c->subscriber_count.load(std::memory_order_relaxed) != 0;
}

std::uint64_t Bus::dropped(std::string_view name) const {
  auto c = impl_->find(name);
  return c ? c->dropped.load(std::memory_order_relaxed) : 0;
}

std::map<std::string, std::uint64_t> Bus::dropped_by_channel() const {
  std::map<std::string, std::uint64_t> out;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (const auto& [name, c] : impl_->channels) {
    out.emplace(name, c->dropped.load(std::memory_order_relaxed));
  }
  return out;
}

std::vector<std::string> Bus::channel_names() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (const auto& entry : impl_->channels) out.push_back(entry.first);
  return out;
}

}  // namespace brokerha
