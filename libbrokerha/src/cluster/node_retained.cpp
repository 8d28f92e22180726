// SPDX-License-Identifier: Apache-2.0
// Node, continued: retained replication (snapshot for a joining node, digest repair). Runs on
// the control thread like the rest of Node.
#include <random>

#include "cluster/node.hpp"
#include "topic/topic.hpp"

namespace brokerha::cluster {

namespace {

std::shared_ptr<const std::string> shared(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

}  // namespace

void Node::request_snapshot() {
  if (synced_.load() || !snapshot_peer_.empty()) return;
  for (const auto& [name, p] : peers_) {
    if (!p.up) continue;
    snapshot_peer_ = name;
    send_control(name, Kind::snapshot_request, shared(encode_u64(0)));
    return;
  }
}

Digest Node::digest() const {
  Digest d{};
  core_.router().retained_for_each([&](const std::string& topic, const retained::Store::Entry& e) {
    if (topic::is_node_local(topic)) return;
    d[bucket_of(topic)] ^= entry_hash(topic, e.version, e.message == nullptr);
  });
  return d;
}

void Node::on_digest(Peer& p, const Digest& theirs) {
  const Digest mine = digest();
  std::vector<std::uint16_t> differ;
  for (std::size_t i = 0; i < kDigestBuckets; ++i) {
    if (mine[i] != theirs[i]) differ.push_back(static_cast<std::uint16_t>(i));
  }
  if (differ.empty()) return;
  send_entries(p.name, &differ, false);
  send_control(p, Kind::bucket_request, shared(encode_buckets(differ)));
}

void Node::send_entries(const std::string& peer, const std::vector<std::uint16_t>* buckets,
                        bool snapshot_end) {
  Peer* p = find_peer(peer);
  if (p == nullptr) return;
  std::vector<bool> wanted;
  if (buckets != nullptr) {
    wanted.assign(kDigestBuckets, false);
    for (std::uint16_t b : *buckets) wanted[b] = true;
  }
  // Copy the entries (shared messages) under the store's lock; each frame is encoded when the
  // link has room for it (the control lane), so a large set neither fills the link nor is
  // refused in part, and snapshot_end follows the last entry.
  struct Entries {
    std::vector<std::pair<std::string, retained::Store::Entry>> list;
    std::size_t next = 0;
  };
  auto st = std::make_shared<Entries>();
  core_.router().retained_for_each([&](const std::string& topic, const retained::Store::Entry& e) {
    if (topic::is_node_local(topic)) return;
    if (buckets != nullptr && !wanted[bucket_of(topic)]) return;
    st->list.emplace_back(topic, e);
  });
  send_stream(*p, [this, st](std::uint8_t& kind, std::shared_ptr<const std::string>& out) {
    const auto now = message::Message::Clock::now();
    std::string body;
    std::uint32_t count = 0;
    begin_retained(body);
    for (; st->next < st->list.size(); ++st->next) {
      const auto& [topic, e] = st->list[st->next];
      if (e.message && e.message->expired(now)) continue;
      // An entry that would take the frame past its size starts the next frame.
      const std::size_t size = topic.size() + (e.message ? e.message->payload.size() : 0) + 256;
      if (count != 0 && body.size() + size > frame_target_) break;
      append_retained(body, topic, e, now);
      ++count;
    }
    if (count == 0) {
      st->list = {};
      return Produced::done;
    }
    finish_retained(body, count);
    kind = static_cast<std::uint8_t>(Kind::retained_entries);
    out = shared(std::move(body));
    return Produced::frame;
  });
  if (snapshot_end) send_control(*p, Kind::snapshot_end, shared(encode_u64(0)));
}

void Node::apply_entries(std::string_view body) {
  std::vector<WireRetained> entries;
  if (!decode_retained(body, entries)) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const auto now = message::Message::Clock::now();
  for (const WireRetained& e : entries) {
    if (topic::is_node_local(e.topic) || !topic::is_valid_name(e.topic)) continue;
    message::MessagePtr m;
    if (e.message) {
      auto built = to_message(*e.message, now);
      built->retain = true;
      m = std::move(built);
    }
    if (core_.router().retained_apply(std::string(e.topic), m, e.version)) {
      retained_applied_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void Node::schedule_repair() {
  if (options_.repair_interval.count() <= 0) return;
  repair_timer_.expires_after(options_.repair_interval);
  repair_timer_.async_wait([this](const std::error_code& ec) {
    if (ec) return;
    if (synced_.load()) {
      std::vector<const Peer*> up;
      for (const auto& [name, p] : peers_) {
        if (p.up) up.push_back(&p);
      }
      if (!up.empty()) {
        static thread_local std::minstd_rand rng{std::random_device{}()};
        const Peer* p = up[rng() % up.size()];
        send_control(p->name, Kind::digest, shared(encode_digest(digest())));
      }
    }
    schedule_repair();
  });
}

}  // namespace brokerha::cluster
