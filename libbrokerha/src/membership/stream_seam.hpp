// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cluster data plane shares the membership's TCP port: a stream whose first byte is not a
// memberlist message type (0..13, 244) is handed over here, with its socket's descriptor and
// the bytes already read. Internal to the library (cluster::Node gives it to its links): the
// public Membership hands embedders no raw descriptor.

#include <brokerha/membership.hpp>

#include <functional>
#include <string_view>

namespace brokerha::membership {

/// Gets the connected socket's descriptor (the handler owns it and must close it) and the
/// bytes already read from it. Runs on the membership thread; must not block (hand the
/// descriptor to another thread).
using StreamHandler = std::function<void(int fd, std::string_view first_bytes)>;

/// Before Membership::start() only.
void set_stream_handler(Membership& membership, StreamHandler handler);

}  // namespace brokerha::membership
