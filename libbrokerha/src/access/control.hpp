// SPDX-License-Identifier: Apache-2.0
#pragma once
// Who may do what: the embedder's hooks (authentication, ACL, events) and the built-in rules
// they fall back on, in one place. The hooks chain in registration order and the first answer
// that is not `defer` wins; when every hook defers, the rules decide.
//
// Thread safety: the hook lists are set before the broker starts and only read after. The
// rules can be swapped at any time (a reload); the old ones are kept until this object is
// destroyed, so a reference from rules() stays valid during any check on any thread.

#include <brokerha/hooks.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "access/rules.hpp"

namespace brokerha::access {

class Control {
 public:
  explicit Control(std::unique_ptr<Rules> rules) { set_rules(std::move(rules)); }

  std::vector<std::shared_ptr<AuthHook>> auth_hooks;
  std::vector<std::shared_ptr<AclHook>> acl_hooks;
  std::vector<std::shared_ptr<EventHook>> event_hooks;

  /// The built-in rules in force (any thread).
  const Rules& rules() const noexcept { return *rules_.load(std::memory_order_acquire); }
  void set_rules(std::unique_ptr<Rules> rules);

  /// True when neither a hook nor a rule can refuse a delivery: the read check is skipped.
  bool deliveries_unchecked() const noexcept {
    return acl_hooks.empty() && rules().acl_allows_everything();
  }
  /// The read check for one delivery: the hooks' synchronous check_delivery(), then the
  /// rules. Runs on the subscriber's shard; never waits.
  bool delivery_allowed(const Identity& who, std::string_view topic) const;
  /// The rules' decision once every hook deferred.
  bool rules_allow(const Identity& who, std::string_view name, Access access, bool is_filter) const;

  /// Calls `f(hook)` on every event hook.
  template <class F>
  void notify(F&& f) const {
    for (const auto& h : event_hooks) f(*h);
  }

  /// Runs a hook chain: `ask(hook, done)` asks one hook, which answers through `done` inline
  /// or later from any thread; `k` gets the first answer that is not `defer` (or `defer`).
  /// A hook that answers later resumes the chain through `post`, which must run its function
  /// on the caller's thread, so `k` always runs there.
  using Post = std::function<void(std::function<void()>)>;
  template <class Hook, class Ask>
  static void decide(const std::vector<std::shared_ptr<Hook>>& hooks, Ask ask,
                     std::function<void(Decision)> k, Post post);

 private:
  std::atomic<const Rules*> rules_{nullptr};
  std::mutex rules_mutex_;  // guards history_
  std::vector<std::unique_ptr<Rules>> history_;
};

template <class Hook, class Ask>
void Control::decide(const std::vector<std::shared_ptr<Hook>>& hooks, Ask ask,
                     std::function<void(Decision)> k, Post post) {
  // `state` of one question: 0 waiting, 1 answered, 2 the asking call returned.
  struct Chain : std::enable_shared_from_this<Chain> {
    Chain(std::vector<std::shared_ptr<Hook>> h, Ask a, std::function<void(Decision)> kk, Post p)
        : hooks(std::move(h)), ask(std::move(a)), k(std::move(kk)), post(std::move(p)) {}

    std::vector<std::shared_ptr<Hook>> hooks;
    Ask ask;
    std::function<void(Decision)> k;
    Post post;
    std::size_t index = 0;

    void run() {
      while (index < hooks.size()) {
        struct Slot {
          std::atomic<int> state{0};
          Decision decision = Decision::defer;
        };
        auto slot = std::make_shared<Slot>();
        auto self = this->shared_from_this();
        ask(*hooks[index], [self, slot](Decision d) {
          slot->decision = d;
          if (slot->state.exchange(1) == 2) {
            self->post([self, slot] { self->answered(slot->decision); });
          }
        });
        if (slot->state.exchange(2) != 1) return;  // answers later
        if (slot->decision != Decision::defer) {
          k(slot->decision);
          return;
        }
        ++index;
      }
      k(Decision::defer);
    }
    void answered(Decision d) {
      if (d != Decision::defer) {
        k(d);
        return;
      }
      ++index;
      run();
    }
  };
  std::make_shared<Chain>(hooks, std::move(ask), std::move(k), std::move(post))->run();
}

}  // namespace brokerha::access
