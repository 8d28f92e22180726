// SPDX-License-Identifier: Apache-2.0
#pragma once
// The bytes one client connection has to send, in order, until its driver writes them:
// packets encoded for this client alone (one growing string), and encodings shared by every
// subscriber of a QoS 0 message. A shared encoding up to kShareBytes is copied into the
// string: a run of small messages then leaves as one buffer (one write call, where one
// buffer per message would cost a write call per handful of them) and the message's
// reference count is not touched by this thread. A larger one is held by reference, never
// copied. The driver takes the whole queue at once for one gathered write.
//
// Thread: the connection's shard only.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "message/message.hpp"

namespace brokerha::protocol {

struct Chunk {
  message::MessagePtr keep;             // keeps `shared` alive
  const std::string* shared = nullptr;  // a message's cached encoding, or null
  std::size_t begin = 0;                // own bytes [begin, end) when `shared` is null
  std::size_t end = 0;

  std::size_t size() const noexcept { return shared != nullptr ? shared->size() : end - begin; }
};

class OutputQueue {
 public:
  bool empty() const noexcept { return chunks_.empty(); }
  /// Bytes queued here (not yet taken by the driver).
  std::size_t bytes() const noexcept { return bytes_; }

  /// Where a packet for this client alone is encoded: append to it, then call own_appended().
  std::string& own() noexcept { return own_; }
  /// The bytes own() grew by since `begin` are a packet (or several) to send.
  std::size_t own_appended(std::size_t begin) {
    const std::size_t end = own_.size();
    if (!chunks_.empty() && chunks_.back().shared == nullptr && chunks_.back().end == begin) {
      chunks_.back().end = end;
    } else {
      chunks_.push_back(Chunk{nullptr, nullptr, begin, end});
    }
    bytes_ += end - begin;
    return end - begin;
  }
  /// Shared encodings up to this size are copied (see the top of this file).
  static constexpr std::size_t kShareBytes = 2048;

  /// A shared encoding, sent as it is: copied when small, else held by reference.
  std::size_t shared(const message::MessagePtr& keep, const std::string* bytes) {
    if (bytes->size() <= kShareBytes) {
      const std::size_t begin = own_.size();
      own_.append(*bytes);
      return own_appended(begin);
    }
    chunks_.push_back(Chunk{keep, bytes, 0, 0});
    bytes_ += bytes->size();
    return bytes->size();
  }

  /// Hands everything queued to the driver (swapped into its buffers, which must be empty);
  /// the queue is empty afterwards and keeps the driver's old capacity.
  void take(std::vector<Chunk>& chunks, std::string& own) {
    chunks.swap(chunks_);
    own.swap(own_);
    chunks_.clear();
    own_.clear();
    bytes_ = 0;
  }
  /// Drops everything queued; returns its size.
  std::size_t clear() {
    const std::size_t n = bytes_;
    chunks_.clear();
    own_.clear();
    bytes_ = 0;
    return n;
  }

 private:
  std::vector<Chunk> chunks_;
  std::string own_;  // bytes encoded for this connection only
  std::size_t bytes_ = 0;
};

}  // namespace brokerha::protocol
