// SPDX-License-Identifier: Apache-2.0
#pragma once
// The running cluster's keyring, for the library's own parts (the HTTP API signs and checks
// /proxy requests with it). Internal: the keys never leave the library through its headers.

#include <string>
#include <vector>

namespace brokerha {
class Broker;
namespace detail {

/// The keyring in use (the first key encrypts); empty without a cluster or in a cluster run
/// without a key. Any thread.
std::vector<std::string> cluster_keys(const Broker& broker);

}  // namespace detail
}  // namespace brokerha
