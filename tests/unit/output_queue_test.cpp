// SPDX-License-Identifier: Apache-2.0
// protocol::OutputQueue: what one connection has to send. Small shared encodings are copied,
// so a burst of them leaves as one buffer; large ones are held by reference, never copied;
// the byte count and the order of the bytes are what was queued.

#include "protocol/output_queue.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "message/message.hpp"

using brokerha::message::Message;
using brokerha::message::MessagePtr;
using brokerha::protocol::Chunk;
using brokerha::protocol::OutputQueue;

namespace {

// The bytes the driver would write, in order.
std::string bytes_of(const std::vector<Chunk>& chunks, const std::string& own) {
  std::string out;
  for (const Chunk& c : chunks) {
    if (c.shared != nullptr) {
      out += *c.shared;
    } else {
      out.append(own, c.begin, c.end - c.begin);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("output queue: small shared encodings are copied into one buffer") {
  const MessagePtr m = std::make_shared<Message>();
  const std::string a(70, 'a');
  const std::string b(70, 'b');
  OutputQueue q;
  CHECK(q.shared(m, &a) == 70);
  std::string& own = q.own();
  const std::size_t begin = own.size();
  own += "ack";
  CHECK(q.own_appended(begin) == 3);
  CHECK(q.shared(m, &b) == 70);
  CHECK(q.bytes() == 143);
  CHECK(m.use_count() == 1);  // nothing queued holds the message

  std::vector<Chunk> chunks;
  std::string taken;
  q.take(chunks, taken);
  CHECK(q.empty());
  CHECK(q.bytes() == 0);
  REQUIRE(chunks.size() == 1);  // one buffer for the whole burst
  CHECK(chunks[0].shared == nullptr);
  CHECK(bytes_of(chunks, taken) == a + "ack" + b);
}

TEST_CASE("output queue: a large shared encoding is held by reference, in order") {
  const MessagePtr m = std::make_shared<Message>();
  const std::string small(10, 's');
  const std::string large(OutputQueue::kShareBytes + 1, 'L');
  const std::string edge(OutputQueue::kShareBytes, 'e');
  OutputQueue q;
  q.shared(m, &small);
  q.shared(m, &large);
  q.shared(m, &edge);  // at the threshold: still copied
  CHECK(q.bytes() == small.size() + large.size() + edge.size());
  CHECK(m.use_count() == 2);  // only the large one keeps the message

  std::vector<Chunk> chunks;
  std::string taken;
  q.take(chunks, taken);
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[1].shared == &large);  // not copied
  CHECK(chunks[0].shared == nullptr);
  CHECK(chunks[2].shared == nullptr);
  CHECK(bytes_of(chunks, taken) == small + large + edge);
  chunks.clear();
  CHECK(m.use_count() == 1);
}
