// SPDX-License-Identifier: Apache-2.0
#include "session/client_session.hpp"

namespace brokerha::session {

const ClientSessionPtr* SessionTable::find(std::string_view id) const noexcept {
  if (size_ == 0) return nullptr;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = home(id);; i = (i + 1) & mask) {
    const ClientSessionPtr& s = slots_[i];
    if (!s) return nullptr;
    if (s->state.client_id() == id) return &s;
  }
}

void SessionTable::insert(ClientSessionPtr s) {
  if ((size_ + 1) * 4 > slots_.size() * 3) grow();
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(s->state.client_id());
  while (slots_[i]) i = (i + 1) & mask;
  slots_[i] = std::move(s);
  ++size_;
}

bool SessionTable::erase(const ClientSession* s) noexcept {
  if (size_ == 0 || s == nullptr) return false;
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(s->state.client_id());
  while (slots_[i] && slots_[i].get() != s) i = (i + 1) & mask;
  if (!slots_[i]) return false;
  slots_[i].reset();
  --size_;
  // Backward shift: move up every later entry of the run whose home is not in (i, j].
  for (std::size_t j = (i + 1) & mask; slots_[j]; j = (j + 1) & mask) {
    const std::size_t h = home(slots_[j]->state.client_id());
    const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (stays) continue;
    slots_[i] = std::move(slots_[j]);
    i = j;
  }
  return true;
}

void SessionTable::grow() {
  std::vector<ClientSessionPtr> old = std::move(slots_);
  slots_.clear();
  slots_.resize(old.empty() ? 16 : old.size() * 2);
  size_ = 0;
  for (ClientSessionPtr& s : old) {
    if (s) insert(std::move(s));
  }
}

}  // namespace brokerha::session
