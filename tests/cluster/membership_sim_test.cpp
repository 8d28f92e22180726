// SPDX-License-Identifier: Apache-2.0
// The membership protocol core on the virtual-time network (tests/support/membership_sim.hpp):
// crash detection bounds, loss without false positives, large joins, graceful leave.
// Every scenario runs fixed seeds; a failing seed replays exactly. Figures are printed.

#include "support/membership_sim.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

using brokerha::test::MembershipSim;
namespace mb = brokerha::membership;
using namespace std::chrono_literals;

namespace {

double seconds(mb::Duration d) { return static_cast<double>(d.count()) / 1e6; }

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// n nodes, all joined through node 0 and converged.
void form(MembershipSim& sim, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) sim.add();
  for (std::size_t i = 0; i < n; ++i) sim.start(i);
  for (std::size_t i = 1; i < n; ++i) sim.join(i, 0);
  const bool converged = sim.run_until_true(
      [&] {
        for (std::size_t i = 0; i < n; ++i) {
          if (sim.node(i).core->members().size() != n) return false;
        }
        return true;
      },
      30s);
  REQUIRE(converged);
}

bool all_alive(MembershipSim& sim, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!sim.node(i).up) continue;
    const auto members = sim.node(i).core->members();
    if (members.size() != n) return false;
    for (const auto& m : members) {
      if (m.state != mb::NodeState::alive) return false;
    }
  }
  return true;
}

// Crash detection over seeds: the time from the crash to each survivor's Leave(dead) event.
std::vector<double> crash_detection(std::size_t n, int seeds, double hard_bound_s) {
  std::vector<double> times;
  for (int seed = 1; seed <= seeds; ++seed) {
    MembershipSim sim(static_cast<std::uint64_t>(seed));
    form(sim, n);
    sim.run_for(mb::Duration(5s + mb::Duration(static_cast<std::int64_t>(seed) * 37'000)));
    const std::size_t victim = static_cast<std::size_t>(seed) % n;
    const std::string name = "n" + std::to_string(victim);
    const mb::TimePoint crashed = sim.now();
    sim.crash(victim);
    auto detected = [&](std::size_t i) {
      for (const auto& s : sim.node(i).seen) {
        if (s.at >= crashed && s.name == name && s.kind == mb::MemberEvent::Kind::leave) {
          return true;
        }
      }
      return false;
    };
    const bool all = sim.run_until_true(
        [&] {
          for (std::size_t i = 0; i < n; ++i) {
            if (i != victim && !detected(i)) return false;
          }
          return true;
        },
        mb::Duration(static_cast<std::int64_t>(hard_bound_s * 1e6)));
    CHECK_MESSAGE(all, "seed " << seed << ": not every survivor detected the crash");
    for (std::size_t i = 0; i < n; ++i) {
      for (const auto& s : sim.node(i).seen) {
        if (i != victim && s.at >= crashed && s.name == name &&
            s.kind == mb::MemberEvent::Kind::leave) {
          CHECK(s.state == mb::NodeState::dead);
          times.push_back(seconds(s.at - crashed));
          break;
        }
      }
    }
  }
  return times;
}

// The SWIM/Lifeguard bound at broker-ha's knobs (T = 500 ms, suspicion_mult 3, max mult 6):
// the worst round-robin gap after a reshuffle (2n-3)T, the probe itself T, the longest
// suspicion timer (no confirmation: max = 6 * 3 * max(1, log10 n) * T), and 1 s of dissemination.
double hard_bound(std::size_t n) {
  const double t = 0.5;
  const double min = 3.0 * std::max(1.0, std::log10(static_cast<double>(n))) * t;
  return static_cast<double>(2 * n - 3) * t + t + 6.0 * min + 1.0;
}

// Runs crash_detection over `seeds`, prints the figures, checks every detection against the
// bound, and returns the detection times.
std::vector<double> crash_report(std::size_t n, int seeds) {
  const double bound = hard_bound(n);
  const auto times = crash_detection(n, seeds, bound);
  REQUIRE(times.size() == static_cast<std::size_t>(seeds) * (n - 1));
  const double worst = *std::max_element(times.begin(), times.end());
  std::printf(
      "membership sim n=%zu crash: %zu detections over %d seeds, p50 %.2f s, p99 %.2f s, "
      "max %.2f s (bound %.1f s)\n",
      n, times.size(), seeds, percentile(times, 0.5), percentile(times, 0.99), worst, bound);
  CHECK(worst <= bound);
  return times;
}

}  // namespace

TEST_CASE("membership sim crash of 1 of 3 is detected by every survivor within the bound") {
  const auto times = crash_report(3, 30);
  CHECK(percentile(times, 0.5) <= 3.5);
  CHECK(percentile(times, 0.99) <= 5.0);
}

TEST_CASE("membership sim crash of 1 of 10 is detected by every survivor within the bound") {
  const auto times = crash_report(10, 20);
  CHECK(percentile(times, 0.99) <= 6.0);  // 12 probe intervals
}

TEST_CASE("membership sim 10 nodes at 10 percent loss for 5 minutes declare no one dead") {
  const int seeds = 20;
  int clean_seeds = 0;
  int false_dead = 0;
  std::uint64_t failed_probes = 0;
  std::uint64_t refutes = 0;
  double bandwidth = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    MembershipSim sim(static_cast<std::uint64_t>(seed) + 100);
    form(sim, 10);
    sim.run_for(5s);
    const std::uint64_t bytes_before = sim.bytes_out();
    const mb::TimePoint from = sim.now();
    sim.loss = 0.10;
    sim.run_for(300s);
    sim.loss = 0.0;
    if (seed == 1) bandwidth = static_cast<double>(sim.bytes_out() - bytes_before) / 300.0 / 10.0;
    int dead_here = 0;
    for (std::size_t i = 0; i < sim.size(); ++i) {
      const auto& st = sim.node(i).core->stats();
      failed_probes += st.probe_failures;
      refutes += st.refutes;
      for (const auto& s : sim.node(i).seen) {
        if (s.at >= from && s.kind == mb::MemberEvent::Kind::leave) ++dead_here;
      }
    }
    false_dead += dead_here;
    if (dead_here == 0) ++clean_seeds;
    // Whatever happened, the cluster is whole again once the loss stops.
    CHECK(sim.run_until_true([&] { return all_alive(sim, 10); }, 60s));
  }
  std::printf(
      "membership sim n=10 10%% loss 5 min x %d seeds: %d false dead events, %d/%d seeds "
      "clean, %.1f failed probes (new suspicions) and %.1f refutes per minute per cluster, %.0f "
      "B/s per node "
      "sent at 10%% loss\n",
      seeds, false_dead, clean_seeds, seeds, static_cast<double>(failed_probes) / seeds / 5.0,
      static_cast<double>(refutes) / seeds / 5.0, bandwidth);
  CHECK(clean_seeds * 100 >= seeds * 95);
  CHECK(false_dead <= 1);
}

TEST_CASE("membership sim steady state bandwidth at 10 nodes") {
  MembershipSim sim(7);
  form(sim, 10);
  sim.run_for(20s);
  const std::uint64_t before = sim.bytes_out();
  sim.run_for(60s);
  const double per_node = static_cast<double>(sim.bytes_out() - before) / 60.0 / 10.0;
  std::printf("membership sim n=10 steady state: %.0f B/s sent per node\n", per_node);
  CHECK(per_node < 3000);
  for (std::size_t i = 0; i < 10; ++i) CHECK(sim.node(i).core->stats().oversized == 0);
}

TEST_CASE("membership sim join of 50 nodes converges") {
  MembershipSim sim(11);
  const std::size_t n = 50;
  for (std::size_t i = 0; i < n; ++i) sim.add();
  sim.start(0);
  for (std::size_t i = 1; i < n; ++i) {
    sim.at(sim.now() + mb::Duration(static_cast<std::int64_t>(i) * 100'000), [&sim, i] {
      sim.start(i);
      sim.join(i, 0);
    });
  }
  sim.run_for(mb::Duration(static_cast<std::int64_t>(n) * 100'000));
  const mb::TimePoint last_join = sim.now();
  const bool converged = sim.run_until_true([&] { return all_alive(sim, n); }, 30s);
  std::printf("membership sim join of 50: all views complete %.2f s after the last join\n",
              seconds(sim.now() - last_join));
  CHECK(converged);
  // Alive messages of early joiners are retransmitted only mult*ceil(log10(n+1)) times while n
  // is small, so a few nodes miss some and learn them at their next push-pull, as with
  // memberlist: the bound is one push-pull interval plus dissemination.
  CHECK(seconds(sim.now() - last_join) <= 20.0);
}

TEST_CASE("membership sim graceful leave is seen by all as left") {
  MembershipSim sim(5);
  form(sim, 10);
  sim.run_for(3s);
  const mb::TimePoint left_at = sim.now();
  sim.leave(4);
  auto seen_left = [&] {
    for (std::size_t i = 0; i < 10; ++i) {
      if (i == 4) continue;
      const mb::Member* m = sim.node(i).core->find("n4");
      if (m == nullptr || m->state != mb::NodeState::left) return false;
    }
    return true;
  };
  CHECK(sim.run_until_true(seen_left, 5s));
  std::printf("membership sim leave: all 9 peers saw Left after %.2f s\n",
              seconds(sim.now() - left_at));
  CHECK(seconds(sim.now() - left_at) <= 1.0);
  CHECK(sim.run_until_true([&] { return sim.node(4).core->leave_done(); }, 5s));
  // No one ever reports it dead.
  for (std::size_t i = 0; i < 10; ++i) {
    for (const auto& s : sim.node(i).seen) {
      if (s.name == "n4" && s.kind == mb::MemberEvent::Kind::leave) {
        CHECK(s.state == mb::NodeState::left);
      }
    }
  }
}

TEST_CASE("membership sim a slow node does not get healthy nodes declared dead") {
  int false_dead = 0;
  int max_score_seen = 0;
  int score_after = 0;
  for (int seed = 1; seed <= 10; ++seed) {
    MembershipSim sim(static_cast<std::uint64_t>(seed) + 300);
    form(sim, 10);
    sim.run_for(5s);
    const mb::TimePoint from = sim.now();
    sim.node(3).inbound_delay = 1500ms;  // every message to n3 is handled 1.5 s late, for 30 s
    for (int s = 0; s < 30; ++s) {
      sim.run_for(1s);
      max_score_seen = std::max(max_score_seen, sim.node(3).core->health_score());
    }
    sim.node(3).inbound_delay = mb::Duration(0);
    sim.run_for(30s);
    score_after = std::max(score_after, sim.node(3).core->health_score());
    for (std::size_t i = 0; i < 10; ++i) {
      for (const auto& s : sim.node(i).seen) {
        if (s.at >= from && s.kind == mb::MemberEvent::Kind::leave && s.name != "n3") {
          ++false_dead;
        }
      }
    }
  }
  std::printf(
      "membership sim slow node (1.5 s inbound delay for 30 s) x 10 seeds: %d healthy "
      "nodes declared dead, slow node health score up to %d, %d 30 s after\n",
      false_dead, max_score_seen, score_after);
  CHECK(false_dead == 0);
  CHECK(max_score_seen >= 1);
  CHECK(score_after == 0);
}

TEST_CASE("membership sim a 5 and 5 partition longer than gossip_to_the_dead_time heals on join") {
  MembershipSim sim(21);
  form(sim, 10);
  sim.run_for(3s);
  sim.blocked = [](std::size_t a, std::size_t b) { return (a < 5) != (b < 5); };
  sim.run_for(60s);  // each side declares the other dead, then reaps it
  for (std::size_t i = 0; i < 10; ++i) CHECK(sim.node(i).core->members().size() == 5);
  sim.blocked = nullptr;
  const mb::TimePoint healed = sim.now();
  sim.join(0, 7);  // what discovery does on its next refresh
  CHECK(sim.run_until_true([&] { return all_alive(sim, 10); }, 30s));
  std::printf("membership sim 5|5 partition for 60 s: whole again %.2f s after the join\n",
              seconds(sim.now() - healed));
}
