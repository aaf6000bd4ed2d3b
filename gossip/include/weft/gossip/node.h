#pragma once
// Node: one member of the SWIM + Lifeguard protocol, as pure logic.
//
// No sockets, threads, clocks or global state: every input carries `now`, outputs are queues
// the caller drains. The agent drives it from its event loop; the simulator drives thousands of
// them on virtual time. Not thread-safe: one thread owns a Node.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/time.h"
#include "weft/gossip/config.h"
#include "weft/gossip/stats.h"
#include "weft/gossip/types.h"

namespace spdlog {
class logger;
}

namespace weft::gossip {

class NodeImpl;

struct Self {
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;  // a restarted agent passes its stored value + 1
  std::vector<std::byte> meta;
};

class Node {
 public:
  // `log` may be null (no logging). `seed` makes every random choice reproducible.
  Node(Config cfg, Self self, std::uint64_t seed, std::shared_ptr<spdlog::logger> log = nullptr);
  ~Node();
  Node(Node&&) noexcept;
  Node& operator=(Node&&) noexcept;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Starts the protocol: syncs full state with every seed over the reliable channel and keeps
  // retrying (every sync_timeout) until one answers. Without seeds the node is a cluster of one.
  void join(TimePoint now, std::span<const Endpoint> seeds);
  // Graceful leave: the cluster marks us "left", never "failed". Tells up to leave_fanout
  // members directly and keeps gossiping until the broadcast queue drains (see leave_done()).
  void leave(TimePoint now);
  [[nodiscard]] bool leave_done() const;

  // New metadata: raises our incarnation and spreads it. Fails if larger than max_meta_bytes,
  // or when our incarnation is already UINT64_MAX (see NodeImpl::refute).
  Result<void> set_meta(TimePoint now, std::vector<std::byte> meta);

  // A datagram from the unreliable channel (UDP).
  void handle_packet(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes);
  // A message from the reliable channel (push-pull).
  void handle_stream(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes);
  // The transport saw "port unreachable" for a datagram we sent to `to` (ICMP, error queue).
  // Evidence for the refused-probe fast path (Config::refused_fast_path): it never fails a
  // member by itself. Untrusted like a packet: a report about an address where no live member
  // is (unknown, ourselves, failed, left) is counted and ignored. O(members) per report.
  void handle_unreachable(TimePoint now, const Endpoint& to);

  // Signed claims: every live member whose credential is no longer valid (revoked, expired) is
  // declared failed here at once, by a verdict signed by us that spreads like any other; its
  // refutations, signed under that credential, are refused everywhere. Call when the authority's
  // view changed (a revocation list) and now and then (expiry). Returns how many. O(members).
  std::size_t recheck_credentials(TimePoint now);

  // `now + offset` is a time every member agrees on, to within a small part of probe_interval
  // (an agent: the wall clock, kept in step by NTP, minus its steady clock). Members count probe
  // periods on it to share one probe rotation (node_probe.cpp); without it (offset 0, as in the
  // simulator, whose nodes share one clock) members on different hosts probe in orders that are
  // independent of each other, which is SWIM's random case and still correct.
  void set_shared_clock(Duration offset);

  // Runs every timer due at `now`; returns the next deadline.
  [[nodiscard]] TimePoint tick(TimePoint now);
  [[nodiscard]] TimePoint next_deadline() const;

  [[nodiscard]] std::vector<Datagram> take_outgoing();
  [[nodiscard]] std::vector<MemberEvent> take_events();
  // Drain into caller-owned vectors (appends), avoiding an allocation per call.
  void drain_outgoing(std::vector<Datagram>& out);
  void drain_events(std::vector<MemberEvent>& out);

  [[nodiscard]] const GossipStats& stats() const;
  [[nodiscard]] const Config& config() const;
  [[nodiscard]] std::string_view name() const;
  [[nodiscard]] std::uint64_t incarnation() const;
  [[nodiscard]] unsigned health_score() const;  // 0 = healthy .. awareness_max - 1
  [[nodiscard]] bool joined() const;            // a seed answered (or there were none)

  [[nodiscard]] std::optional<MemberInfo> member(std::string_view name) const;
  [[nodiscard]] std::vector<MemberInfo> members() const;  // including ourselves
  // Number of known members (including ourselves) in state s.
  [[nodiscard]] std::size_t count(MemberState s) const;
  // Broadcasts waiting to be piggybacked.
  [[nodiscard]] std::size_t queued_broadcasts() const;

 private:
  std::unique_ptr<NodeImpl> impl_;
};

}  // namespace weft::gossip
