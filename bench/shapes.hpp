// SPDX-License-Identifier: Apache-2.0
#pragma once
// brokerha-bench's traffic shapes: which connections a run opens, to which broker, on which
// topic, and when a fixed-rate publisher starts its schedule.
//  - fan-in: P publishers -> one topic -> S subscribers (default 10 -> 1);
//  - pairs: publisher i -> <prefix>/t/i -> subscriber i (default 10 pairs);
//  - fan-out: the fan-in topology with the opposite counts (default 1 -> 50);
//  - idle (--idle N): N connections that only CONNECT, to the subscribers' broker;
//  - fixed rate (--rate R, the latency scenarios): the publishers' schedules spread evenly
//    over one interval.
// Publishers connect to --pub-host/--pub-port and subscribers to --sub-host/--sub-port, so a
// shape spans two cluster nodes when those differ. The default counts are set with the
// options (options.cpp). Called on the bench's one thread before and when publishing starts.

#include <cstdint>
#include <memory>
#include <vector>

#include "asio_include.hpp"

namespace brokerha::bench {

class Conn;
class Engine;

/// The idle connections of --idle N (engine.idles).
void add_idle_connections(Engine& engine, const tcp::endpoint& sub_ep);

/// The topics, publishers and subscribers of --shape (engine.topics, pubs, subs).
void add_traffic_connections(Engine& engine, const tcp::endpoint& pub_ep,
                             const tcp::endpoint& sub_ep);

/// Rate mode: publisher i of n starts its schedule at start_ns + i/n of one interval.
void spread_rate_schedules(const std::vector<std::unique_ptr<Conn>>& pubs, std::uint64_t start_ns,
                           double rate);

}  // namespace brokerha::bench
