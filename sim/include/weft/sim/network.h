#pragma once
// SimNetwork: the fake network of the simulator.
//
// Messages travel between node indices (NodeId); the cluster maps Endpoints to indices.
// Per message it applies, deterministically from the seed:
//   - delay: a per-link base (cfg.delay scaled by a factor in [1 - link_spread, 1 + link_spread]
//     that is a pure function of (seed, link), so it needs no per-link storage) plus a uniform
//     per-message jitter in [-jitter, +jitter]; reliable messages take kReliableDelayFactor times
//     as long (a TCP connect plus the data);
//   - random loss (unreliable channel only), duplication and reordering (an extra random delay);
//   - partitions and down nodes: checked when sending and again when delivering, so a partition
//     or a crash also cuts what is already in flight. Reliable messages are lost only this way.
//   - optionally (NetConfig::icmp) an ICMP "port unreachable": a datagram that reaches a down
//     node (crashed, left, not started: no process owns the port) draws a report back to its
//     sender, one link delay later, itself subject to loss and partitions. A stalled node is
//     not down (its socket is open): it never draws one. Off by default: a crash is silent.
// Deliveries come out ordered by (time, insertion sequence): a run is a pure function of the
// seed and of the calls made. One Rng, no clock.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/rng.h"
#include "weft/base/time.h"
#include "weft/gossip/types.h"

namespace weft::sim {

using namespace std::chrono_literals;
using NodeId = std::uint32_t;

// Node addresses are labels only (no real traffic): node i is 127.a.b.c:7946 with
// (a << 16 | b << 8 | c) == i + 1.
inline constexpr std::uint16_t kSimPort = 7946;
inline constexpr std::size_t kMaxSimNodes = (std::size_t{1} << 24) - 2;
Endpoint endpoint_of(NodeId id);
std::optional<NodeId> node_of(const Endpoint& e);

struct NetConfig {
  Duration delay = 1ms;       // mean one-way base delay of a link
  Duration jitter = 500us;    // per message, uniform in [-jitter, +jitter]
  double link_spread = 0.25;  // link base = delay * [1 - spread, 1 + spread]
  double loss = 0.0;          // unreliable channel only
  double duplicate = 0.0;     // unreliable channel only: a second copy, independently delayed
  double reorder = 0.0;       // probability of an extra delay uniform in [0, reorder_delay]
  Duration reorder_delay = 10ms;
  bool icmp = false;          // report "port unreachable" for datagrams that reach a down node
};

// Delay multiplier of the reliable channel (models a TCP handshake before the data).
inline constexpr int kReliableDelayFactor = 3;

struct NetStats {
  std::uint64_t sent = 0;  // messages offered to the network (both channels)
  std::uint64_t sent_bytes = 0;
  std::uint64_t delivered = 0;
  std::uint64_t delivered_bytes = 0;
  std::uint64_t lost = 0;         // random loss
  std::uint64_t partitioned = 0;  // dropped by a partition (at send or in flight)
  std::uint64_t to_down = 0;      // dropped because the sender or receiver is down
  std::uint64_t duplicated = 0;
  std::uint64_t reordered = 0;
  std::uint64_t reliable_sent = 0;
  std::uint64_t unroutable = 0;  // counted by the cluster: address of no node
  std::uint64_t unreachable = 0;  // ICMP "port unreachable" reports sent back (NetConfig::icmp)

  friend bool operator==(const NetStats&, const NetStats&) = default;
};

struct Delivery {
  TimePoint at{};
  NodeId from = 0;
  NodeId to = 0;
  gossip::Channel channel = gossip::Channel::kUnreliable;
  std::vector<std::byte> bytes;
  // An ICMP "port unreachable" from node `from`'s host about a datagram `to` sent it (no bytes).
  bool unreachable = false;
};

class SimNetwork {
 public:
  SimNetwork(std::size_t nodes, NetConfig cfg, std::uint64_t seed);

  [[nodiscard]] std::size_t size() const { return group_.size(); }
  [[nodiscard]] const NetConfig& config() const { return cfg_; }
  void set_loss(double p) { cfg_.loss = p; }
  void set_duplicate(double p) { cfg_.duplicate = p; }
  void set_reorder(double p) { cfg_.reorder = p; }
  void set_icmp(bool on) { cfg_.icmp = on; }

  // Takes a message sent by `from` at `now`. It may be dropped, duplicated or delayed.
  void send(TimePoint now, NodeId from, NodeId to, gossip::Channel channel, std::vector<std::byte>&& bytes);

  // Time of the next message to come out, if any.
  [[nodiscard]] std::optional<TimePoint> next_time() const;
  // Removes the next message. Returns false (and `out` unspecified) when it was dropped in
  // flight because of a partition or a down endpoint.
  bool pop(Delivery& out);
  [[nodiscard]] std::size_t in_flight() const { return queue_.size(); }

  // Nodes in different groups cannot talk. Nodes not listed form one more implicit group.
  // partition({0, 1}, {2, 3, 4}); heal();
  void partition(const std::vector<std::vector<NodeId>>& groups);
  void partition(const std::vector<NodeId>& a, const std::vector<NodeId>& b) { partition({a, b}); }
  void isolate(NodeId id);  // a group of its own
  void heal();
  [[nodiscard]] bool connected(NodeId a, NodeId b) const { return group_[a] == group_[b]; }

  // A down node (crashed, stopped) neither sends nor receives.
  void set_down(NodeId id, bool down) { down_[id] = down ? 1 : 0; }
  [[nodiscard]] bool down(NodeId id) const { return down_[id] != 0; }

  // Base one-way delay of a link (before jitter), symmetric.
  [[nodiscard]] Duration link_delay(NodeId a, NodeId b) const;

  [[nodiscard]] const NetStats& stats() const { return stats_; }
  NetStats& stats() { return stats_; }

 private:
  struct Entry {
    TimePoint at;
    std::uint64_t seq;
    std::uint32_t slot;
  };
  struct Later {
    bool operator()(const Entry& a, const Entry& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };
  struct Message {
    NodeId from = 0;
    NodeId to = 0;
    gossip::Channel channel = gossip::Channel::kUnreliable;
    bool unreachable = false;
    std::vector<std::byte> bytes;
  };

  void enqueue(TimePoint at, NodeId from, NodeId to, gossip::Channel channel, std::vector<std::byte>&& bytes,
               bool unreachable = false);
  // A datagram from `from` reached the down node `to` at `at`: its host answers with an ICMP.
  void refuse(TimePoint at, NodeId from, NodeId to);
  Duration sample_delay(NodeId from, NodeId to, gossip::Channel channel);

  NetConfig cfg_;
  std::uint64_t seed_;
  Rng rng_;
  std::vector<std::uint32_t> group_;
  std::vector<std::uint8_t> down_;
  std::vector<Entry> queue_;         // binary heap ordered by Later
  std::vector<Message> slots_;       // message bodies; queue_ entries point here
  std::vector<std::uint32_t> free_;  // free slots
  std::uint64_t seq_ = 0;
  NetStats stats_;
};

}  // namespace weft::sim
