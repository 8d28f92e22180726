// SPDX-License-Identifier: Apache-2.0
#include "access/control.hpp"

namespace brokerha::access {

void Control::set_rules(std::unique_ptr<Rules> rules) {
  std::lock_guard<std::mutex> lock(rules_mutex_);
  rules_.store(rules.get(), std::memory_order_release);
  history_.push_back(std::move(rules));
}

bool Control::delivery_allowed(const Identity& who, std::string_view topic) const {
  if (!acl_hooks.empty()) {
    AclRequest req;
    req.client_id = who.client_id;
    req.username = who.username;
    req.remote_address = who.remote_ip;
    req.topic = topic;
    req.access = Access::read;
    for (const auto& hook : acl_hooks) {
      const Decision d = hook->check_delivery(req);
      if (d != Decision::defer) return d == Decision::allow;
    }
  }
  return rules().allows(who, topic, Access::read, false);
}

bool Control::rules_allow(const Identity& who, std::string_view name, Access access,
                          bool is_filter) const {
  const Rules& r = rules();
  if (r.acl_allows_everything()) return true;
  return r.allows(who, name, access, is_filter);
}

}  // namespace brokerha::access
