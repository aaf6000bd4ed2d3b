#pragma once
// Indexed binary min-heap of node wake-up times: exactly one entry per scheduled node, updated in
// place (no stale entries to skip, memory O(N)). Ordered by (time, node id), so runs are
// deterministic.

#include <cstdint>
#include <vector>

#include "weft/base/time.h"

namespace weft::sim::detail {

class WakeHeap {
 public:
  static constexpr std::uint32_t kAbsent = ~std::uint32_t{0};

  explicit WakeHeap(std::size_t n) : pos_(n, kAbsent), key_(n) {}

  [[nodiscard]] bool empty() const { return heap_.empty(); }
  [[nodiscard]] std::uint32_t top() const { return heap_.front(); }
  [[nodiscard]] TimePoint top_time() const { return key_[heap_.front()]; }
  [[nodiscard]] bool contains(std::uint32_t id) const { return pos_[id] != kAbsent; }
  [[nodiscard]] TimePoint time_of(std::uint32_t id) const { return key_[id]; }

  // Schedules `id` at `t` (inserting, moving earlier or later).
  void set(std::uint32_t id, TimePoint t) {
    if (pos_[id] == kAbsent) {
      key_[id] = t;
      pos_[id] = static_cast<std::uint32_t>(heap_.size());
      heap_.push_back(id);
      up(pos_[id]);
      return;
    }
    const TimePoint old = key_[id];
    if (old == t) return;
    key_[id] = t;
    if (t < old) {
      up(pos_[id]);
    } else {
      down(pos_[id]);
    }
  }

  void erase(std::uint32_t id) {
    const std::uint32_t p = pos_[id];
    if (p == kAbsent) return;
    const std::uint32_t last = heap_.back();
    heap_.pop_back();
    pos_[id] = kAbsent;
    if (last == id) return;
    heap_[p] = last;
    pos_[last] = p;
    up(p);
    down(pos_[last]);
  }

 private:
  [[nodiscard]] bool less(std::uint32_t a, std::uint32_t b) const {
    return key_[a] != key_[b] ? key_[a] < key_[b] : a < b;
  }
  void place(std::uint32_t p, std::uint32_t id) {
    heap_[p] = id;
    pos_[id] = p;
  }
  void up(std::uint32_t p) {
    const std::uint32_t id = heap_[p];
    while (p > 0) {
      const std::uint32_t parent = (p - 1) / 2;
      if (!less(id, heap_[parent])) break;
      place(p, heap_[parent]);
      p = parent;
    }
    place(p, id);
  }
  void down(std::uint32_t p) {
    const std::uint32_t id = heap_[p];
    const auto n = static_cast<std::uint32_t>(heap_.size());
    for (;;) {
      std::uint32_t child = 2 * p + 1;
      if (child >= n) break;
      if (child + 1 < n && less(heap_[child + 1], heap_[child])) ++child;
      if (!less(heap_[child], id)) break;
      place(p, heap_[child]);
      p = child;
    }
    place(p, id);
  }

  std::vector<std::uint32_t> heap_;
  std::vector<std::uint32_t> pos_;
  std::vector<TimePoint> key_;
};

}  // namespace weft::sim::detail
