// SPDX-License-Identifier: Apache-2.0
// util::Ring: the FIFO behind session queues, checked against std::deque as a model.

#include "util/ring.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

using brokerha::util::Ring;

namespace {

template <typename T>
std::vector<T> contents(const Ring<T>& r) {
  return std::vector<T>(r.begin(), r.end());
}

}  // namespace

TEST_CASE("ring: an empty ring owns no array until the first push") {
  Ring<std::string> r;
  CHECK(r.empty());
  CHECK(r.capacity() == 0);
  r.push_back("a");
  CHECK(r.capacity() == 4);
  r.pop_front();
  CHECK(r.empty());
  CHECK(r.capacity() == 4);  // kept: a queue going 0 -> 1 -> 0 does not allocate each time
  r.shrink_to_fit();
  CHECK(r.capacity() == 0);
  r.push_back("b");
  CHECK(r.front() == "b");
  r.shrink_to_fit();  // not empty: kept
  CHECK(r.capacity() == 4);
}

TEST_CASE("ring: wraps around and grows keeping the order") {
  Ring<int> r;
  for (int i = 0; i < 3; ++i) r.push_back(i);
  r.pop_front();
  r.pop_front();
  for (int i = 3; i < 6; ++i) r.push_back(i);  // wraps inside the 4 slots
  CHECK(r.capacity() == 4);
  CHECK(contents(r) == std::vector<int>{2, 3, 4, 5});
  r.push_back(6);  // grows while wrapped
  CHECK(r.capacity() == 8);
  CHECK(contents(r) == std::vector<int>{2, 3, 4, 5, 6});
  CHECK(r.front() == 2);
  CHECK(r.back() == 6);
  CHECK(r[2] == 4);
}

TEST_CASE("ring: erase and erase_if keep the order and destroy what they remove") {
  auto counter = std::make_shared<int>(0);
  Ring<std::shared_ptr<int>> r;
  for (int i = 0; i < 10; ++i) r.push_back(counter);
  CHECK(counter.use_count() == 11);
  auto it = r.erase(r.begin() + 3);
  CHECK(it.index() == 3);
  CHECK(r.size() == 9);
  CHECK(counter.use_count() == 10);
  Ring<int> n;
  for (int i = 0; i < 10; ++i) n.push_back(i);
  n.pop_front();                                             // head moves: indexes wrap
  n.push_back(10);                                           // 1..10
  CHECK(n.erase_if([](int v) { return v % 3 == 0; }) == 3);  // 3, 6, 9
  CHECK(contents(n) == std::vector<int>{1, 2, 4, 5, 7, 8, 10});
  auto found = std::find(n.begin(), n.end(), 7);
  REQUIRE(found != n.end());
  n.erase(found);
  CHECK(contents(n) == std::vector<int>{1, 2, 4, 5, 8, 10});
  r.clear();
  CHECK(counter.use_count() == 1);
}

TEST_CASE("ring: random operations match std::deque") {
  std::mt19937 rng(12345);
  Ring<std::string> r;
  std::deque<std::string> model;
  for (int step = 0; step < 20000; ++step) {
    const auto op = rng() % 10;
    if (op < 5) {
      const std::string v = "value-" + std::to_string(step);  // heap-allocated: ASan sees misuse
      r.push_back(v);
      model.push_back(v);
    } else if (op < 8) {
      if (model.empty()) continue;
      REQUIRE(r.front() == model.front());
      r.pop_front();
      model.pop_front();
    } else if (op == 8) {
      if (model.empty()) continue;
      const std::size_t i = rng() % model.size();
      r.erase(r.begin() + static_cast<std::ptrdiff_t>(i));
      model.erase(model.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      const char last = static_cast<char>('0' + rng() % 10);
      auto pred = [last](const std::string& s) { return s.back() == last; };
      r.erase_if(pred);
      model.erase(std::remove_if(model.begin(), model.end(), pred), model.end());
      if (model.empty()) r.shrink_to_fit();
    }
    REQUIRE(r.size() == model.size());
  }
  CHECK(std::equal(r.begin(), r.end(), model.begin(), model.end()));
  Ring<std::string> copy = r;
  CHECK(std::equal(copy.begin(), copy.end(), model.begin(), model.end()));
  Ring<std::string> moved = std::move(copy);
  CHECK(moved.size() == model.size());
}
