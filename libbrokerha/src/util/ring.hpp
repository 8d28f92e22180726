// SPDX-License-Identifier: Apache-2.0
#pragma once
// Ring<T>: a FIFO queue on one power-of-two array, for the per-session and per-connection
// queues.
//
// Why not std::deque: libstdc++'s deque allocates a 64-byte map and a 512-byte block as soon
// as it is constructed, so every idle session paid ~1.2 KiB for two empty queues (see
// docs/benchmarks.md: memory per idle connection). A Ring allocates nothing until the first push,
// grows by doubling, and keeps its array when it empties, so a busy queue that goes
// 0 -> 1 -> 0 per message does not allocate per message. shrink_to_fit() hands an empty
// array back (the owner calls it when the queue has been idle).
//
// Iterators are random access and are invalidated by every push and erase, like a vector's.
//
// Thread safety: none; one owner thread.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace brokerha::util {

template <typename T>
class Ring {
 public:
  template <bool Const>
  class Iter {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<Const, const T*, T*>;
    using reference = std::conditional_t<Const, const T&, T&>;
    using RingPtr = std::conditional_t<Const, const Ring*, Ring*>;

    Iter() = default;
    Iter(RingPtr r, std::size_t i) : r_(r), i_(i) {}
    operator Iter<true>() const { return Iter<true>(r_, i_); }  // NOLINT: as std iterators

    reference operator*() const { return (*r_)[i_]; }
    pointer operator->() const { return &(*r_)[i_]; }
    reference operator[](difference_type n) const {
      return (*r_)[static_cast<std::size_t>(static_cast<difference_type>(i_) + n)];
    }
    Iter& operator++() {
      ++i_;
      return *this;
    }
    Iter operator++(int) {
      Iter t = *this;
      ++i_;
      return t;
    }
    Iter& operator--() {
      --i_;
      return *this;
    }
    Iter operator--(int) {
      Iter t = *this;
      --i_;
      return t;
    }
    Iter& operator+=(difference_type n) {
      i_ = static_cast<std::size_t>(static_cast<difference_type>(i_) + n);
      return *this;
    }
    Iter& operator-=(difference_type n) { return *this += -n; }
    friend Iter operator+(Iter a, difference_type n) { return a += n; }
    friend Iter operator+(difference_type n, Iter a) { return a += n; }
    friend Iter operator-(Iter a, difference_type n) { return a -= n; }
    friend difference_type operator-(const Iter& a, const Iter& b) {
      return static_cast<difference_type>(a.i_) - static_cast<difference_type>(b.i_);
    }
    friend bool operator==(const Iter& a, const Iter& b) { return a.i_ == b.i_; }
    friend bool operator!=(const Iter& a, const Iter& b) { return a.i_ != b.i_; }
    friend bool operator<(const Iter& a, const Iter& b) { return a.i_ < b.i_; }
    friend bool operator>(const Iter& a, const Iter& b) { return a.i_ > b.i_; }
    friend bool operator<=(const Iter& a, const Iter& b) { return a.i_ <= b.i_; }
    friend bool operator>=(const Iter& a, const Iter& b) { return a.i_ >= b.i_; }

    std::size_t index() const noexcept { return i_; }

   private:
    RingPtr r_ = nullptr;
    std::size_t i_ = 0;
  };
  using iterator = Iter<false>;
  using const_iterator = Iter<true>;
  using value_type = T;

  Ring() noexcept = default;
  Ring(Ring&& o) noexcept { swap(o); }
  Ring& operator=(Ring&& o) noexcept {
    Ring(std::move(o)).swap(*this);
    return *this;
  }
  Ring(const Ring& o) {
    reserve(o.size_);
    for (const T& v : o) push_back(v);
  }
  Ring& operator=(const Ring& o) {
    if (this != &o) {
      Ring t(o);
      swap(t);
    }
    return *this;
  }
  ~Ring() {
    clear();
    release();
  }

  void swap(Ring& o) noexcept {
    std::swap(slots_, o.slots_);
    std::swap(cap_, o.cap_);
    std::swap(head_, o.head_);
    std::swap(size_, o.size_);
  }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return cap_; }

  T& operator[](std::size_t i) noexcept { return slot(i); }
  const T& operator[](std::size_t i) const noexcept { return slot(i); }
  T& front() noexcept { return slot(0); }
  const T& front() const noexcept { return slot(0); }
  T& back() noexcept { return slot(size_ - 1); }
  const T& back() const noexcept { return slot(size_ - 1); }

  iterator begin() noexcept { return {this, 0}; }
  iterator end() noexcept { return {this, size_}; }
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, size_}; }

  template <typename... A>
  T& emplace_back(A&&... args) {
    if (size_ == cap_) reserve(cap_ == 0 ? 4 : cap_ * 2);
    T* p = ::new (static_cast<void*>(raw(size_))) T(std::forward<A>(args)...);
    ++size_;
    return *p;
  }
  void push_back(T v) { emplace_back(std::move(v)); }

  void pop_front() noexcept {
    slot(0).~T();
    head_ = (head_ + 1) & (cap_ - 1);  // cap_ != 0 while not empty
    if (--size_ == 0) head_ = 0;
  }

  /// Removes the element at `pos` (keeps the order); returns the iterator after it.
  iterator erase(const_iterator pos) {
    const std::size_t i = pos.index();
    for (std::size_t k = i; k + 1 < size_; ++k) slot(k) = std::move(slot(k + 1));
    pop_back();
    return {this, i};
  }

  /// Removes every element matching `pred` (keeps the order); returns how many.
  template <typename Pred>
  std::size_t erase_if(Pred pred) {
    std::size_t kept = 0;
    for (std::size_t k = 0; k < size_; ++k) {
      if (pred(slot(k))) continue;
      if (kept != k) slot(kept) = std::move(slot(k));
      ++kept;
    }
    const std::size_t removed = size_ - kept;
    while (size_ > kept) pop_back();
    return removed;
  }

  void clear() noexcept {
    while (size_ != 0) pop_back();
    head_ = 0;
  }

  /// Gives an empty ring's array back.
  void shrink_to_fit() noexcept {
    if (size_ != 0 || slots_ == nullptr) return;
    release();
  }

  void reserve(std::size_t n) {
    if (n <= cap_) return;
    std::uint32_t cap = cap_ == 0 ? 4 : cap_;
    while (cap < n) cap *= 2;
    Storage* fresh = new Storage[cap];
    for (std::size_t k = 0; k < size_; ++k) {
      ::new (static_cast<void*>(&fresh[k])) T(std::move(slot(k)));
      slot(k).~T();
    }
    release();
    slots_ = fresh;
    cap_ = cap;
    head_ = 0;
  }

 private:
  struct alignas(T) Storage {
    unsigned char bytes[sizeof(T)];
  };

  T* raw(std::size_t i) noexcept { return reinterpret_cast<T*>(&slots_[(head_ + i) & (cap_ - 1)]); }
  T& slot(std::size_t i) noexcept { return *std::launder(raw(i)); }
  const T& slot(std::size_t i) const noexcept {
    return *std::launder(reinterpret_cast<const T*>(&slots_[(head_ + i) & (cap_ - 1)]));
  }
  void pop_back() noexcept {
    slot(size_ - 1).~T();
    --size_;
  }
  void release() noexcept {
    delete[] slots_;
    slots_ = nullptr;
    cap_ = 0;
    head_ = 0;
  }

  // 24 bytes: one Ring per session queue, and idle sessions count (see the top).
  Storage* slots_ = nullptr;
  std::uint32_t cap_ = 0;  // 0 or a power of two
  std::uint32_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace brokerha::util
