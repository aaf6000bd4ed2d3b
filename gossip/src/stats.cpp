#include "weft/gossip/stats.h"

#include <array>
#include <cstring>
#include <type_traits>

namespace weft::gossip {

// Every field is a uint64 counter (or an array of them), so the struct is summed as one array
// of counters: a counter added later is summed without touching this.
GossipStats& GossipStats::operator+=(const GossipStats& o) {
  static_assert(std::is_trivially_copyable_v<GossipStats> && std::is_standard_layout_v<GossipStats>);
  static_assert(sizeof(GossipStats) % sizeof(std::uint64_t) == 0 && alignof(GossipStats) == alignof(std::uint64_t));
  constexpr std::size_t kCounters = sizeof(GossipStats) / sizeof(std::uint64_t);
  std::array<std::uint64_t, kCounters> a{};
  std::array<std::uint64_t, kCounters> b{};
  std::memcpy(a.data(), this, sizeof(GossipStats));
  std::memcpy(b.data(), &o, sizeof(GossipStats));
  for (std::size_t i = 0; i < kCounters; ++i) a[i] += b[i];
  std::memcpy(static_cast<void*>(this), a.data(), sizeof(GossipStats));
  return *this;
}

}  // namespace weft::gossip
