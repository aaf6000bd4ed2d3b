// Simulator tests: SimNetwork units, then cluster scenarios over many seeds on virtual time.
// Nothing sleeps; a failing scenario prints its seed (and a dump of the cluster).
//
// WEFT_SIM_SEED=<n> runs every scenario with that one seed only (to reproduce a failure).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "weft/gossip/codec.h"
#include "sim_seeds.h"
#include "weft/sim/cluster.h"
#include "weft/sim/network.h"
#include "weft/sim/scenario.h"

namespace weft::sim {
namespace {

using gossip::Channel;
using gossip::MemberState;
using namespace std::chrono_literals;

using test::seed_text;
using test::seeds;

// The bounds of memberlist's suspicion timeout for n live members (gossip/src/suspicion.h).
Duration suspicion_min(const gossip::Config& c, std::size_t n) {
  const double scale = std::max(1.0, std::log10(std::max(1.0, static_cast<double>(n))));
  const auto d = std::chrono::duration_cast<Duration>(c.probe_interval * (c.suspicion_mult * scale));
  return std::max(d, c.suspicion_min_floor);
}
Duration suspicion_max(const gossip::Config& c, std::size_t n) {
  return suspicion_min(c, n) * c.suspicion_max_mult;
}

// memberlist's pushPullScale: the periodic sync interval for n members.
Duration push_pull_interval(const gossip::Config& c, std::size_t n) {
  if (n <= 32) return c.push_pull_interval;
  const double mult = std::ceil(std::log2(static_cast<double>(n)) - 5.0) + 1.0;
  return c.push_pull_interval * static_cast<int>(mult);
}

Duration default_join_window(std::size_t n) { return std::max<Duration>(1s, std::chrono::milliseconds(n)); }

std::vector<std::byte> bytes(std::size_t n) { return std::vector<std::byte>(n, std::byte{0x42}); }

// ------------------------------------------------------------------------------- SimNetwork

TEST(SimNetwork, EndpointsRoundTrip) {
  for (NodeId id : {0u, 1u, 255u, 256u, 65535u, 1u << 20}) {
    EXPECT_EQ(node_of(endpoint_of(id)), id);
  }
  EXPECT_EQ(node_of(Endpoint::v4(10, 0, 0, 1, kSimPort)), std::nullopt);
  EXPECT_EQ(node_of(Endpoint::v4(127, 0, 0, 1, 1234)), std::nullopt);
  EXPECT_EQ(node_of(Endpoint::v4(127, 0, 0, 0, kSimPort)), std::nullopt);
}

TEST(SimNetwork, LossRateIsApproximatelyRightAndReliableNeverLost) {
  constexpr int kPackets = 20'000;
  constexpr double kLoss = 0.1;
  SimNetwork net(2, {.loss = kLoss}, 42);
  for (int i = 0; i < kPackets; ++i) net.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(10));
  for (int i = 0; i < 1000; ++i) net.send(kSimEpoch, 0, 1, Channel::kReliable, bytes(10));
  int udp = 0;
  int tcp = 0;
  Delivery d;
  while (net.next_time()) {
    ASSERT_TRUE(net.pop(d));
    (d.channel == Channel::kReliable ? tcp : udp) += 1;
  }
  const double sigma = std::sqrt(kPackets * kLoss * (1 - kLoss));
  EXPECT_NEAR(kPackets - udp, kPackets * kLoss, 4 * sigma);
  EXPECT_EQ(tcp, 1000);
  EXPECT_EQ(net.stats().lost, static_cast<std::uint64_t>(kPackets - udp));
}

TEST(SimNetwork, PartitionDropsAtSendAndInFlightThenHeals) {
  SimNetwork net(5, {}, 1);
  net.send(kSimEpoch, 0, 3, Channel::kReliable, bytes(1));  // in flight when the partition starts
  net.partition({0, 1}, {2, 3, 4});
  EXPECT_FALSE(net.connected(0, 2));
  EXPECT_TRUE(net.connected(2, 4));
  net.send(kSimEpoch, 1, 4, Channel::kReliable, bytes(1));    // reliable is cut too
  net.send(kSimEpoch, 2, 4, Channel::kUnreliable, bytes(1));  // same side
  Delivery d;
  std::vector<std::pair<NodeId, NodeId>> got;
  while (net.next_time()) {
    if (net.pop(d)) got.emplace_back(d.from, d.to);
  }
  EXPECT_EQ(got, (std::vector<std::pair<NodeId, NodeId>>{{2, 4}}));
  EXPECT_EQ(net.stats().partitioned, 2u);

  net.heal();
  net.send(kSimEpoch, 0, 3, Channel::kUnreliable, bytes(1));
  ASSERT_TRUE(net.next_time());
  EXPECT_TRUE(net.pop(d));

  // Nodes not listed form one more group.
  net.partition({{0}, {1}});
  EXPECT_FALSE(net.connected(0, 1));
  EXPECT_FALSE(net.connected(1, 2));
  EXPECT_TRUE(net.connected(2, 3));
  net.heal();
  net.isolate(4);
  EXPECT_FALSE(net.connected(3, 4));
  EXPECT_TRUE(net.connected(0, 3));
}

TEST(SimNetwork, DownNodesReceiveNothing) {
  SimNetwork net(3, {}, 1);
  net.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(1));
  net.set_down(1, true);  // crashes while the packet is in flight
  net.send(kSimEpoch, 0, 1, Channel::kReliable, bytes(1));
  net.send(kSimEpoch, 1, 2, Channel::kUnreliable, bytes(1));  // a down node sends nothing
  Delivery d;
  int delivered = 0;
  while (net.next_time()) delivered += net.pop(d) ? 1 : 0;
  EXPECT_EQ(delivered, 0);
  EXPECT_EQ(net.stats().to_down, 3u);
}

// With NetConfig::icmp, a datagram that reaches a down node draws an ICMP back to its sender one
// link delay later; nothing else does (streams, ICMPs, a live or partitioned node).
TEST(SimNetwork, IcmpAnswersDatagramsThatReachADownNode) {
  const NetConfig cfg{.delay = 2ms, .jitter = 0ms, .link_spread = 0, .icmp = true};
  SimNetwork net(4, cfg, 1);
  net.set_down(1, true);
  net.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(10));  // sent to a down node
  net.send(kSimEpoch, 0, 2, Channel::kUnreliable, bytes(10));  // in flight when 2 crashes
  net.set_down(2, true);
  net.send(kSimEpoch, 0, 1, Channel::kReliable, bytes(10));    // a stream: no ICMP
  net.send(kSimEpoch, 0, 3, Channel::kUnreliable, bytes(10));  // a live node: delivered
  Delivery d;
  std::vector<std::tuple<TimePoint, NodeId, NodeId, bool>> got;
  while (net.next_time()) {
    if (!net.pop(d)) continue;
    got.emplace_back(d.at, d.from, d.to, d.unreachable);
    if (d.unreachable) {
      EXPECT_TRUE(d.bytes.empty());
    }
  }
  const std::vector<std::tuple<TimePoint, NodeId, NodeId, bool>> want = {
      {kSimEpoch + 2ms, 0, 3, false},
      {kSimEpoch + 4ms, 1, 0, true},  // from the down node's host, about 0's datagram
      {kSimEpoch + 4ms, 2, 0, true},
  };
  EXPECT_EQ(got, want);
  EXPECT_EQ(net.stats().unreachable, 2u);

  // A partition drops the datagram and so its ICMP; an ICMP to a sender that is down itself
  // is dropped (never answered by another).
  net.partition({0}, {1, 2, 3});
  net.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(10));
  net.heal();
  net.send(kSimEpoch, 3, 1, Channel::kUnreliable, bytes(10));
  net.set_down(3, true);
  int delivered = 0;
  while (net.next_time()) delivered += net.pop(d) ? 1 : 0;
  EXPECT_EQ(delivered, 0);
  EXPECT_EQ(net.stats().unreachable, 3u);  // 1 answered 3, which was down by then

  // Off (the default): a crash is silent.
  SimNetwork quiet(2, {.delay = 2ms, .jitter = 0ms, .link_spread = 0}, 1);
  quiet.set_down(1, true);
  quiet.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(10));
  EXPECT_FALSE(quiet.next_time().has_value());
  EXPECT_EQ(quiet.stats().unreachable, 0u);
}

TEST(SimNetwork, DeliversInTimeOrderAndFifoAtEqualTimes) {
  {
    // No jitter, no spread: every message takes the same time, so they come out in send order.
    SimNetwork net(2, {.delay = 2ms, .jitter = 0ms, .link_spread = 0}, 9);
    for (std::uint8_t i = 0; i < 50; ++i) net.send(kSimEpoch, 0, 1, Channel::kUnreliable, {std::byte{i}});
    Delivery d;
    for (std::uint8_t i = 0; i < 50; ++i) {
      ASSERT_TRUE(net.pop(d));
      EXPECT_EQ(d.bytes.at(0), std::byte{i});
      EXPECT_EQ(d.at, kSimEpoch + 2ms);
    }
  }
  {
    SimNetwork net(4, {.delay = 1ms, .jitter = 500us, .reorder = 0.2}, 9);
    for (int i = 0; i < 2000; ++i) {
      net.send(kSimEpoch + std::chrono::microseconds(i * 10), static_cast<NodeId>(i % 4),
               static_cast<NodeId>((i + 1) % 4), Channel::kUnreliable, bytes(1));
    }
    Delivery d;
    TimePoint last = kSimEpoch;
    bool reordered = false;
    std::size_t n = 0;
    while (net.next_time()) {
      ASSERT_TRUE(net.pop(d));
      EXPECT_GE(d.at, last);
      last = d.at;
      ++n;
    }
    reordered = net.stats().reordered > 0;
    EXPECT_EQ(n, 2000u);
    EXPECT_TRUE(reordered);
    // Link delays stay within the configured spread and are symmetric.
    EXPECT_EQ(net.link_delay(1, 3), net.link_delay(3, 1));
    EXPECT_GE(net.link_delay(1, 3), 750us);
    EXPECT_LE(net.link_delay(1, 3), 1250us);
  }
}

TEST(SimNetwork, DuplicatesAboutTheConfiguredShare) {
  SimNetwork net(2, {.duplicate = 0.25}, 3);
  for (int i = 0; i < 4000; ++i) net.send(kSimEpoch, 0, 1, Channel::kUnreliable, bytes(3));
  Delivery d;
  int delivered = 0;
  while (net.next_time()) delivered += net.pop(d) ? 1 : 0;
  EXPECT_NEAR(delivered, 5000, 200);
}

TEST(SimNetwork, SameSeedSameSchedule) {
  auto run = [](std::uint64_t seed) {
    SimNetwork net(3, {.loss = 0.3, .duplicate = 0.1, .reorder = 0.1}, seed);
    for (int i = 0; i < 300; ++i)
      net.send(kSimEpoch, 0, static_cast<NodeId>(1 + i % 2), Channel::kUnreliable, bytes(1));
    std::vector<TimePoint> times;
    Delivery d;
    while (net.next_time()) {
      if (net.pop(d)) times.push_back(d.at);
    }
    return times;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

// ------------------------------------------------------------------------------- SimCluster

// When the last catch-up sync after a join runs (or, without catch-ups, the periodic push-pull):
// by then a node that missed a simultaneous join through gossip has learned it by a full sync.
Duration catchup_span(const gossip::Config& c, std::size_t n) {
  if (c.join_catchups == 0) return push_pull_interval(c, n);
  return c.join_catchup_delay * (1 << (2 * (c.join_catchups - 1)));
}

class Converges : public ::testing::TestWithParam<std::pair<std::size_t, std::size_t>> {};

// Every node joins through node 0 within the join window. Gossip spreads most joins; the
// catch-up syncs after a join repair what the probabilistic dissemination missed.
TEST_P(Converges, EveryNodeSeesEveryOtherAlive) {
  const auto [n, count] = GetParam();
  const gossip::Config g;
  const Duration bound = default_join_window(n) + catchup_span(g, n) + 2s;
  for (std::uint64_t seed : seeds(count)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = n, .seed = seed});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, bound)) << c.dump();
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    EXPECT_EQ(c.counters().stuck_deadlines, 0u);
    for (NodeId i = 0; i < n; ++i) EXPECT_TRUE(c.node(i)->joined()) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, Converges,
                         ::testing::Values(std::pair<std::size_t, std::size_t>{5, 50},
                                           std::pair<std::size_t, std::size_t>{50, 20},
                                           std::pair<std::size_t, std::size_t>{200, 5}),
                         [](const auto& p) { return "N" + std::to_string(p.param.first); });

// A simultaneous mass join converges within seconds of the last join (gossip plus the first
// catch-up syncs), not at the next periodic push-pull (60 s at N = 50), with 5 % loss too.
TEST(SimCluster, MassJoinConvergesWithinSecondsOfTheLastJoin) {
  constexpr std::size_t kNodes = 50;
  for (double loss : {0.0, 0.05}) {
    for (std::uint64_t seed : seeds(20)) {
      SCOPED_TRACE(seed_text(seed) + " loss=" + std::to_string(loss));
      SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = loss}});
      EXPECT_TRUE(c.run_until([&] { return c.fullmesh(); }, default_join_window(kNodes) + 3s)) << c.dump();
    }
  }
}

TEST(SimCluster, DetectsACrashWithinTheSuspicionBounds) {
  constexpr std::size_t kNodes = 50;
  const gossip::Config g;
  // A live node probes the crashed one within a few probe intervals (each of the N - 1 probes
  // one member per interval); the probe ends one interval later with a suspicion; the timeout
  // is suspicion_min once the expected confirmations arrived (a couple more intervals); then
  // the dead message spreads in well under a second.
  const Duration lower = suspicion_min(g, kNodes - 1);
  const Duration upper = suspicion_min(g, kNodes) + 8 * g.probe_interval + 1s;
  for (std::uint64_t seed : seeds(30)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 120s)) << c.dump();
    c.run_for(2s);
    const auto victim = static_cast<NodeId>(1 + seed % (kNodes - 1));
    const TimePoint crash_at = c.now();
    c.crash(victim);
    const std::size_t w = *c.failure_watch(victim);
    ASSERT_TRUE(c.run_until([&] { return c.watch(w).all.has_value(); }, upper))
        << "crashed node " << victim << " not marked failed by everyone within " << to_seconds(upper)
        << " s\n"
        << c.dump();
    EXPECT_GE(*c.watch(w).first - crash_at, lower)
        << "declared failed faster than the suspicion timeout allows";
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    for (NodeId i = 0; i < kNodes; ++i) {
      if (i != victim) {
        EXPECT_EQ(c.view(i, victim)->state, MemberState::kFailed) << "view of node " << i;
      }
    }
  }
}

class NoFalsePositives : public ::testing::TestWithParam<std::size_t> {};

// 5 % loss and one node paused for 5 s: it is suspected, then refutes when it resumes; nobody
// may declare it (or anyone else) failed. Small clusters are the hard case (fewest relays).
TEST_P(NoFalsePositives, WithLossAndAStalledNode) {
  const std::size_t n = GetParam();
  for (std::uint64_t seed : seeds(20)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = n, .seed = seed, .net = {.loss = 0.05}});
    c.run_for(20s);  // joined or not: no live node may ever be declared failed
    const auto stalled = static_cast<NodeId>(1 + seed % (n - 1));
    c.stall(stalled, 5s);
    EXPECT_EQ(c.status(stalled), NodeStatus::kStalled);
    c.run_for(60s);
    EXPECT_EQ(c.status(stalled), NodeStatus::kRunning);
    EXPECT_EQ(c.false_positives(), 0u) << "stalled node " << stalled << "\n" << c.dump();
    EXPECT_EQ(c.counters().false_positive_events, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, NoFalsePositives, ::testing::Values(5, 20, 100),
                         [](const auto& p) { return "N" + std::to_string(p.param); });

// Issue 3's target: no false failed-mark over 10 minutes at 10 % loss, with a 2.5 s stall. At
// N = 64 each member passes a rumour on only 8 times, and before the accuser told the accused
// directly and refutations went out directly too, 2-6 members were falsely failed per run.
TEST(SimCluster, TenMinutesAtTenPercentLossMarkNobodyFailed) {
  constexpr std::size_t kNodes = 64;
  for (std::uint64_t seed : seeds(6)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = 0.10}});
    c.run_for(30s);
    c.stall(static_cast<NodeId>(1 + seed % (kNodes - 1)), 2500ms);
    c.run_for(600s);
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    EXPECT_EQ(c.counters().false_positive_events, 0u);
  }
}

TEST(SimCluster, StalledNodeQueuesPacketsAndFiresTimersLate) {
  SimCluster c({.nodes = 5, .seed = 11});
  ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
  c.stall(2, 3s);
  const std::uint64_t received = c.node(2)->stats().packets_received;
  const std::uint64_t probes = c.node(2)->stats().probes;
  c.run_for(2900ms);
  EXPECT_EQ(c.node(2)->stats().packets_received, received) << "a stalled node handles nothing";
  EXPECT_EQ(c.node(2)->stats().probes, probes) << "a stalled node's timers do not fire";
  c.run_for(200ms);
  EXPECT_GT(c.node(2)->stats().packets_received, received) << "queued packets are delivered at the end";
  EXPECT_GT(c.node(2)->stats().probes, probes);
}

// Both sides mark the other failed, then the partition heals: gossip to the recently dead and
// push-pull must merge them into one cluster again. Variant 0 heals as soon as every
// cross-partition view is "failed"; variant 1 waits past gossip_to_the_dead, so only push-pull
// (or rejoining) can merge the sides.
class PartitionHeals : public ::testing::TestWithParam<int> {};

TEST_P(PartitionHeals, OneClusterAgain) {
  constexpr std::size_t kNodes = 10;
  const std::vector<NodeId> minority = {0, 1, 2};
  const std::vector<NodeId> majority = {3, 4, 5, 6, 7, 8, 9};
  const gossip::Config g;
  // The minority's probes all fail, so Lifeguard slows its timers (up to awareness_max times):
  // allow for the slowest suspicion there.
  const Duration split_bound = suspicion_max(g, kNodes) * g.awareness_max;
  const Duration merge_bound = 2 * push_pull_interval(g, kNodes) + 10s;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
    auto failed = [&](NodeId a, NodeId b) {
      const auto v = c.view(a, b);
      return v && v->state == MemberState::kFailed;
    };
    auto split = [&] {
      for (NodeId a : minority) {
        for (NodeId b : majority) {
          if (!failed(a, b) || !failed(b, a)) return false;
        }
      }
      return true;
    };
    const TimePoint start = c.now();
    c.net().partition(minority, majority);
    ASSERT_TRUE(c.run_until(split, split_bound)) << "sides did not mark each other failed\n" << c.dump();
    if (GetParam() == 1) c.run_for(start + 3 * g.gossip_to_the_dead - c.now());
    SCOPED_TRACE("healed after " + std::to_string(to_seconds(c.now() - start)) + " s of partition");
    c.net().heal();
    EXPECT_TRUE(c.run_until([&] { return c.fullmesh(); }, merge_bound))
        << "not one cluster " << to_seconds(merge_bound) << " s after healing\n"
        << c.dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Durations, PartitionHeals, ::testing::Values(0, 1), [](const auto& p) {
  return p.param == 0 ? "JustPastSuspicion" : "PastGossipToTheDead";
});

TEST(SimCluster, GracefulLeaveIsLeftNeverFailed) {
  constexpr std::size_t kNodes = 20;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
    const auto leaver = static_cast<NodeId>(1 + seed % (kNodes - 1));
    c.leave(leaver);
    EXPECT_TRUE(c.run_until([&] { return c.status(leaver) == NodeStatus::kLeft; }, 15s)) << c.dump();
    auto everyone_knows = [&] {
      for (NodeId i = 0; i < kNodes; ++i) {
        if (i != leaver && c.view(i, leaver)->state != MemberState::kLeft) return false;
      }
      return true;
    };
    EXPECT_TRUE(c.run_until(everyone_knows, 10s)) << c.dump();
    c.run_for(60s);  // long past any suspicion timeout
    EXPECT_TRUE(everyone_knows()) << c.dump();
    EXPECT_EQ(c.failed_events(leaver), 0u) << c.dump();
    EXPECT_EQ(c.false_positives(), 0u);
    EXPECT_TRUE(c.fullmesh()) << c.dump();
  }
}

TEST(SimCluster, CrashedNodeRestartsAndRejoins) {
  constexpr std::size_t kNodes = 20;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
    const NodeId victim = 7;
    c.crash(victim);
    const std::size_t w = *c.failure_watch(victim);
    ASSERT_TRUE(c.run_until([&] { return c.watch(w).all.has_value(); }, 60s)) << c.dump();
    const std::uint64_t old_incarnation = c.node(victim)->incarnation();
    c.restart(victim);
    EXPECT_GT(c.node(victim)->incarnation(), old_incarnation);
    EXPECT_FALSE(c.failure_watch(victim).has_value());
    EXPECT_TRUE(c.run_until([&] { return c.fullmesh(); }, 30s)) << c.dump();
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
  }
}

TEST(SimCluster, MetadataUpdateReachesEveryone) {
  constexpr std::size_t kNodes = 50;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = 0.01}});
    c.run_for(10s);
    ASSERT_TRUE(c.set_meta(3, bytes(8)));
    const std::size_t w = c.watch_update(3, c.node(3)->incarnation());
    // Dissemination: O(log N) gossip rounds; 5 s is ~25 rounds.
    ASSERT_TRUE(c.run_until([&] { return c.watch(w).all.has_value(); }, 5s)) << c.dump();
    EXPECT_EQ(c.watch(w).reached.size(), kNodes - 1);
    const auto half = c.watch(w).time_to(0.5, kNodes - 1);
    ASSERT_TRUE(half.has_value());
    EXPECT_LE(*half, *c.watch(w).all - c.watch(w).since);
    for (NodeId i = 0; i < kNodes; ++i) EXPECT_EQ(c.view(i, 3)->meta, bytes(8)) << i;
  }
}

// --------------------------------------------------------------- refused-probe fast path (ICMP)

std::uint64_t refused_failures(const SimCluster& c, NodeId except) {
  std::uint64_t n = 0;
  for (NodeId i = 0; i < c.size(); ++i) {
    if (i != except && c.node(i) != nullptr) n += c.node(i)->stats().refused_failures;
  }
  return n;
}

// With ICMP, a crash is seen as soon as anyone sends the crashed node a datagram: that is a
// probe, and the N - 1 members each probe it once per pass of N - 1 probe intervals from random
// places in their shuffled orders, so the first comes after ~Exp(1 probe interval): within 3 s
// for ~95 % of crashes, within 5 s for ~99.5 %. From that first datagram on it takes a few link
// delays: verify probe, its refusal, ping-req, the relays' refusals, their nacks, and the Dead
// sent directly to leave_fanout (64) members.
TEST(SimIcmp, CrashIsSeenFailedByEveryMemberWithinSeconds) {
  constexpr std::size_t kNodes = 64;
  std::size_t within_3s = 0;
  const auto runs = seeds(20);
  for (std::uint64_t seed : runs) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.icmp = true}});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
    c.run_for(2s);
    const auto victim = static_cast<NodeId>(1 + seed % (kNodes - 1));
    const TimePoint crash_at = c.now();
    c.crash(victim);
    const std::size_t w = *c.failure_watch(victim);
    // The first datagram to reach the crashed node (it draws the first ICMP).
    ASSERT_TRUE(c.run_until([&] { return c.net().stats().unreachable > 0; }, 20s)) << c.dump();
    const TimePoint contact = c.now();
    ASSERT_TRUE(c.run_until([&] { return c.watch(w).all.has_value(); }, 5s)) << c.dump();
    const TimePoint all = *c.watch(w).all;
    EXPECT_LE(all - contact, 50ms) << "from the first refusal to every member";
    EXPECT_LE(all - crash_at, 5s);
    if (all - crash_at <= 3s) ++within_3s;
    EXPECT_GE(refused_failures(c, victim), 1u);
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
  }
  EXPECT_GE(within_3s * 10, runs.size() * 9) << within_3s << " of " << runs.size() << " within 3 s";
}

// Loss and a stall draw no ICMP (the stalled process's socket is open): with ICMP on, the run is
// the very same as with it off.
TEST(SimIcmp, LossAndAStallNeverTakeTheFastPath) {
  constexpr std::size_t kNodes = 64;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    auto run = [&](bool icmp) {
      auto c = std::make_unique<SimCluster>(ClusterConfig{.nodes = kNodes, .seed = seed, .net = {.loss = 0.10, .icmp = icmp}});
      c->run_for(20s);
      c->stall(static_cast<NodeId>(1 + seed % (kNodes - 1)), 2500ms);
      c->run_for(120s);
      return c;
    };
    const auto on = run(true);
    const auto off = run(false);
    EXPECT_EQ(on->net().stats().unreachable, 0u);
    std::uint64_t reports = 0;
    for (NodeId i = 0; i < kNodes; ++i) reports += on->node(i)->stats().unreachable_reports;
    EXPECT_EQ(reports, 0u);
    EXPECT_EQ(refused_failures(*on, kNodes), 0u);
    EXPECT_EQ(on->counters().sent.packets_sent, off->counters().sent.packets_sent);
    EXPECT_EQ(on->counters().false_positive_events, off->counters().false_positive_events);
    EXPECT_EQ(on->false_positives(), off->false_positives());
  }
}

// A crash among loss and a stall: ICMPs flow (some lost, some late), and the fast path fails
// the crashed node only. To tell its verdicts from the ordinary path's, suspicions here never
// time out within the run (floor 10^4 s): every failed-mark is the fast path's.
TEST(SimIcmp, CrashAmongLossAndAStallFailsOnlyTheCrashedNode) {
  constexpr std::size_t kNodes = 64;
  gossip::Config g;
  g.suspicion_min_floor = 10'000s;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .gossip = g, .net = {.loss = 0.10, .icmp = true}});
    c.run_for(20s);
    const auto victim = static_cast<NodeId>(1 + seed % (kNodes - 1));
    const auto stalled = static_cast<NodeId>(1 + (seed + 7) % (kNodes - 1));
    c.crash(victim);
    c.stall(stalled, 2500ms);
    const std::size_t w = *c.failure_watch(victim);
    c.run_for(120s);
    EXPECT_GT(c.net().stats().unreachable, 0u);
    EXPECT_TRUE(c.watch(w).all.has_value()) << "the crashed node is failed everywhere\n" << c.dump();
    EXPECT_GE(refused_failures(c, victim), 1u);
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    EXPECT_EQ(c.counters().false_positive_events, 0u);
  }
}

TEST(SimIcmp, RestartAfterARefusedDeathIsAliveAgainWithAHigherIncarnation) {
  constexpr std::size_t kNodes = 64;
  for (std::uint64_t seed : seeds(5)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.icmp = true}});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 60s)) << c.dump();
    const NodeId victim = 7;
    c.crash(victim);
    const std::size_t w = *c.failure_watch(victim);
    ASSERT_TRUE(c.run_until([&] { return c.watch(w).all.has_value(); }, 10s)) << c.dump();
    ASSERT_GE(refused_failures(c, victim), 1u);
    const std::uint64_t old_incarnation = c.node(victim)->incarnation();
    c.restart(victim);  // at once: ICMPs about the old process may still be in flight
    EXPECT_GT(c.node(victim)->incarnation(), old_incarnation);
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 30s)) << c.dump();
    for (NodeId i = 0; i < kNodes; ++i) {
      if (i == victim) continue;
      EXPECT_EQ(c.view(i, victim)->state, MemberState::kAlive) << "view of node " << i;
      EXPECT_GT(c.view(i, victim)->incarnation, old_incarnation) << "view of node " << i;
    }
    c.run_for(30s);
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    EXPECT_TRUE(c.fullmesh()) << c.dump();
  }
}

// ----------------------------------------------------------------------------------- forged

// Issue 5 / memberlist #358, before signatures: a member holding the cluster key (node 0) forges
// accusations naming incarnations above the known ones (suspect and failed at UINT64_MAX, a
// leave at known + 2^40) about ten live members, every 5 s for a minute, to every member and to
// the victims themselves, datagrams and push-pull state alike, at 5 % loss. Each is dropped
// where it lands: nobody is ever seen failed or left, and no incarnation is dragged upwards.
// (Every jump is beyond the one a victim refutes about itself, 2^32: a smaller one, such as
// known + 1000, is refuted by the victim and taken from its alive by the others, see
// NodeForged.BoundedJumpAboutOurselvesIsRefutedAndTheOthersTakeTheAlive.)
TEST(SimForged, AccusationsAboveTheKnownIncarnationFailNobody) {
  constexpr std::size_t kNodes = 60;
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  constexpr NodeId kForger = 0;
  for (std::uint64_t seed : seeds(4)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = 0.05}});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 120s)) << c.dump();
    c.run_for(2s);
    std::vector<NodeId> victims;
    for (NodeId v = 1 + static_cast<NodeId>(seed % 5); victims.size() < 10; v += 5) victims.push_back(v);
    auto forge = [&] {
      gossip::PacketBuilder pb(65000);
      gossip::PushPull pp{7, /*join=*/false, /*response=*/false, {}};
      pp.members.push_back({c.name(kForger),
                            SimCluster::addr(kForger),
                            c.node(kForger)->incarnation(),
                            MemberState::kAlive,
                            {}});
      for (NodeId v : victims) {
        const std::string& name = c.name(v);
        const std::uint64_t known = c.node(v)->incarnation();
        EXPECT_TRUE(pb.add(gossip::Suspect{name, kMax, c.name(kForger)}));
        EXPECT_TRUE(pb.add(gossip::Dead{name, kMax, c.name(kForger)}));
        EXPECT_TRUE(pb.add(gossip::Dead{name, known + (std::uint64_t{1} << 40), name}));
        pp.members.push_back({name, SimCluster::addr(v), kMax, MemberState::kFailed, {}});
      }
      const std::vector<std::byte> datagram = pb.finish();
      const std::vector<std::byte> stream = gossip::encode_stream(pp);
      for (NodeId to = 1; to < kNodes; ++to) {
        c.net().send(c.now(), kForger, to, Channel::kUnreliable, std::vector<std::byte>(datagram));
        if (to % 6 == 0)
          c.net().send(c.now(), kForger, to, Channel::kReliable, std::vector<std::byte>(stream));
      }
    };
    auto victims_alive_everywhere = [&] {
      for (NodeId i = 0; i < kNodes; ++i) {
        for (NodeId v : victims) {
          const auto m = c.view(i, v);
          if (!m || m->state == MemberState::kFailed || m->state == MemberState::kLeft ||
              m->incarnation >= 1000) {
            ADD_FAILURE() << "node " << i << " about victim " << v << ": "
                          << (m ? gossip::to_string(m->state) : "unknown") << " at "
                          << (m ? m->incarnation : 0);
            return false;
          }
        }
      }
      return true;
    };
    for (int round = 0; round < 12; ++round) {
      forge();
      for (int s = 0; s < 5; ++s) {
        c.run_for(1s);
        ASSERT_TRUE(victims_alive_everywhere()) << "round " << round << "\n" << c.dump();
      }
    }
    c.run_for(60s);  // past the longest suspicion timeout of the last round
    EXPECT_TRUE(victims_alive_everywhere());
    EXPECT_TRUE(c.run_until([&] { return c.fullmesh(); }, 30s)) << c.dump();
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
    EXPECT_EQ(c.counters().false_positive_events, 0u);
    std::uint64_t dropped = 0;
    for (NodeId i = 0; i < kNodes; ++i) {
      dropped += c.node(i)->stats().accusations_above_known;
      EXPECT_LT(c.node(i)->incarnation(), 1000u) << "node " << i;
      EXPECT_EQ(c.node(i)->stats().refutes_saturated, 0u) << "node " << i;
    }
    EXPECT_GT(dropped, 0u);
  }
}

// What signatures must still close, bounded meanwhile: a forged leave at the KNOWN incarnation
// is believed, but members that apply it echo it to the owner (about 4 copies cluster-wide), so
// the live owner refutes and is alive again everywhere within seconds, never failed.
TEST(SimForged, LeaveAtTheKnownIncarnationIsRefutedWithinSeconds) {
  constexpr std::size_t kNodes = 60;
  constexpr NodeId kForger = 0;
  for (std::uint64_t seed : seeds(4)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = 0.05}});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 120s)) << c.dump();
    c.run_for(2s);
    const auto victim = static_cast<NodeId>(1 + seed % (kNodes - 1));
    const std::uint64_t known = c.node(victim)->incarnation();
    gossip::PacketBuilder pb(65000);
    EXPECT_TRUE(pb.add(gossip::Dead{c.name(victim), known, c.name(victim)}));
    const std::vector<std::byte> datagram = pb.finish();
    for (NodeId to = 1, told = 0; to < kNodes && told < 3; ++to) {  // gossip spreads it from there
      if (to == victim) continue;
      c.net().send(c.now(), kForger, to, Channel::kUnreliable, std::vector<std::byte>(datagram));
      ++told;
    }
    auto back_everywhere = [&] {
      for (NodeId i = 0; i < kNodes; ++i) {
        const auto m = c.view(i, victim);
        if (i != victim && (!m || m->state != MemberState::kAlive || m->incarnation <= known)) return false;
      }
      return true;
    };
    EXPECT_TRUE(c.run_until(back_everywhere, 5s)) << "victim " << victim << "\n" << c.dump();
    c.run_for(60s);
    EXPECT_TRUE(c.fullmesh()) << c.dump();
    EXPECT_EQ(c.failed_events(victim), 0u);
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
  }
}

// A host rebuilt under its old name with its data directory lost: its previous life reached
// incarnation ~50 (metadata changes), it crashed and every member holds it failed there; the new
// process starts at 0. It learns the verdict about itself from the seed's join answer, refutes
// above it, and is alive again on every member within seconds at 5 % loss (before, it was
// refused until the others reaped it, 24 h by default).
TEST(SimRebuilt, WipedNodeIsAliveEverywhereWithinSeconds) {
  constexpr std::size_t kNodes = 40;
  for (std::uint64_t seed : seeds(4)) {
    SCOPED_TRACE(seed_text(seed));
    SimCluster c({.nodes = kNodes, .seed = seed, .net = {.loss = 0.05}});
    ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 120s)) << c.dump();
    const auto victim = static_cast<NodeId>(1 + seed % (kNodes - 1));
    for (int k = 0; k < 50; ++k) ASSERT_TRUE(c.set_meta(victim, {std::byte{static_cast<unsigned char>(k)}}));
    const std::uint64_t old = c.node(victim)->incarnation();
    ASSERT_GE(old, 50u);
    const std::size_t updated = c.watch_update(victim, old);
    ASSERT_TRUE(c.run_until([&] { return c.watch(updated).all.has_value(); }, 60s)) << c.dump();
    c.crash(victim);
    const std::size_t failed = *c.failure_watch(victim);
    ASSERT_TRUE(c.run_until([&] { return c.watch(failed).all.has_value(); }, 60s)) << c.dump();
    c.restart(victim, /*wiped=*/0);
    const TimePoint t = c.now();
    auto back_everywhere = [&] {
      for (NodeId i = 0; i < kNodes; ++i) {
        const auto m = c.view(i, victim);
        if (i != victim && (!m || m->state != MemberState::kAlive || m->incarnation <= old)) return false;
      }
      return true;
    };
    ASSERT_TRUE(c.run_until(back_everywhere, 5s)) << "victim " << victim << "\n" << c.dump();
    EXPECT_LE(to_seconds(c.now() - t), 5.0);
    EXPECT_EQ(c.node(victim)->incarnation(), old + 1);
    EXPECT_GE(c.node(victim)->stats().refutes_above_own, 1u);
    c.run_for(60s);
    EXPECT_TRUE(c.fullmesh()) << c.dump();
    EXPECT_EQ(c.false_positives(), 0u) << c.dump();
  }
}

// ---------------------------------------------------------------------------------- scenario

ScenarioConfig small_scenario(std::uint64_t seed) {
  ScenarioConfig s;
  s.cluster.nodes = 30;
  s.cluster.seed = seed;
  s.cluster.net.loss = 0.01;
  s.fail = 1;
  s.stall = 1;
  s.duration = 60s;
  return s;
}

// The protocol counters summed over the nodes account for every datagram the cluster sent, and
// show what the second direct retry saves at 10 % loss: most ping-reqs and suspicions.
TEST(Scenario, ProtocolCountersAddUpAndTwoRetriesSaveMostRelaysUnderLoss) {
  auto lossy = [](unsigned retries) {
    ScenarioConfig s;
    s.cluster.nodes = 32;
    s.cluster.seed = 1;
    s.cluster.net.loss = 0.10;
    s.cluster.gossip.probe_retries = retries;
    s.fail = 0;
    s.duration = 300s;
    return run_scenario(s);
  };
  const ScenarioResult one = lossy(1);
  const ScenarioResult two = lossy(2);
  for (const ScenarioResult* r : {&one, &two}) {
    EXPECT_EQ(r->protocol.packets_sent, r->packets_sent);
    EXPECT_EQ(r->protocol.bytes_sent, r->bytes_sent);
    EXPECT_GT(r->protocol.probes, 32u * 250u);  // ~1 per node per second
    EXPECT_EQ(r->false_positives, 0u);
  }
  // At 10 % loss ~19 % of probes lose their ping or ack; a second retry leaves ~1/5 as many to
  // the relays (and to suspicion).
  EXPECT_GT(two.protocol.probe_retries, one.protocol.probe_retries);
  EXPECT_LT(two.protocol.indirect_probes * 3, one.protocol.indirect_probes);
  EXPECT_LT(two.protocol.suspicions_started, one.protocol.suspicions_started);
  EXPECT_LT(two.packets_sent, one.packets_sent);
}

// The rotation round robin (node_probe.cpp) probes every member once per period, so a crash
// draws its first probe, and with it the refusal that declares it at once, within two periods.
// With independent shuffled orders the wait was close to exponential: over these 60 seeds the
// slowest detection took 5.6 s (median 0.70 s, p90 2.6 s).
TEST(Scenario, EveryCrashIsProbedWithinTwoPeriods) {
  double slowest = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    ScenarioConfig s;
    s.cluster.nodes = 64;
    s.cluster.seed = seed;
    s.cluster.net.icmp = true;
    s.fail = 1;
    s.duration = 20s;
    s.dissemination = false;
    const ScenarioResult r = run_scenario(s);
    ASSERT_TRUE(r.detect_all_s.has_value()) << seed_text(seed);
    slowest = std::max(slowest, *r.detect_all_s);
    EXPECT_EQ(r.false_positives, 0u) << seed_text(seed);
  }
  EXPECT_LT(slowest, 2.1);
}

TEST(Scenario, SameSeedSameResultOtherSeedOtherResult) {
  const ScenarioResult a = run_scenario(small_scenario(5));
  const ScenarioResult b = run_scenario(small_scenario(5));
  const ScenarioResult c = run_scenario(small_scenario(6));
  EXPECT_EQ(a, b);
  EXPECT_NE(a.packets_sent, c.packets_sent);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.simulated_s, 60.0);
  ASSERT_EQ(a.crashed.size(), 1u);
  ASSERT_EQ(a.stalled.size(), 1u);
  EXPECT_NE(a.crashed[0], 0u);
  EXPECT_NE(a.crashed[0], a.stalled[0]);
}

TEST(Scenario, MeasuresEveryPhase) {
  for (std::uint64_t seed : seeds(3)) {
    SCOPED_TRACE(seed_text(seed));
    ScenarioConfig s = small_scenario(seed);
    s.duration = 120s;
    const ScenarioResult r = run_scenario(s);
    ASSERT_TRUE(r.crash_at_s.has_value());
    ASSERT_TRUE(r.detect_first_s.has_value());
    ASSERT_TRUE(r.detect_all_s.has_value());
    EXPECT_LE(*r.detect_first_s, *r.detect_all_s);
    ASSERT_TRUE(r.dissemination_all_s.has_value());
    ASSERT_TRUE(r.dissemination_p9999_s.has_value());
    EXPECT_LE(*r.dissemination_p9999_s, *r.dissemination_all_s);
    EXPECT_EQ(r.false_positives, 0u);
    EXPECT_GT(r.msgs_per_node_per_s, 0.5);
    EXPECT_GT(r.bytes_per_node_per_s, 10.0);
    EXPECT_EQ(r.stuck_deadlines, 0u);
  }
}

}  // namespace
}  // namespace weft::sim
