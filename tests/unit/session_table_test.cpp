// SPDX-License-Identifier: Apache-2.0
// session::SessionTable (the shard's sessions by client id), checked against std::map as a model
// through inserts, lookups and backward-shift deletions, with growth along the way.

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <random>
#include <string>

#include "session/client_session.hpp"

using brokerha::session::ClientSession;
using brokerha::session::ClientSessionPtr;
using brokerha::session::SessionTable;

TEST_CASE("session table: insert find erase") {
  SessionTable t;
  CHECK(t.find("a") == nullptr);
  auto a = std::make_shared<ClientSession>("a", 0);
  auto b = std::make_shared<ClientSession>("b", 0);
  t.insert(a);
  t.insert(b);
  REQUIRE(t.find("a") != nullptr);
  CHECK(t.find("a")->get() == a.get());
  CHECK(t.contains("b"));
  CHECK_FALSE(t.contains("c"));
  // Erasing a session that is not the registered one for its id does nothing.
  auto other_a = std::make_shared<ClientSession>("a", 0);
  CHECK_FALSE(t.erase(other_a.get()));
  CHECK(t.erase(a.get()));
  CHECK_FALSE(t.contains("a"));
  CHECK(t.contains("b"));
  CHECK(t.size() == 1);
}

TEST_CASE("session table: random operations match std::map") {
  std::mt19937 rng(7);
  SessionTable t;
  std::map<std::string, ClientSessionPtr> model;
  for (int step = 0; step < 50000; ++step) {
    const std::string id = "client-" + std::to_string(rng() % 3000);
    const bool present = model.count(id) != 0;
    if (rng() % 3 != 0) {
      if (!present) {
        auto s = std::make_shared<ClientSession>(id, 0);
        model[id] = s;
        t.insert(s);
      }
    } else if (present) {
      REQUIRE(t.erase(model[id].get()));
      model.erase(id);
    }
    const ClientSessionPtr* found = t.find(id);
    REQUIRE((found != nullptr) == (model.count(id) != 0));
    if (found != nullptr) REQUIRE(found->get() == model[id].get());
    REQUIRE(t.size() == model.size());
  }
  std::size_t seen = 0;
  t.for_each([&](const ClientSessionPtr& s) {
    ++seen;
    CHECK(model.at(s->state.client_id()).get() == s.get());
  });
  CHECK(seen == model.size());
  for (const auto& [id, s] : model) CHECK(t.find(id) != nullptr);
}
