#include "weft/sim/network.h"

#include <algorithm>
#include <cmath>

#include "weft/base/assert.h"

namespace weft::sim {

Endpoint endpoint_of(NodeId id) {
  WEFT_CHECK(id < kMaxSimNodes);
  const std::uint32_t v = id + 1;
  return Endpoint::v4(127, static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 8),
                      static_cast<std::uint8_t>(v), kSimPort);
}

std::optional<NodeId> node_of(const Endpoint& e) {
  if (e.family != Endpoint::Family::kV4 || e.port != kSimPort || e.ip[0] != 127) return std::nullopt;
  const std::uint32_t v = (std::uint32_t{e.ip[1]} << 16) | (std::uint32_t{e.ip[2]} << 8) | e.ip[3];
  if (v == 0) return std::nullopt;
  return v - 1;
}

SimNetwork::SimNetwork(std::size_t nodes, NetConfig cfg, std::uint64_t seed)
    : cfg_(cfg), seed_(seed), rng_(seed), group_(nodes, 0), down_(nodes, 0) {
  WEFT_CHECK(nodes <= kMaxSimNodes);
}

Duration SimNetwork::link_delay(NodeId a, NodeId b) const {
  if (a > b) std::swap(a, b);
  // A pure function of (seed, link): no per-link table for 10^8 links.
  std::uint64_t x = seed_ ^ ((std::uint64_t{a} << 32) | b);
  const double u = static_cast<double>(Rng::splitmix64(x) >> 11) * 0x1.0p-53;  // [0, 1)
  const double factor = 1.0 + cfg_.link_spread * (2.0 * u - 1.0);
  const auto ns = static_cast<double>(std::chrono::nanoseconds(cfg_.delay).count()) * factor;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::max(ns, 0.0)));
}

Duration SimNetwork::sample_delay(NodeId from, NodeId to, gossip::Channel channel) {
  Duration d = link_delay(from, to);
  if (cfg_.jitter > Duration::zero()) {
    const auto j = std::chrono::nanoseconds(cfg_.jitter).count();
    const auto span = static_cast<std::uint64_t>(2 * j + 1);
    d += std::chrono::nanoseconds(static_cast<std::int64_t>(rng_.below(span)) - j);
  }
  if (cfg_.reorder > 0.0 && rng_.uniform() < cfg_.reorder) {
    ++stats_.reordered;
    const auto r = std::chrono::nanoseconds(cfg_.reorder_delay).count();
    if (r > 0)
      d += std::chrono::nanoseconds(static_cast<std::int64_t>(rng_.below(static_cast<std::uint64_t>(r))));
  }
  if (channel == gossip::Channel::kReliable) d *= kReliableDelayFactor;
  // Never zero: a reply must not arrive at the instant of its request.
  return std::max<Duration>(d, 1us);
}

void SimNetwork::send(TimePoint now, NodeId from, NodeId to, gossip::Channel channel,
                      std::vector<std::byte>&& bytes) {
  WEFT_CHECK(from < size() && to < size());
  ++stats_.sent;
  stats_.sent_bytes += bytes.size();
  const bool reliable = channel == gossip::Channel::kReliable;
  if (reliable) ++stats_.reliable_sent;
  // With ICMP on, a datagram to a down node still travels: it draws the report on arrival.
  const bool refusable = cfg_.icmp && !reliable;
  if (down_[from] != 0 || (down_[to] != 0 && !refusable)) {
    ++stats_.to_down;
    return;
  }
  if (group_[from] != group_[to]) {
    ++stats_.partitioned;
    return;
  }
  if (!reliable) {
    if (cfg_.loss > 0.0 && rng_.uniform() < cfg_.loss) {
      ++stats_.lost;
      return;
    }
    if (cfg_.duplicate > 0.0 && rng_.uniform() < cfg_.duplicate) {
      ++stats_.duplicated;
      std::vector<std::byte> copy = bytes;
      enqueue(now + sample_delay(from, to, channel), from, to, channel, std::move(copy));
    }
  }
  enqueue(now + sample_delay(from, to, channel), from, to, channel, std::move(bytes));
}

void SimNetwork::enqueue(TimePoint at, NodeId from, NodeId to, gossip::Channel channel,
                         std::vector<std::byte>&& bytes, bool unreachable) {
  std::uint32_t slot = 0;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Message& m = slots_[slot];
  m.from = from;
  m.to = to;
  m.channel = channel;
  m.unreachable = unreachable;
  m.bytes = std::move(bytes);
  queue_.push_back(Entry{at, seq_++, slot});
  std::push_heap(queue_.begin(), queue_.end(), Later{});
}

std::optional<TimePoint> SimNetwork::next_time() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.front().at;
}

bool SimNetwork::pop(Delivery& out) {
  WEFT_CHECK(!queue_.empty());
  std::pop_heap(queue_.begin(), queue_.end(), Later{});
  const Entry e = queue_.back();
  queue_.pop_back();
  Message& m = slots_[e.slot];
  free_.push_back(e.slot);
  // A message already sent by a node that crashed since still arrives; one to a down node not.
  if (down_[m.to] != 0) {
    ++stats_.to_down;
    // Its host answers a datagram that got there (never an ICMP, nor a stream).
    if (cfg_.icmp && !m.unreachable && m.channel == gossip::Channel::kUnreliable && group_[m.from] == group_[m.to]) {
      refuse(e.at, m.from, m.to);
    }
    m.bytes = {};
    return false;
  }
  if (group_[m.from] != group_[m.to]) {
    ++stats_.partitioned;
    m.bytes = {};
    return false;
  }
  ++stats_.delivered;
  stats_.delivered_bytes += m.bytes.size();
  out.at = e.at;
  out.from = m.from;
  out.to = m.to;
  out.channel = m.channel;
  out.unreachable = m.unreachable;
  out.bytes = std::move(m.bytes);
  m.bytes = {};
  return true;
}

void SimNetwork::refuse(TimePoint at, NodeId from, NodeId to) {
  // The ICMP travels the link back like any datagram: it can be lost, and a partition (checked
  // again on arrival) or the sender's own crash drops it.
  if (cfg_.loss > 0.0 && rng_.uniform() < cfg_.loss) {
    ++stats_.lost;
    return;
  }
  ++stats_.unreachable;
  enqueue(at + sample_delay(to, from, gossip::Channel::kUnreliable), to, from, gossip::Channel::kUnreliable, {},
          /*unreachable=*/true);
}

void SimNetwork::partition(const std::vector<std::vector<NodeId>>& groups) {
  std::fill(group_.begin(), group_.end(), 0);
  std::uint32_t g = 0;
  for (const auto& group : groups) {
    ++g;
    for (NodeId id : group) {
      WEFT_CHECK(id < size());
      group_[id] = g;
    }
  }
}

void SimNetwork::isolate(NodeId id) {
  WEFT_CHECK(id < size());
  group_[id] = static_cast<std::uint32_t>(*std::max_element(group_.begin(), group_.end()) + 1);
}

void SimNetwork::heal() { std::fill(group_.begin(), group_.end(), 0); }

}  // namespace weft::sim
