// SPDX-License-Identifier: Apache-2.0
// brokerha-bench's traffic shapes (shapes.hpp): the topics and connections of each shape and
// the fixed-rate schedules. Runs on the bench's one thread, before connecting and when
// publishing starts.

#include "shapes.hpp"

#include <cstddef>
#include <string>
#include <utility>

#include "client.hpp"
#include "engine.hpp"

namespace brokerha::bench {

void add_idle_connections(Engine& engine, const tcp::endpoint& sub_ep) {
  for (long i = 0; i < engine.opt.idle; ++i) {
    engine.idles.push_back(
        std::make_unique<Conn>(engine, Role::idle, static_cast<std::uint32_t>(i), sub_ep));
  }
}

void add_traffic_connections(Engine& engine, const tcp::endpoint& pub_ep,
                             const tcp::endpoint& sub_ep) {
  const Options& opt = engine.opt;
  std::vector<Topic>& topics = engine.topics;
  const std::size_t n_topics = opt.shape == Shape::pairs ? static_cast<std::size_t>(opt.pubs) : 1;
  topics.resize(n_topics);
  for (std::size_t t = 0; t < n_topics; ++t) {
    topics[t].name = opt.topic_prefix + "/t/" + std::to_string(t);
  }
  for (long i = 0; i < opt.pubs; ++i) {
    auto c = std::make_unique<Conn>(engine, Role::publisher, static_cast<std::uint32_t>(i), pub_ep);
    c->topic = &topics[opt.shape == Shape::pairs ? static_cast<std::size_t>(i) : 0];
    c->topic->pubs.push_back(c.get());
    engine.pubs.push_back(std::move(c));
  }
  for (long i = 0; i < opt.subs; ++i) {
    auto c =
        std::make_unique<Conn>(engine, Role::subscriber, static_cast<std::uint32_t>(i), sub_ep);
    c->topic = &topics[opt.shape == Shape::pairs ? static_cast<std::size_t>(i) : 0];
    c->topic->subs.push_back(c.get());
    c->trackers.resize(static_cast<std::size_t>(opt.pubs));
    engine.subs.push_back(std::move(c));
  }
}

void spread_rate_schedules(const std::vector<std::unique_ptr<Conn>>& pubs, std::uint64_t start_ns,
                           double rate) {
  const double interval = 1e9 / rate;
  for (std::size_t i = 0; i < pubs.size(); ++i) {
    pubs[i]->rate_origin_ns =
        start_ns + static_cast<std::uint64_t>(interval * static_cast<double>(i) /
                                              static_cast<double>(pubs.size()));
  }
}

}  // namespace brokerha::bench
