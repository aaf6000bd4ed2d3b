// Protocol rules of the gossip Node (SWIM + Lifeguard), on a fake clock and a fake network.
//
// Timings are asserted in virtual seconds with the defaults unless a test says otherwise: probe
// 1 s / 500 ms; suspicion min = max(suspicion_mult 2 * max(1, log10 n) * 1 s, floor 6 s),
// max = 6 * min, k = 3 confirmations when n >= k + 2 live members (else 0); retransmit_mult 4.
// Tests that depend on these first check them (defaults_as_assumed()).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "awareness.h"
#include "dissemination.h"
#include "node_harness.h"
#include "node_impl.h"
#include "suspicion.h"

namespace weft::gossip::test {
namespace {

double secs(Duration d) { return to_seconds(d); }

// Datagrams logged at the instant of a test's action went out before it, in the same step.
TimePoint just_after(TimePoint t) { return t + Duration(1); }

constexpr double kTol = 0.1;  // virtual seconds
// Before declaring a suspect failed, a member pings it (the last word): one probe timeout, scaled
// by the member's health score, 0.5 s at score 0.
constexpr double kLastWord = 0.5;

bool is_suspect(const Message& m) { return std::holds_alternative<Suspect>(m); }

// Datagrams from `from` to `to` carrying a message of type T that matches `pred`.
template <typename T>
std::vector<const Packet*> carrying(const Harness& h, std::optional<std::size_t> from,
                                    std::optional<std::size_t> to, const std::function<bool(const T&)>& pred,
                                    TimePoint since = kEpoch) {
  std::vector<const Packet*> out;
  for (const Packet* p : h.sent(from, to, type_of(Message(T{})), since)) {
    for (const Message& m : p->messages) {
      if (const T* t = std::get_if<T>(&m); t && pred(*t)) {
        out.push_back(p);
        break;
      }
    }
  }
  return out;
}

// Waits for the first probe `from` sends to `to` at or after `since`; returns it (or null).
const Packet* next_probe(Harness& h, std::size_t from, std::size_t to, TimePoint since,
                         Duration limit = 10s) {
  h.run_until([&] { return !h.probes(from, to, since).empty(); }, limit);
  auto pings = h.probes(from, to, since);
  return pings.empty() ? nullptr : pings.front();
}

// =============================================================================================
// Building blocks

TEST(SuspicionTest, TimeoutFormula) {
  // memberlist's table (suspicion_test.go): k = 3, min = 2 s, max = 30 s.
  EXPECT_EQ(Suspicion::timeout(3, 0, 2s, 30s), 30s);
  EXPECT_EQ(Suspicion::timeout(3, 1, 2s, 30s), 16s);
  EXPECT_EQ(Suspicion::timeout(3, 2, 2s, 30s), 7810ms);
  EXPECT_EQ(Suspicion::timeout(3, 3, 2s, 30s), 2s);
  EXPECT_EQ(Suspicion::timeout(3, 4, 2s, 30s), 2s);  // never below min
  EXPECT_EQ(Suspicion::timeout(0, 0, 2s, 30s), 2s);  // no confirmations expected: min at once
  // The defaults in a cluster of 4: min = 4 s, max = 24 s, k = 2.
  EXPECT_EQ(Suspicion::timeout(2, 0, 4s, 24s), 24s);
  EXPECT_EQ(Suspicion::timeout(2, 1, 4s, 24s), 11381ms);  // 24 - 20 * ln 2 / ln 3, whole ms
  EXPECT_EQ(Suspicion::timeout(2, 2, 4s, 24s), 4s);
}

TEST(SuspicionTest, MinTimeoutScalesWithLog10OfClusterSize) {
  EXPECT_EQ(Suspicion::min_timeout(4, 1, 1s, 0s), 4s);
  EXPECT_EQ(Suspicion::min_timeout(4, 10, 1s, 0s), 4s);
  EXPECT_EQ(Suspicion::min_timeout(4, 100, 1s, 0s), 8s);
  EXPECT_EQ(Suspicion::min_timeout(4, 1000, 1s, 0s), 12s);
  EXPECT_EQ(Suspicion::min_timeout(4, 100, 500ms, 0s), 4s);
  EXPECT_EQ(Suspicion::min_timeout(4, 10, 1s, 10s), 10s);  // the floor
}

TEST(SuspicionTest, IndependentConfirmationsMoveTheDeadlineEarlier) {
  Suspicion s("a", 2, 4s, 24s, kEpoch, 7);
  EXPECT_EQ(s.deadline(), kEpoch + 24s);
  EXPECT_FALSE(s.confirm("a"));  // the first accuser is no confirmation
  EXPECT_EQ(s.deadline(), kEpoch + 24s);
  EXPECT_TRUE(s.confirm("b"));
  EXPECT_EQ(s.deadline(), kEpoch + 11381ms);
  EXPECT_FALSE(s.confirm("b"));  // one confirmer counts once
  EXPECT_EQ(s.confirmations(), 1u);
  EXPECT_TRUE(s.confirm("c"));
  EXPECT_EQ(s.deadline(), kEpoch + 4s);
  EXPECT_FALSE(s.confirm("d"));  // k reached: already at min
  EXPECT_EQ(s.deadline(), kEpoch + 4s);
  EXPECT_EQ(s.last_from(), "c");
  EXPECT_EQ(s.id(), 7u);

  Suspicion lone("a", 0, 4s, 24s, kEpoch, 1);
  EXPECT_EQ(lone.deadline(), kEpoch + 4s);
  EXPECT_FALSE(lone.confirm("b"));
}

TEST(BroadcastQueueTest, RetransmitLimitIsMultTimesCeilLog10) {
  EXPECT_EQ(retransmit_limit(4, 1), 4u);
  EXPECT_EQ(retransmit_limit(4, 9), 4u);
  EXPECT_EQ(retransmit_limit(4, 10), 8u);
  EXPECT_EQ(retransmit_limit(4, 99), 8u);
  EXPECT_EQ(retransmit_limit(4, 100), 12u);
  EXPECT_EQ(retransmit_limit(3, 1000), 12u);
}

TEST(BroadcastQueueTest, QueueSendsLeastSentFirstNewestAmongEqualsAndRetiresAtTheLimit) {
  BroadcastQueue q;
  std::vector<std::uint32_t> retired;
  std::vector<std::uint32_t> stale;  // slots whose ref no longer encodes
  auto fill = [&](std::size_t budget, unsigned limit) {
    PacketBuilder pb(budget);
    q.fill(
        pb, limit,
        [&](BroadcastRef ref, std::vector<std::byte>& out) {
          if (std::find(stale.begin(), stale.end(), ref.slot) != stale.end()) return false;
          encode_message(Ack{ref.slot}, out);
          return true;
        },
        [&](BroadcastRef ref) { retired.push_back(ref.slot); });
    std::vector<std::uint32_t> order;
    if (pb.empty()) return order;
    auto d = decode_packet(pb.finish());
    EXPECT_TRUE(d.has_value());
    if (d) {
      for (const Message& m : d->messages) order.push_back(std::get<Ack>(m).seq);
    }
    return order;
  };
  for (std::uint32_t s = 0; s < 3; ++s) q.push({s, 1});
  EXPECT_EQ(fill(1400, 2), (std::vector<std::uint32_t>{2, 1, 0}));  // newest first
  q.push({3, 1});
  EXPECT_EQ(fill(1400, 2), (std::vector<std::uint32_t>{3, 2, 1, 0}));  // never-sent first
  EXPECT_EQ(retired, (std::vector<std::uint32_t>{2, 1, 0}));           // sent twice: done
  stale.push_back(3);
  EXPECT_TRUE(fill(1400, 2).empty());  // a stale entry is dropped, not sent
  EXPECT_TRUE(q.empty());

  // A small budget takes what fits; the rest waits its turn, still least-sent first.
  for (std::uint32_t s = 10; s < 20; ++s) q.push({s, 1});
  // Acks of small seq are 3 bytes; filling stops once less than kMinMessageBytes is free, so
  // 2 (envelope) + 3 * 3 + kMinMessageBytes bytes take 4 of them.
  auto first = fill(2 + 3 * 3 + BroadcastQueue::kMinMessageBytes, 100);
  EXPECT_EQ(first, (std::vector<std::uint32_t>{19, 18, 17, 16}));
  auto second = fill(1400, 100);
  EXPECT_EQ(second, (std::vector<std::uint32_t>{15, 14, 13, 12, 11, 10, 19, 18, 17, 16}));
}

TEST(AwarenessTest, ScoreIsClampedAndScalesDurations) {
  Awareness a(8);
  EXPECT_EQ(a.score(), 0u);
  a.apply(-1);
  EXPECT_EQ(a.score(), 0u);
  a.apply(3);
  EXPECT_EQ(a.score(), 3u);
  EXPECT_EQ(a.scale(1s), 4s);
  a.apply(100);
  EXPECT_EQ(a.score(), 7u);  // at most awareness_max - 1
  EXPECT_EQ(a.scale(500ms), 4s);
  a.apply(-2);
  EXPECT_EQ(a.score(), 5u);
}

// The expected timings below are derived by hand from these; a change of defaults shows here
// first, then in the timing tests that need new numbers.
bool defaults_as_assumed() {
  const Config c;
  return c.probe_interval == 1s && c.probe_timeout == 500ms && c.suspicion_mult == 2 &&
         c.suspicion_max_mult == 6 && c.suspicion_confirmations == 3 && c.suspicion_min_floor == 6s &&
         c.awareness_max == 8 && c.retransmit_mult == 4 && c.max_packet_bytes == 1400 &&
         c.sync_timeout == 5s && c.push_pull_interval == 30s && c.probe_retries == 2;
}

TEST(ConfigTest, DefaultsAreValidAndAsTheTimingTestsAssume) {
  EXPECT_TRUE(Config{}.validate());
  EXPECT_TRUE(defaults_as_assumed());
}

TEST(ConfigTest, RejectsBadValuesAndRelations) {
  const std::vector<std::pair<const char*, std::function<void(Config&)>>> bad = {
      {"probe_interval 0", [](Config& c) { c.probe_interval = 0s; }},
      {"probe_interval < 0", [](Config& c) { c.probe_interval = -1s; }},
      {"probe_timeout 0", [](Config& c) { c.probe_timeout = 0s; }},
      {"probe_timeout = probe_interval", [](Config& c) { c.probe_timeout = c.probe_interval; }},
      {"probe_timeout > probe_interval", [](Config& c) { c.probe_timeout = 2s; }},
      {"gossip_interval 0", [](Config& c) { c.gossip_interval = 0s; }},
      {"probe_retries 9", [](Config& c) { c.probe_retries = 9; }},
      {"reclaim_after < 0", [](Config& c) { c.reclaim_after = -1s; }},
      {"push_pull_interval 0", [](Config& c) { c.push_pull_interval = 0s; }},
      {"sync_timeout 0", [](Config& c) { c.sync_timeout = 0s; }},
      {"suspicion_mult 0", [](Config& c) { c.suspicion_mult = 0; }},
      {"suspicion_max_mult 0", [](Config& c) { c.suspicion_max_mult = 0; }},
      {"awareness_max 0", [](Config& c) { c.awareness_max = 0; }},
      {"retransmit_mult 0", [](Config& c) { c.retransmit_mult = 0; }},
      {"max_packet_bytes 511", [](Config& c) { c.max_packet_bytes = 511; }},
      {"max_packet_bytes 65001", [](Config& c) { c.max_packet_bytes = 65001; }},
      {"max_meta_bytes over the wire limit", [](Config& c) { c.max_meta_bytes = kMaxMetaBytes + 1; }},
      {"max_name_bytes 0", [](Config& c) { c.max_name_bytes = 0; }},
      {"max_name_bytes over the wire limit", [](Config& c) { c.max_name_bytes = kMaxNameBytes + 1; }},
      {"reap_after 0", [](Config& c) { c.reap_after = 0s; }},
      {"refused_confirmations 0", [](Config& c) { c.refused_confirmations = 0; }},
      {"refused_confirmations above indirect_checks", [](Config& c) { c.refused_confirmations = 4; }},
      {"refused_confirmations 0 with the fast path off",
       [](Config& c) {
         c.refused_fast_path = false;
         c.refused_confirmations = 0;
       }},
      // An alive message with the largest name and metadata must fit one datagram, or it is
      // never piggybacked: the broadcast stays queued forever (and leave never completes).
      {"max_meta_bytes does not fit max_packet_bytes",
       [](Config& c) {
         c.max_packet_bytes = 600;
         c.max_meta_bytes = 512;
       }},
  };
  for (const auto& [what, mutate] : bad) {
    Config c;
    mutate(c);
    const auto r = c.validate();
    EXPECT_FALSE(r) << what;
    if (!r) {
      EXPECT_FALSE(r.error().message.empty()) << what;
    }
  }
  // Boundaries that are fine.
  Config c;
  c.max_packet_bytes = 65000;
  c.max_meta_bytes = kMaxMetaBytes;
  c.max_name_bytes = kMaxNameBytes;
  EXPECT_TRUE(c.validate());
  c = Config{};
  c.max_packet_bytes = 512;
  c.max_meta_bytes = 256;
  EXPECT_TRUE(c.validate());
  c = Config{};
  c.probe_timeout = c.probe_interval - 1ms;
  EXPECT_TRUE(c.validate());
  c = Config{};
  c.refused_confirmations = c.indirect_checks;
  EXPECT_TRUE(c.validate());
  c = Config{};
  c.indirect_checks = 0;  // no relays: the fast path cannot fire, as before a valid config
  EXPECT_TRUE(c.validate());
  c = Config{};
  c.refused_fast_path = false;
  c.refused_confirmations = 10;
  EXPECT_TRUE(c.validate());
}

// =============================================================================================
// Probing (SWIM)

TEST(NodeProbe, PingIsAnsweredByAckEveryProbeInterval) {
  Harness h(2);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint since = h.now();
  const auto acks_before = h.node(0).stats().probe_acks;
  h.run_for(10s);
  auto pings = h.probes(0, 1, since);
  std::erase_if(pings, [&](const Packet* p) { return p->sent > h.now() - 100ms; });
  ASSERT_GE(pings.size(), 9u);
  for (std::size_t k = 0; k < pings.size(); ++k) {
    const Ping* ping = pings[k]->find<Ping>();
    EXPECT_EQ(ping->target, "n1");
    auto acks = carrying<Ack>(h, 1, 0, [&](const Ack& a) { return a.seq == ping->seq; });
    ASSERT_EQ(acks.size(), 1u) << "ping " << k;
    EXPECT_EQ(acks.front()->sent - pings[k]->sent, 1ms);  // answered on receipt
    if (k > 0) {
      EXPECT_EQ(pings[k]->sent - pings[k - 1]->sent, 1s);
    }
  }
  EXPECT_GE(h.node(0).stats().probe_acks - acks_before, pings.size());
  EXPECT_EQ(h.node(0).health_score(), 0u);
  EXPECT_EQ(h.node(0).stats().indirect_probes, 0u);
  EXPECT_EQ(h.node(0).stats().probe_failures, 0u);
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect).empty());
}

// Rotation round robin: in every probe period each member is probed by exactly one other. A
// member whose shared clock jumps ahead falls out of step; when the clock comes back it follows
// at once, and the periods are permutations again.
TEST(NodeProbe, EveryMemberIsProbedOncePerPeriodAndAClockSteppedBackIsFollowed) {
  constexpr std::size_t kN = 6;
  Harness h(kN);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.run_for(5s);
  // Regular probes each member received in each whole period [since + k s, since + (k + 1) s).
  auto probed_per_period = [&](TimePoint since, int periods) {
    std::vector<std::vector<int>> got(static_cast<std::size_t>(periods), std::vector<int>(kN, 0));
    for (std::size_t from = 0; from < kN; ++from) {
      for (std::size_t to = 0; to < kN; ++to) {
        if (from == to) continue;
        for (const Packet* p : h.probes(from, to, since)) {
          const auto k = (p->sent - since) / 1s;
          if (k < periods) ++got[static_cast<std::size_t>(k)][to];
        }
      }
    }
    return got;
  };
  auto all_once = [&](const std::vector<std::vector<int>>& got) {
    for (const auto& period : got) {
      for (int c : period) {
        if (c != 1) return false;
      }
    }
    return true;
  };
  // Periods start on whole seconds of the shared clock (the harness's, offset 0).
  auto next_period = [&] {
    const auto into = h.now().time_since_epoch() % 1s;
    return h.now() + (1s - into);
  };
  TimePoint since = next_period();
  h.run_to(since + 10s);
  EXPECT_TRUE(all_once(probed_per_period(since, 10)));

  h.node(0).set_shared_clock(3s);  // n0 now counts three periods ahead of the others
  since = next_period();
  h.run_to(since + 10s);
  EXPECT_FALSE(all_once(probed_per_period(since, 10)));

  h.node(0).set_shared_clock(Duration::zero());  // the clock steps back
  h.run_for(1s);
  since = next_period();
  h.run_to(since + 10s);
  EXPECT_TRUE(all_once(probed_per_period(since, 10)));
}

TEST(NodeProbe, PingForAnotherNameIsNotAnswered) {
  Harness h(1);
  h.join(0, {});
  const TimePoint since = h.now();
  const Endpoint peer = Endpoint::v4(10, 0, 0, 1, 7946);
  h.inject(0, peer, {Ping{9, "somebody-else"}});
  EXPECT_EQ(h.node(0).stats().pings_wrong_target, 1u);
  h.inject(0, peer, {Ping{10, "n0"}});
  const auto acks = carrying<Ack>(
      h, 0, std::nullopt, [](const Ack&) { return true; }, since);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks.front()->find<Ack>()->seq, 10u);
  EXPECT_EQ(acks.front()->to_addr, peer);
}

TEST(NodeProbe, LostDirectPathIsBridgedByRelaysWithoutSuspicion) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.cut(0, 1);  // n0 <-> n1 lost both ways; n2 and n3 still reach both
  const TimePoint since = just_after(h.now());
  h.run_for(30s);
  auto pings = h.probes(0, 1, since);
  std::erase_if(pings, [&](const Packet* p) { return p->sent > h.now() - 2s; });
  ASSERT_GE(pings.size(), 3u);
  for (const Packet* p : pings) {
    const std::uint32_t seq = p->find<Ping>()->seq;
    auto reqs =
        carrying<IndirectPing>(h, 0, std::nullopt, [&](const IndirectPing& r) { return r.seq == seq; });
    // indirect_checks = 3, but only n2 and n3 are eligible; asked one probe timeout later.
    ASSERT_EQ(reqs.size(), 2u) << h.dump();
    for (const Packet* r : reqs) {
      const IndirectPing* ip = r->find<IndirectPing>();
      EXPECT_EQ(r->sent - p->sent, 500ms);
      EXPECT_EQ(ip->target, "n1");
      EXPECT_EQ(ip->target_addr, h.addr(1));
      EXPECT_TRUE(ip->want_nack);
      EXPECT_TRUE(r->to == 2 || r->to == 3);
    }
    // A relay forwards n1's ack under n0's sequence number, within the probe period.
    auto acks = carrying<Ack>(h, std::nullopt, 0, [&](const Ack& a) { return a.seq == seq; });
    ASSERT_FALSE(acks.empty());
    EXPECT_TRUE(acks.front()->from == 2 || acks.front()->from == 3);
    EXPECT_LT(acks.front()->sent - p->sent, 1s);
  }
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_TRUE(h.events_about(i, "n1", EventType::kSuspect).empty()) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n0", EventType::kSuspect).empty()) << "viewer n" << i;
  }
  EXPECT_EQ(h.node(0).stats().probe_failures, 0u);
  EXPECT_EQ(h.node(0).health_score(), 0u);
  EXPECT_GE(h.node(0).stats().indirect_probes, 2 * pings.size());
  EXPECT_GT(h.node(2).stats().relayed_pings + h.node(3).stats().relayed_pings, 0u);
  EXPECT_TRUE(h.sent(std::nullopt, 0, MsgType::kNack, since).empty());  // relays got their acks
}

// Lifeguard §IV-A: a relay that hears nothing from the target tells the prober with a nack, in
// time for the prober to count it (the paper: at 80% of the probe timeout). A prober that gets
// its nacks knows its own network works and does not blame itself.
TEST(NodeProbe, RelaysNackInTimeWhenTheTargetIsSilent) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_EQ(h.node(0).health_score(), 0u);
  h.crash(1);
  const Packet* ping = next_probe(h, 0, 1, h.now());
  ASSERT_NE(ping, nullptr);
  const TimePoint t0 = ping->sent;
  const std::uint32_t seq = ping->find<Ping>()->seq;

  h.run_to(t0 + 1s);  // n0's probe period ends (score 0: 1 s)
  const unsigned score_after_probe = h.node(0).health_score();
  h.run_to(t0 + 1100ms);
  auto nacks = carrying<Nack>(h, std::nullopt, 0, [&](const Nack& n) { return n.seq == seq; });
  ASSERT_EQ(nacks.size(), 2u) << "one nack from each relay";
  for (const Packet* n : nacks) {
    EXPECT_TRUE(n->from == 2 || n->from == 3);
    EXPECT_LT(n->sent + 1ms, t0 + 1s) << "nack sent " << secs(n->sent - t0)
                                      << " s after the ping: it arrives after n0's probe period (1 s) ended";
  }
  EXPECT_GE(h.node(2).stats().nacks_sent + h.node(3).stats().nacks_sent, 2u);
  EXPECT_EQ(score_after_probe, 0u) << "both nacks were answered: the missed ack is not n0's fault";
}

// n0's health score right after its probe of the crashed n1 ends, when the nacks of the relays
// in `silenced` never reach it.
unsigned score_after_failed_probe(const std::vector<std::size_t>& silenced) {
  Harness h(4);
  EXPECT_TRUE(h.form_cluster()) << h.dump();
  h.crash(1);
  for (std::size_t r : silenced) h.strip(MsgType::kNack, r, 0);
  const Packet* ping = next_probe(h, 0, 1, h.now());
  if (ping == nullptr) return 100;
  const TimePoint t0 = ping->sent;
  EXPECT_EQ(h.node(0).health_score(), 0u);
  h.run_to(t0 + 1s);
  return h.node(0).health_score();
}

TEST(NodeProbe, MissingNacksRaiseTheProbersHealthScore) {
  EXPECT_EQ(score_after_failed_probe({2}), 1u) << "one of two nacks missing";
  EXPECT_EQ(score_after_failed_probe({2, 3}), 2u) << "both nacks missing";
}

// =============================================================================================
// Suspicion and failure

TEST(NodeSuspicion, SilentMemberIsSuspectedThenFailedAfterTheTimeout) {
  Harness h(2);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(1);
  const Packet* ping = next_probe(h, 0, 1, h.now());
  ASSERT_NE(ping, nullptr);
  const TimePoint t0 = ping->sent;
  h.run_for(10s);
  const auto suspect = h.first_event(0, "n1", EventType::kSuspect);
  const auto failed = h.first_event(0, "n1", EventType::kFailed);
  ASSERT_TRUE(suspect && failed) << h.dump();
  ASSERT_TRUE(defaults_as_assumed());
  // Suspected when the probe period ends without an ack (no relays in a cluster of two)...
  EXPECT_NEAR(secs(*suspect - t0), 1.0, kTol);
  // ...and failed after min = max(2 * max(1, log10 2) * 1 s, 6 s) = 6 s (k = 0: too few members
  // to expect confirmations), and its last word. Every probe of n1 failed with no relay to ask,
  // so n0's health score is 3 by then and scales the probe timeout: 4 * 0.5 s.
  EXPECT_NEAR(secs(*failed - *suspect), 6.0 + 4 * kLastWord, kTol);
  EXPECT_EQ(h.state(0, 1), MemberState::kFailed);
  EXPECT_EQ(h.node(0).stats().suspicions_started, 1u);
  EXPECT_EQ(h.node(0).stats().last_words, 2u);
  EXPECT_EQ(h.node(0).stats().failed_declared, 1u);
  // Every ping to n1 after the 6 s (the two last words, and a regular probe) has the suspicion
  // in front.
  int last_pings = 0;
  for (const Packet* p : carrying<Ping>(h, 0, 1, [](const Ping&) { return true; }, *suspect + 6s)) {
    if (p->sent > *failed) continue;
    ++last_pings;
    EXPECT_TRUE(std::any_of(p->messages.begin(), p->messages.end(), is_suspect));
  }
  EXPECT_GE(last_pings, 2);
  EXPECT_GE(h.node(0).stats().probe_failures, 1u);
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kRecovered).empty());
  // The failed still get gossip for a while, so that a live one could refute.
  EXPECT_FALSE(carrying<Dead>(
                   h, 0, 1, [](const Dead& d) { return d.name == "n1" && d.from == "n0"; }, *failed)
                   .empty());
}

TEST(NodeSuspicion, CrashIsDetectedEverywhereWithinTheSuspicionBounds) {
  ASSERT_TRUE(defaults_as_assumed());
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(4);
  const TimePoint crash = h.now();
  h.run_for(60s);
  TimePoint first_suspect = TimePoint::max();
  TimePoint first_failed = TimePoint::max();
  for (std::size_t i = 0; i < 4; ++i) {
    const auto s = h.first_event(i, "n4", EventType::kSuspect, crash);
    const auto f = h.first_event(i, "n4", EventType::kFailed, crash);
    ASSERT_TRUE(s && f) << "viewer n" << i << "\n" << h.dump();
    // n = 5 live members: min = max(2 * max(1, log10 5) * 1 s, 6 s) = 6 s, max = 6 * min = 36 s.
    EXPECT_LE(secs(*f - *s), 36.0 + 1e-9) << "viewer n" << i;
    EXPECT_EQ(h.state(i, 4), MemberState::kFailed);
    EXPECT_TRUE(h.events_about(i, "n4", EventType::kRecovered, crash).empty());
    first_suspect = std::min(first_suspect, *s);
    first_failed = std::min(first_failed, *f);
  }
  EXPECT_GE(secs(first_failed - first_suspect), 6.0 - 1e-9);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(h.events_about(i, "n" + std::to_string((i + 1) % 4), EventType::kSuspect).empty());
  }
}

// A probe accuses what it probed: when the member restarts (higher incarnation) while n0's ping to
// the old process is unanswered, the failed probe must not make n0 suspect the new process.
TEST(NodeSuspicion, UnansweredProbeOfAReplacedProcessDoesNotSuspectTheNewOne) {
  Harness h(2);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const Packet* ping = next_probe(h, 0, 1, just_after(h.now()));
  ASSERT_NE(ping, nullptr);
  const TimePoint t0 = ping->sent;
  h.crash(1);  // the ping is lost with the process
  h.run_to(t0 + 100ms);
  h.restart(1, 1);
  h.join(1, {0});
  ASSERT_TRUE(h.run_until([&] { return h.node(0).member("n1")->incarnation == 1; }, 100ms)) << h.dump();
  h.run_to(t0 + 1s + 100ms);  // n0's probe period ended without an ack from the old process
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect, t0).empty()) << "n0 suspected the new process";
  EXPECT_EQ(h.node(1).incarnation(), 1u) << "the new process had to refute a suspicion of itself";
  EXPECT_EQ(h.state(0, 1), MemberState::kAlive);
}

// Seconds from n0's suspicion of the crashed n1 to n0 declaring it failed, in a cluster of 6,
// when n0 hears no accusation but its own and `confirmers` (injected one second apart).
double suspicion_to_failure(const std::vector<std::string>& confirmers) {
  Harness h(6);
  EXPECT_TRUE(h.form_cluster()) << h.dump();
  h.strip(MsgType::kSuspect, std::nullopt, 0);
  h.strip(MsgType::kDead, std::nullopt, 0);
  // Full-state syncs would confirm too: n0 gets none (its own go unanswered).
  h.add_filter([](Packet& p) { return p.to == 0 && p.channel == Channel::kReliable; });
  h.crash(1);
  EXPECT_TRUE(h.run_until([&] { return h.first_event(0, "n1", EventType::kSuspect).has_value(); }, 10s));
  const auto ts = h.first_event(0, "n1", EventType::kSuspect);
  if (!ts) return -1;
  const std::uint64_t inc = h.node(0).member("n1")->incarnation;
  for (const std::string& c : confirmers) {
    h.run_for(1s);
    h.inject(0, h.addr(2), {Suspect{"n1", inc, c}});
  }
  h.run_until([&] { return h.first_event(0, "n1", EventType::kFailed).has_value(); }, 40s);
  const auto tf = h.first_event(0, "n1", EventType::kFailed);
  if (!tf) return -1;
  return secs(*tf - *ts);
}

TEST(NodeSuspicion, IndependentConfirmationsMoveTheDeadlineEarlier) {
  ASSERT_TRUE(defaults_as_assumed());
  // 6 live members: min = max(2 * max(1, log10 6) * 1 s, 6 s) = 6 s, max = 36 s, k = 3;
  // timeout(c) = 36 s - 30 s * ln(c + 1) / ln 4: 36, 21, 12.225, 6 s; then the last word.
  EXPECT_NEAR(suspicion_to_failure({}), 36.0 + kLastWord, kTol);
  EXPECT_NEAR(suspicion_to_failure({"n2"}), 21.0 + kLastWord, kTol);
  EXPECT_NEAR(suspicion_to_failure({"n2", "n2"}), 21.0 + kLastWord, kTol);  // the same confirmer twice
  EXPECT_NEAR(suspicion_to_failure({"n0"}), 36.0 + kLastWord, kTol);        // n0 is the first accuser itself
  EXPECT_NEAR(suspicion_to_failure({"n2", "n3"}), 12.225 + kLastWord, kTol);
  EXPECT_NEAR(suspicion_to_failure({"n2", "n3", "n4"}), 6.0 + kLastWord, kTol);
  // A confirmation that comes after the shrunk deadline has passed starts the last word at once.
  EXPECT_NEAR(suspicion_to_failure({"n2", "n3", "n4", "n5"}), 6.0 + kLastWord, kTol);
}

// n0 suspects n1 on n2's word and then misses every copy of n1's refutation: all alives about n1
// to n0 are lost, and so are n0's syncs. Without an answer to its last word n0 declares n1 failed;
// with one (the loss ends just before the timeout) n1 stays alive, at its refuted incarnation.
double last_word_case(bool answer_arrives, std::uint64_t* last_words, MemberState* n1_state) {
  Harness h(6);
  EXPECT_TRUE(h.form_cluster()) << h.dump();
  const int no_alive = h.add_filter([](Packet& p) {
    if (p.to != 0) return false;
    if (p.channel == Channel::kReliable) return true;
    p.erase_if([](const Message& m) { return std::holds_alternative<Alive>(m) && std::get<Alive>(m).name == "n1"; });
    return false;
  });
  const std::uint64_t inc = h.node(0).member("n1")->incarnation;
  h.inject(0, h.addr(2), {Suspect{"n1", inc, "n2"}});
  const TimePoint ts = h.now();
  EXPECT_EQ(h.state(0, 1), MemberState::kSuspect);
  // k = 3, no confirmation: the timeout is max = 36 s.
  EXPECT_TRUE(h.run_until([&] { return h.node(1).incarnation() > inc; }, 5s)) << "n1 refuted";
  h.run_to(ts + 35900ms);
  EXPECT_EQ(h.state(0, 1), MemberState::kSuspect) << "n0 missed the refutation";
  if (answer_arrives) h.remove_filter(no_alive);
  h.run_to(ts + 40s);
  *last_words = h.node(0).stats().last_words;
  *n1_state = *h.state(0, 1);
  const auto failed = h.first_event(0, "n1", EventType::kFailed, ts);
  return failed ? secs(*failed - ts) : -1.0;
}

TEST(NodeSuspicion, TheLastWordSavesAMemberWhoseRefutationWasLost) {
  ASSERT_TRUE(defaults_as_assumed());
  std::uint64_t words = 0;
  MemberState st = MemberState::kAlive;
  EXPECT_NEAR(last_word_case(false, &words, &st), 36.0 + kLastWord, kTol);
  EXPECT_EQ(words, 2u);
  EXPECT_EQ(st, MemberState::kFailed);

  EXPECT_LT(last_word_case(true, &words, &st), 0.0) << "never declared failed";
  EXPECT_GE(words, 1u);
  EXPECT_EQ(st, MemberState::kAlive);
}

// =============================================================================================
// Refused-probe fast path (ICMP "port unreachable")

// Runs until node `from` has just started its regular probe of a member other than `avoid`, so
// that a report about `avoid` finds no probe of it running (a probe runs for one interval).
bool while_probing_another(Harness& h, std::size_t from, std::size_t avoid) {
  for (int tries = 0; tries < 20; ++tries) {
    const TimePoint since = just_after(h.now());
    std::optional<std::size_t> target;
    h.run_until(
        [&] {
          for (std::size_t j = 0; j < h.size(); ++j) {
            if (j != from && !h.probes(from, j, since).empty()) target = j;
          }
          return target.has_value();
        },
        10s);
    if (!target) return false;
    h.run_for(10ms);
    if (*target != avoid) return true;
  }
  return false;
}

// Harness delay 1 ms: a ping to the stopped n1 arrives after 1 ms and its ICMP is back after 2.
TEST(NodeRefused, RefusalConfirmedByARelayFailsTheMemberAtOnce) {
  Harness h(4);
  h.set_icmp(true);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_TRUE(while_probing_another(h, 0, 1)) << h.dump();
  h.crash(1);
  const TimePoint t = h.now();
  h.unreachable(0, h.addr(1));  // say, a gossip datagram to n1 drew an ICMP

  // A verify probe goes out at once, out of turn.
  const auto pings = h.probes(0, 1, t);
  ASSERT_EQ(pings.size(), 1u);
  EXPECT_EQ(pings[0]->sent, t);
  const std::uint32_t seq = pings[0]->find<Ping>()->seq;
  EXPECT_EQ(h.node(0).stats().refused_verifies, 1u);

  // Its own refusal is back at t + 2 ms: both relays are asked then, not after probe_timeout.
  h.run_to(t + 3ms);
  const auto reqs = carrying<IndirectPing>(h, 0, std::nullopt, [&](const IndirectPing& r) { return r.seq == seq; });
  ASSERT_EQ(reqs.size(), 2u) << h.dump();
  for (const Packet* r : reqs) EXPECT_EQ(r->sent, t + 2ms);
  // A refused nack from someone n0 did not ask is no confirmation.
  h.inject(0, Endpoint::v4(10, 6, 6, 6, 7946), {Nack{.seq = seq, .refused = true}});
  EXPECT_FALSE(h.first_event(0, "n1", EventType::kFailed, t).has_value());

  h.run_to(t + 6ms);
  // The relays' pings (t + 3 ms) are refused at t + 5 ms: they nack at once, flagged.
  const auto nacks = carrying<Nack>(h, std::nullopt, 0, [&](const Nack& n) { return n.seq == seq; });
  ASSERT_EQ(nacks.size(), 2u) << h.dump();
  for (const Packet* n : nacks) {
    const Nack* nack = n->find<Nack>();
    ASSERT_NE(nack, nullptr);
    EXPECT_TRUE(nack->refused);
    EXPECT_EQ(n->sent, t + 5ms);
  }
  // Own refusal + refused_confirmations (1) refused nack: failed as the first one arrives, with
  // no suspicion on the way, and everyone is told directly.
  const auto failed = h.first_event(0, "n1", EventType::kFailed, t);
  ASSERT_TRUE(failed.has_value()) << h.dump();
  EXPECT_EQ(*failed, t + 6ms);
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect, t).empty());
  EXPECT_FALSE(carrying<Dead>(h, 0, 2, [](const Dead& d) { return d.name == "n1" && d.from == "n0"; }, t).empty());
  const GossipStats& s = h.node(0).stats();
  EXPECT_EQ(s.unreachable_reports, 2u);  // the injected report and the verify's own ICMP
  EXPECT_EQ(s.refused_probes, 1u);
  EXPECT_EQ(s.refused_nacks_received, 2u);
  EXPECT_EQ(s.refused_failures, 1u);
  EXPECT_EQ(s.failed_declared, 0u);  // no suspicion timer expired
  EXPECT_EQ(h.node(0).health_score(), 0u);
  h.run_to(t + 7ms);
  for (std::size_t i : {2u, 3u}) {
    const auto f = h.first_event(i, "n1", EventType::kFailed, t);
    ASSERT_TRUE(f.has_value()) << "viewer n" << i;
    EXPECT_LE(*f, t + 7ms) << "viewer n" << i;
    EXPECT_EQ(h.node(i).stats().refused_nacks_sent, 1u) << "relay n" << i;
    EXPECT_EQ(h.node(i).stats().refused_verifies, 0u) << "a refused relayed ping is the asker's evidence";
  }
}

// Without a second member's confirmation nothing is shortcut: the relays here never see an ICMP
// (say, their firewall drops it), so their nacks are plain and n1 takes the ordinary path.
TEST(NodeRefused, RefusalWithoutConfirmationKeepsTheOrdinarySuspicionTiming) {
  ASSERT_TRUE(defaults_as_assumed());
  Harness h(4);
  h.set_icmp(true);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.add_filter([](Packet& p) { return p.icmp && p.to != 0; });
  h.crash(1);
  const TimePoint crash = h.now();
  h.run_for(30s);

  TimePoint first_suspect = TimePoint::max();
  TimePoint first_failed = TimePoint::max();
  for (std::size_t i : {0u, 2u, 3u}) {
    const auto s = h.first_event(i, "n1", EventType::kSuspect, crash);
    const auto f = h.first_event(i, "n1", EventType::kFailed, crash);
    ASSERT_TRUE(s && f) << "viewer n" << i << "\n" << h.dump();
    first_suspect = std::min(first_suspect, *s);
    first_failed = std::min(first_failed, *f);
    EXPECT_EQ(h.node(i).stats().refused_failures, 0u) << "viewer n" << i;
  }
  // 4 live members (< k + 2): the timeout is min = max(2 * 1 * 1 s, 6 s floor) = 6 s, then the
  // last word (its pings draw refusals that no relay confirms).
  EXPECT_NEAR(secs(first_failed - first_suspect), 6.0 + kLastWord, kTol);
  EXPECT_GE(secs(first_failed - crash), 6.0);

  // n0 did try: its first ping to n1 was refused and asked the relays at once.
  const auto pings = h.probes(0, 1, crash);
  ASSERT_FALSE(pings.empty());
  const std::uint32_t seq = pings.front()->find<Ping>()->seq;
  const auto reqs = carrying<IndirectPing>(h, 0, std::nullopt, [&](const IndirectPing& r) { return r.seq == seq; });
  ASSERT_FALSE(reqs.empty());
  EXPECT_EQ(reqs.front()->sent, pings.front()->sent + 2ms);
  EXPECT_GE(h.node(0).stats().refused_probes, 1u);
  EXPECT_EQ(h.node(0).stats().refused_nacks_received, 0u);
  EXPECT_TRUE(carrying<Nack>(h, std::nullopt, 0, [](const Nack& n) { return n.refused; }).empty());
}

TEST(NodeRefused, RelayNacksAtOnceWhenItsPingIsRefused) {
  Harness h(3);
  h.set_icmp(true);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(1);
  const TimePoint t = h.now();
  const auto nacks_before = h.node(2).stats().nacks_sent;
  h.inject(2, h.addr(0), {IndirectPing{77, "n1", h.addr(1), /*want_nack=*/true}});
  h.inject(2, h.addr(0), {IndirectPing{78, "n1", h.addr(1), /*want_nack=*/false}});
  h.run_for(600ms);  // past the 400 ms at which a plain nack would go
  const auto nacks = carrying<Nack>(h, 2, 0, [](const Nack& n) { return n.seq == 77 || n.seq == 78; }, t);
  ASSERT_EQ(nacks.size(), 1u) << "one nack, only where one was asked for";
  const Nack* n = nacks.front()->find<Nack>();
  EXPECT_EQ(n->seq, 77u);
  EXPECT_TRUE(n->refused);
  EXPECT_EQ(nacks.front()->sent, t + 2ms);  // ping at t, its ICMP back at t + 2 ms
  // (n0's own probes of n1 may ask n2 too: at least ours.)
  EXPECT_GE(h.node(2).stats().nacks_sent - nacks_before, 1u);
  EXPECT_GE(h.node(2).stats().refused_nacks_sent, 1u);
  EXPECT_EQ(h.node(2).stats().refused_verifies, 0u);
}

// A refusal can be stale or forged: the relay nacks at once but keeps the request, so the ack
// of a target that is alive after all still reaches the asker.
TEST(NodeRefused, RelayStillForwardsAnAckAfterARefusedNack) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint t = h.now();
  h.inject(2, h.addr(0), {IndirectPing{91, "n1", h.addr(1), /*want_nack=*/true}});
  h.unreachable(2, h.addr(1));
  h.run_for(10ms);
  const auto nacks = carrying<Nack>(h, 2, 0, [](const Nack& n) { return n.seq == 91; }, t);
  ASSERT_EQ(nacks.size(), 1u);
  const Nack* nack = nacks.front()->find<Nack>();
  ASSERT_NE(nack, nullptr);
  EXPECT_TRUE(nack->refused);
  EXPECT_EQ(nacks.front()->sent, t);
  const auto acks = carrying<Ack>(h, 2, 0, [](const Ack& a) { return a.seq == 91; }, t);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks.front()->sent, t + 2ms);
}

TEST(NodeRefused, AnAckWinsOverRefusals) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.cut(0, 1);  // n0's own pings to n1 are lost; the relays still reach it
  ASSERT_TRUE(while_probing_another(h, 0, 1)) << h.dump();
  const TimePoint t = h.now();
  h.unreachable(0, h.addr(1));  // forged or stale: n1 is alive
  const auto pings = h.probes(0, 1, t);
  ASSERT_EQ(pings.size(), 1u);
  const std::uint32_t seq = pings[0]->find<Ping>()->seq;
  h.run_for(1ms);
  h.unreachable(0, h.addr(1));  // taken as the verify's own refusal: the relays are asked now
  const auto reqs = carrying<IndirectPing>(h, 0, std::nullopt, [&](const IndirectPing& r) { return r.seq == seq; });
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs.front()->sent, t + 1ms);
  h.run_for(10ms);
  EXPECT_FALSE(carrying<Ack>(h, std::nullopt, 0, [&](const Ack& a) { return a.seq == seq; }).empty());
  // Refused nacks after the ack change nothing, even from the relays that were asked.
  h.inject(0, h.addr(2), {Nack{.seq = seq, .refused = true}});
  h.inject(0, h.addr(3), {Nack{.seq = seq, .refused = true}});
  h.run_for(2s);
  EXPECT_EQ(h.state(0, 1), MemberState::kAlive);
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kFailed, t).empty());
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect, t).empty());
  EXPECT_EQ(h.node(0).stats().refused_probes, 1u);
  EXPECT_EQ(h.node(0).stats().refused_failures, 0u);
}

TEST(NodeRefused, VerifyProbesAreRateLimitedToOnePerMemberPerProbeInterval) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_TRUE(while_probing_another(h, 0, 1)) << h.dump();
  const TimePoint t = h.now();
  for (int k = 0; k < 5; ++k) {  // n1 is alive: five stale reports within 750 ms
    h.unreachable(0, h.addr(1));
    h.run_for(150ms);
  }
  EXPECT_EQ(h.probes(0, 1, t).size(), 1u) << "one verify ping, no regular probe of n1 yet";
  EXPECT_EQ(h.node(0).stats().refused_verifies, 1u);
  EXPECT_EQ(h.node(0).stats().verifies_limited, 4u);
  // A probe interval after the first, another report may verify again.
  ASSERT_GE(h.now(), t + 750ms);
  ASSERT_TRUE(while_probing_another(h, 0, 1)) << h.dump();
  ASSERT_GE(h.now(), t + 1s);
  const TimePoint t2 = h.now();
  h.unreachable(0, h.addr(1));
  EXPECT_EQ(h.probes(0, 1, t2).size(), 1u);
  EXPECT_EQ(h.node(0).stats().refused_verifies, 2u);
  h.run_for(3s);
  EXPECT_EQ(h.node(0).health_score(), 0u) << "verify probes do not move the health score";
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect, t).empty());
}

TEST(NodeRefused, ReportsAboutNoLiveMemberAreIgnored) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(2);
  ASSERT_TRUE(h.run_until([&] { return h.state(0, 2) == MemberState::kFailed; }, 60s)) << h.dump();
  const GossipStats before = h.node(0).stats();
  const std::size_t wire_before = h.wire().size();
  const std::size_t events_before = h.events(0).size();
  h.unreachable(0, Endpoint::v4(10, 9, 9, 9, 7946));  // nobody we know
  h.unreachable(0, h.addr(0));                        // ourselves
  h.unreachable(0, h.addr(2));                        // failed already
  EXPECT_EQ(h.wire().size(), wire_before) << "nothing sent";
  const GossipStats& s = h.node(0).stats();
  EXPECT_EQ(s.unreachable_reports - before.unreachable_reports, 3u);
  EXPECT_EQ(s.unreachable_ignored - before.unreachable_ignored, 3u);
  EXPECT_EQ(s.refused_verifies, before.refused_verifies);
  h.run_for(10ms);
  EXPECT_EQ(h.events(0).size(), events_before);

  // With the fast path off, even a report about a live member is only counted.
  Config off;
  off.refused_fast_path = false;
  Harness g(3, off);
  ASSERT_TRUE(g.form_cluster()) << g.dump();
  const std::size_t g_wire = g.wire().size();
  g.unreachable(0, g.addr(1));
  EXPECT_EQ(g.wire().size(), g_wire);
  EXPECT_EQ(g.node(0).stats().unreachable_ignored, 1u);
  EXPECT_EQ(g.node(0).stats().refused_verifies, 0u);
}

// =============================================================================================
// Refutation, buddy system, health

TEST(NodeRefute, SuspectLearnsOnTheBuddyPingAndRefutes) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  // n1 may hear of the suspicion only on a ping from n0: suspicions are stripped from everything
  // else, and full-state syncs (which would carry it too) do not reach n1.
  h.add_filter([](Packet& p) {
    if (p.to != 1) return false;
    if (p.channel == Channel::kReliable) return true;
    if (!(p.from == 0 && p.has(MsgType::kPing))) p.erase_if(is_suspect);
    return false;
  });
  const std::uint64_t inc = h.node(1).incarnation();
  const TimePoint t = h.now();
  h.inject(0, h.addr(2), {Suspect{"n1", inc, "n2"}});
  ASSERT_EQ(h.state(0, 1), MemberState::kSuspect);
  ASSERT_TRUE(h.run_until([&] { return h.node(1).incarnation() > inc; }, 3s)) << h.dump();
  EXPECT_EQ(h.node(1).incarnation(), inc + 1);
  EXPECT_EQ(h.node(1).stats().refutes, 1u);

  // n0's first ping to n1 after the accusation (its probe, or one it relays for n2) carried the
  // suspicion, ahead of the ping.
  auto pings = h.sent(0, 1, MsgType::kPing, just_after(t));
  ASSERT_FALSE(pings.empty());
  const auto& msgs = pings.front()->messages;
  ASSERT_GE(msgs.size(), 2u);
  const Suspect* s = std::get_if<Suspect>(&msgs[0]);
  ASSERT_NE(s, nullptr) << "first message is not the suspicion";
  EXPECT_EQ(s->name, "n1");
  EXPECT_EQ(s->incarnation, inc);
  EXPECT_TRUE(std::holds_alternative<Ping>(msgs[1]));

  // Everyone sees n1 alive again at the new incarnation; nobody declares it failed.
  h.run_for(5s);
  for (std::size_t i : {0u, 2u}) {
    const auto m = h.node(i).member("n1");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->state, MemberState::kAlive) << "viewer n" << i;
    EXPECT_EQ(m->incarnation, inc + 1) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n1", EventType::kFailed).empty());
  }
  const auto rec = h.events_about(0, "n1", EventType::kRecovered, t);
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.front().ev.incarnation, inc + 1);
  EXPECT_EQ(rec.front().ev.state, MemberState::kAlive);
  // Round robin over 2 members, reshuffled each pass: n0 pings n1 within 3 probe periods.
  EXPECT_LT(secs(rec.front().at - t), 3.0 + kTol);
}

// Lifeguard §IV-C: any node that pings a suspect, for itself or as a relay, tells it first.
TEST(NodeRefute, RelayPingToASuspectCarriesTheSuspicionFirst) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t inc = h.node(1).incarnation();
  h.inject(2, h.addr(0), {Suspect{"n1", inc, "n0"}});
  ASSERT_EQ(h.state(2, 1), MemberState::kSuspect);
  const TimePoint t = h.now();
  const std::size_t mark = h.wire().size();
  h.inject(2, h.addr(0), {IndirectPing{77, "n1", h.addr(1), true}});
  ASSERT_GT(h.wire().size(), mark);
  const Packet& relayed = h.wire()[mark];  // sent on receipt of the request
  ASSERT_EQ(relayed.to, 1);
  ASSERT_TRUE(relayed.has(MsgType::kPing));
  const auto& msgs = relayed.messages;
  const auto suspect = std::find_if(msgs.begin(), msgs.end(), [](const Message& m) {
    const Suspect* s = std::get_if<Suspect>(&m);
    return s && s->name == "n1";
  });
  const auto ping = std::find_if(msgs.begin(), msgs.end(),
                                 [](const Message& m) { return std::holds_alternative<Ping>(m); });
  ASSERT_NE(suspect, msgs.end());
  EXPECT_LT(suspect - msgs.begin(), ping - msgs.begin())
      << "the suspicion must lead the relayed ping, not ride in the piggyback";
  h.run_for(10ms);
  EXPECT_EQ(h.node(1).incarnation(), inc + 1);
  EXPECT_EQ(h.state(2, 1), MemberState::kAlive);
  const auto fwd = carrying<Ack>(
      h, 2, 0, [](const Ack& a) { return a.seq == 77; }, t);
  EXPECT_EQ(fwd.size(), 1u) << "the relay forwards the target's ack under the asker's seq";
}

TEST(NodeRefute, AccusationRaisesIncarnationAndHealthScore) {
  Harness h(1);
  h.join(0, {});
  const Endpoint peer = Endpoint::v4(10, 0, 0, 1, 7946);
  h.inject(0, peer, {Suspect{"n0", 0, "x"}});
  EXPECT_EQ(h.node(0).incarnation(), 1u);
  EXPECT_EQ(h.node(0).stats().refutes, 1u);
  EXPECT_EQ(h.node(0).health_score(), 1u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);
  // An accusation at an older incarnation is stale: no refutation.
  h.inject(0, peer, {Suspect{"n0", 0, "y"}});
  EXPECT_EQ(h.node(0).incarnation(), 1u);
  // Declared dead (not by itself) at our incarnation: refutes above it.
  h.inject(0, peer, {Dead{"n0", 1, "x"}});
  EXPECT_EQ(h.node(0).incarnation(), 2u);
  EXPECT_EQ(h.node(0).stats().refutes, 2u);
  EXPECT_EQ(h.node(0).health_score(), 2u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);
  // Above our incarnation (our stored one was lost, or a forger), by at most
  // kMaxSelfIncarnationJump: refuted above it, counted.
  h.inject(0, peer, {Dead{"n0", 5, "x"}});
  EXPECT_EQ(h.node(0).incarnation(), 6u);
  EXPECT_EQ(h.node(0).stats().refutes, 3u);
  EXPECT_EQ(h.node(0).stats().refutes_above_own, 1u);
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 0u);
  EXPECT_EQ(h.node(0).health_score(), 3u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);
  // The bound exactly: own + kMaxSelfIncarnationJump is refuted, one more is dropped and counted
  // with no refutation (memberlist #358), about ourselves too.
  constexpr std::uint64_t kJump = NodeImpl::kMaxSelfIncarnationJump;
  h.inject(0, peer, {Suspect{"n0", 6 + kJump, "x"}});
  EXPECT_EQ(h.node(0).incarnation(), 7 + kJump);
  EXPECT_EQ(h.node(0).stats().refutes_above_own, 2u);
  h.inject(0, peer, {Dead{"n0", 7 + kJump + kJump + 1, "x"}});
  h.inject(0, peer, {Suspect{"n0", 7 + kJump + kJump + 1, "x"}});
  h.inject(0, peer, {Dead{"n0", 7 + kJump + kJump + 1, "n0"}});
  EXPECT_EQ(h.node(0).incarnation(), 7 + kJump);
  EXPECT_EQ(h.node(0).stats().refutes, 4u);
  EXPECT_EQ(h.node(0).stats().refutes_above_own, 2u);
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 3u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);
  EXPECT_TRUE(h.events_about(0, "n0").empty()) << "no events about ourselves";
}

// A refutation goes to refute_fanout members directly as well as by gossip, at most four bursts
// per probe interval.
TEST(NodeRefute, RefutationIsAlsoSentDirectlyToManyMembers) {
  Harness h(6);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.run_until([&] { return h.quiet(); }, 30s);
  const TimePoint t0 = h.now();
  h.inject(0, h.addr(1), {Suspect{"n0", h.node(0).incarnation(), "n1"}});
  const std::uint64_t inc = h.node(0).incarnation();
  // Every other member gets the new Alive straight away (not only the next gossip targets).
  for (std::size_t to = 1; to < 6; ++to) {
    auto direct = carrying<Alive>(
        h, 0, to, [&](const Alive& a) { return a.name == "n0" && a.incarnation == inc; }, t0);
    ASSERT_FALSE(direct.empty()) << "to n" << to << "\n" << h.dump();
    EXPECT_EQ(direct.front()->sent, t0) << "to n" << to;
  }
  EXPECT_EQ(h.node(0).stats().refute_bursts, 1u);
  // A second accusation within a quarter probe interval refutes by gossip only.
  h.inject(0, h.addr(2), {Suspect{"n0", inc, "n2"}});
  EXPECT_EQ(h.node(0).incarnation(), inc + 1);
  EXPECT_EQ(h.node(0).stats().refutes, 2u);
  EXPECT_EQ(h.node(0).stats().refute_bursts, 1u);
  h.run_for(300ms);
  h.inject(0, h.addr(3), {Suspect{"n0", inc + 1, "n3"}});
  EXPECT_EQ(h.node(0).stats().refute_bursts, 2u);
  // refute_fanout = 0 is memberlist's behaviour: gossip only.
  Config quiet;
  quiet.refute_fanout = 0;
  Harness g(3, quiet);
  ASSERT_TRUE(g.form_cluster()) << g.dump();
  g.inject(0, g.addr(1), {Suspect{"n0", g.node(0).incarnation(), "n1"}});
  EXPECT_EQ(g.node(0).stats().refute_bursts, 0u);
}

// The member whose probe failed tells the accused directly, at the moment it suspects it, so a
// suspect that misses every gossip copy of its suspicion can still refute.
TEST(NodeRefute, AccuserTellsTheAccusedDirectly) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  // n2's acks are lost, to the prober and through the relay: probes of n2 fail.
  const int no_acks = h.strip(MsgType::kAck, 2);
  const TimePoint t0 = h.now();
  auto accusers = [&] {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < 2; ++i) {
      if (h.node(i).stats().probe_failures > 0) v.push_back(i);
    }
    return v;
  };
  ASSERT_TRUE(h.run_until([&] { return !accusers().empty(); }, 30s)) << h.dump();
  for (std::size_t i : accusers()) {
    // Its own accusation (from = itself) went to n2 in a datagram of its own making...
    auto told = carrying<Suspect>(
        h, i, 2, [&](const Suspect& s) { return s.name == "n2" && s.from == h.name(i); }, t0);
    ASSERT_FALSE(told.empty()) << "accuser n" << i << "\n" << h.dump();
    // ...at the moment it suspected n2 (before the next probe could carry it).
    const auto when = h.first_event(i, "n2", EventType::kSuspect, t0);
    ASSERT_TRUE(when.has_value());
    EXPECT_LE(told.front()->sent, *when + 1ms) << "accuser n" << i;
  }
  h.remove_filter(no_acks);
  // n2 refutes and nobody declares it failed.
  h.run_for(30s);
  EXPECT_GE(h.node(2).stats().refutes, 1u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_TRUE(h.events_about(i, "n2", EventType::kFailed).empty()) << i;
}

// With nothing to gossip a node has no gossip timer: an idle agent wakes for probes only. A new
// broadcast resumes the rounds on the same 200 ms grid.
TEST(NodeIdle, NoGossipWakeupsWithNothingToSayAndRoundsResumeOnTheGrid) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_TRUE(h.run_until([&] { return h.quiet(); }, 60s)) << h.dump();
  h.run_for(5s);
  std::set<TimePoint> wakeups;
  const TimePoint end = h.now() + 10s;
  while (h.now() < end) {
    const TimePoint next = h.node(0).next_deadline();
    if (next > end) break;
    wakeups.insert(next);
    h.run_to(next);
  }
  // One probe a second (start, ack timeout, nack deadline...): well under the 50 gossip ticks
  // alone that a 200 ms timer would add.
  EXPECT_LE(wakeups.size(), 30u);
  EXPECT_GE(wakeups.size(), 10u);
  const auto rounds = h.node(0).stats().gossip_rounds;
  ASSERT_TRUE(h.set_meta(0, bytes_of({1, 2})));
  const TimePoint t0 = h.now();
  h.run_for(1s);
  EXPECT_GT(h.node(0).stats().gossip_rounds, rounds);
  auto carried = carrying<Alive>(h, 0, std::nullopt, [](const Alive& a) { return a.name == "n0"; }, t0);
  ASSERT_FALSE(carried.empty());
  EXPECT_LE(carried.front()->sent - t0, Duration(200ms));
}

// A member that missed our refutation still accuses the older incarnation (with its buddy-system
// ping, or in its gossip): it gets our current alive back at once, directly, before its suspicion
// timer can run out. Current accusations are refuted as usual, and the answers are rate-limited.
TEST(NodeRefute, StaleAccusationIsAnsweredDirectlyWithTheCurrentAlive) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_TRUE(h.set_meta(0, bytes_of({1})));  // n0 now at incarnation 1
  ASSERT_TRUE(h.run_until([&] { return h.quiet(); }, 60s)) << h.dump();
  const std::uint64_t inc = h.node(0).incarnation();
  ASSERT_EQ(inc, 1u);

  TimePoint t0 = h.now();
  h.inject(0, h.addr(1), {Suspect{"n0", 0, "n1"}, Ping{77, "n0"}});
  h.run_for(1ms);
  auto answers = carrying<Alive>(h, 0, 1, [&](const Alive& a) { return a.name == "n0" && a.incarnation == inc; }, t0);
  ASSERT_EQ(answers.size(), 1u) << "one direct answer to the stale accuser";
  EXPECT_EQ(answers.front()->sent, t0);
  EXPECT_EQ(h.node(0).incarnation(), inc) << "a stale accusation is not a reason to refute again";
  EXPECT_EQ(h.node(0).stats().stale_accusations_answered, 1u);
  // Stale gossip (a failed verdict at the old incarnation) is answered the same way.
  t0 = h.now();
  h.inject(0, h.addr(2), {Dead{"n0", 0, "n2"}});
  EXPECT_EQ(carrying<Alive>(h, 0, 2, [&](const Alive& a) { return a.incarnation == inc; }, t0).size(), 1u);
  EXPECT_EQ(h.node(0).stats().stale_accusations_answered, 2u);

  // A flood of stale accusations: at most 16 answers per probe interval.
  t0 = h.now();
  for (int k = 0; k < 100; ++k) h.inject(0, h.addr(1), {Suspect{"n0", 0, "n1"}});
  EXPECT_EQ(h.node(0).stats().stale_accusations_answered, 16u);
  h.run_for(1s);
  h.inject(0, h.addr(1), {Suspect{"n0", 0, "n1"}});
  EXPECT_EQ(h.node(0).stats().stale_accusations_answered, 17u) << "a new interval, a new budget";

  // An accusation at the current incarnation is refuted (incarnation + 1), not answered.
  h.inject(0, h.addr(1), {Suspect{"n0", inc, "n1"}});
  EXPECT_EQ(h.node(0).incarnation(), inc + 1);
  EXPECT_EQ(h.node(0).stats().stale_accusations_answered, 17u);
}

// Periodic syncs send a digest in one datagram: agreeing members answer in one datagram and
// never touch the reliable channel; a member that knows more still spreads it, whichever side of
// the sync it is on.
TEST(NodeSyncDigest, AgreeingMembersExchangeDigestsAndDifferencesStillSpread) {
  Harness h(2);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.strip(MsgType::kAlive);  // from here on only push-pull carries member news
  const TimePoint t0 = h.now();
  h.run_for(65s);  // two push-pull intervals (30 s) and their jitter
  std::size_t asks = 0;
  std::size_t replies = 0;
  std::set<std::uint64_t> digests;
  for (const Packet& p : h.wire()) {
    if (p.sent < t0) continue;
    // Join catch-up syncs still exchange tables; periodic ones between agreeing members do not.
    if (p.stream) {
      EXPECT_TRUE(p.stream->join) << "a table was sent between agreeing members";
    }
    const SyncDigest* d = p.find<SyncDigest>();
    if (d == nullptr) continue;
    digests.insert(d->digest);
    ++(d->reply ? replies : asks);
  }
  EXPECT_GE(asks, 2u);
  EXPECT_EQ(replies, asks);
  EXPECT_EQ(digests.size(), 1u) << "two agreeing members, one digest";
  EXPECT_GE(h.node(0).stats().syncs_in_agreement + h.node(1).stats().syncs_in_agreement, 2u);

  // n1 changes its metadata (a higher incarnation) and its broadcast is stripped: the next
  // periodic sync, started by either side, must bring it to n0.
  ASSERT_TRUE(h.set_meta(1, bytes_of({7})));
  const std::uint64_t inc = h.node(1).incarnation();
  ASSERT_LT(h.node(0).member("n1")->incarnation, inc);
  EXPECT_TRUE(h.run_until([&] { return h.node(0).member("n1")->incarnation == inc; }, 65s)) << h.dump();
  EXPECT_EQ(h.node(0).member("n1")->meta, bytes_of({7}));
  // And the other way round (the asker, not the answerer, knowing more).
  ASSERT_TRUE(h.set_meta(0, bytes_of({8})));
  const std::uint64_t inc0 = h.node(0).incarnation();
  EXPECT_TRUE(h.run_until([&] { return h.node(1).member("n0")->incarnation == inc0; }, 65s)) << h.dump();
  EXPECT_GE(h.node(0).stats().syncs_completed + h.node(1).stats().syncs_completed, 4u);
}

// No ack a third of the way to the probe timeout: another direct ping (same sequence number),
// and again at two thirds; if one is answered, no relay is asked. A prompt ack means no retry.
TEST(NodeProbe, LostPingsAreRetriedDirectlyBeforeAskingRelays) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  ASSERT_TRUE(h.run_until([&] { return h.quiet(); }, 60s)) << h.dump();
  const auto retries_before = h.node(0).stats().probe_retries;
  h.run_for(10s);
  EXPECT_EQ(h.node(0).stats().probe_retries, retries_before) << "a healthy cluster never retries";

  // Drops the first `lose` pings of one probe that n0 sends to n1 from now on.
  auto lose_pings = [&](unsigned lose, unsigned expected_pings) {
    SCOPED_TRACE(testing::Message() << lose << " pings lost");
    unsigned dropped = 0;
    std::optional<std::uint32_t> lost_seq;
    const int f = h.add_filter([&](Packet& p) {
      if (dropped == lose || p.from != 0 || p.to != 1 || !p.has(MsgType::kPing)) return false;
      const Ping* ping = p.find<Ping>();
      if (ping == nullptr || (lost_seq && ping->seq != *lost_seq)) return false;
      lost_seq = ping->seq;
      ++dropped;
      return true;
    });
    const auto retries0 = h.node(0).stats().probe_retries;
    const TimePoint t0 = h.now();
    ASSERT_TRUE(h.run_until([&] { return dropped == lose; }, 10s));
    h.run_for(2s);
    h.remove_filter(f);
    auto pings = carrying<Ping>(h, 0, 1, [&](const Ping& p) { return p.seq == *lost_seq; }, t0);
    ASSERT_EQ(pings.size(), expected_pings) << h.dump();
    for (unsigned k = 0; k < expected_pings; ++k) {
      EXPECT_EQ(pings[k]->dropped, k < lose) << "ping " << k;
      if (k > 0) {
        EXPECT_EQ(pings[k]->sent - pings[0]->sent, Duration(500ms) * k / 3) << "ping " << k;
      }
    }
    EXPECT_TRUE(carrying<IndirectPing>(h, 0, std::nullopt, [&](const IndirectPing& r) { return r.seq == *lost_seq; }, t0)
                    .empty());
    EXPECT_EQ(h.node(0).stats().probe_retries, retries0 + expected_pings - 1);
    EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect, t0).empty());
  };
  lose_pings(1, 2);
  lose_pings(2, 3);

  // probe_retries = 0: relays at the timeout, as memberlist.
  Config plain;
  plain.probe_retries = 0;
  Harness g(3, plain);
  ASSERT_TRUE(g.form_cluster()) << g.dump();
  g.strip(MsgType::kAck, 1, 0);
  g.run_for(5s);
  EXPECT_EQ(g.node(0).stats().probe_retries, 0u);
  EXPECT_GT(g.node(0).stats().indirect_probes, 0u);
}

TEST(NodeHealth, MissedAcksSlowProbingAndSuccessRestoresIt) {
  Harness h(2);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  // n1 hears n0's pings and answers, but its acks never arrive (its refutations do).
  const int no_acks = h.strip(MsgType::kAck, 1, 0);
  const Packet* first = next_probe(h, 0, 1, h.now());
  ASSERT_NE(first, nullptr);
  const TimePoint t0 = first->sent;
  h.run_to(t0 + 50s);
  auto pings = h.ping_times(0, 1, t0);
  ASSERT_GE(pings.size(), 10u);
  // Each missed ack adds 1 to the score; the probe interval is (score + 1) s, at most 8 s.
  const std::vector<double> growing = {1, 2, 3, 4, 5, 6, 7, 8, 8};
  for (std::size_t k = 0; k < growing.size(); ++k) {
    EXPECT_NEAR(secs(pings[k + 1] - pings[k]), growing[k], kTol) << "interval " << k;
  }
  EXPECT_EQ(h.node(0).health_score(), 7u);
  // n1 refutes every other failed probe: a probe that carried the suspicion (buddy) was answered
  // by a refutation, so its own failure accuses a superseded incarnation and is stale.
  EXPECT_EQ(h.node(1).stats().refutes, 5u);
  EXPECT_EQ(h.node(0).stats().probe_failures, 9u);

  // Acks get through again: each success lowers the score by one.
  h.remove_filter(no_acks);
  const TimePoint healed = h.now();
  h.run_for(60s);
  auto after = h.ping_times(0, 1, healed);
  ASSERT_GE(after.size(), 10u);
  std::vector<TimePoint> all = h.ping_times(0, 1, t0);
  const auto last_before = std::find(all.begin(), all.end(), after.front()) - 1;
  // The ping in flight at healing was not acked; then 8 (score 7 -> 6 on ack), 7, 6, ... 1.
  const std::vector<double> shrinking = {8, 8, 7, 6, 5, 4, 3, 2, 1, 1};
  for (std::size_t k = 0; k < shrinking.size(); ++k) {
    EXPECT_NEAR(secs(*(last_before + static_cast<std::ptrdiff_t>(k) + 1) -
                     *(last_before + static_cast<std::ptrdiff_t>(k))),
                shrinking[k], kTol)
        << "interval " << k;
  }
  EXPECT_EQ(h.node(0).health_score(), 0u);
  EXPECT_EQ(h.state(0, 1), MemberState::kAlive);
}

// =============================================================================================
// Dissemination

TEST(NodeDissemination, BroadcastIsPiggybackedRetransmitLimitTimes) {
  Harness h(10);
  ASSERT_TRUE(h.form_cluster(60s)) << h.dump();
  const TimePoint t = h.now();
  ASSERT_TRUE(h.set_meta(0, bytes_of({1, 2, 3})));
  h.run_for(30s);
  const std::size_t limit = 4 * 2;  // retransmit_mult * ceil(log10(10 + 1))
  for (std::size_t i = 0; i < h.size(); ++i) {
    std::size_t copies = 0;
    for (const Packet* p : h.sent(i, std::nullopt, MsgType::kAlive, t)) {
      for (const Message& m : p->messages) {
        const Alive* a = std::get_if<Alive>(&m);
        if (a && a->name == "n0" && a->incarnation == 1) ++copies;
      }
    }
    // Every member re-gossips a new update; none sends it more than the limit.
    EXPECT_EQ(copies, limit) << "sender n" << i;
    const auto m = h.node(i).member("n0");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->incarnation, 1u);
    EXPECT_EQ(m->meta, bytes_of({1, 2, 3}));
    EXPECT_EQ(h.node(i).queued_broadcasts(), 0u);
  }
}

TEST(NodeDissemination, ManyBroadcastsArePackedWithinMaxPacketBytesLeastSentFirst) {
  Config cfg;
  cfg.max_packet_bytes = 512;
  cfg.max_meta_bytes = 256;
  cfg.probe_interval = 1h;  // only gossip rounds send
  cfg.probe_timeout = 30min;
  cfg.push_pull_interval = 1h;
  ASSERT_TRUE(cfg.validate());
  Harness h(1, cfg);
  h.join(0, {});
  std::vector<Message> alive;
  std::map<std::string, std::size_t> copies;
  for (int k = 0; k < 200; ++k) {
    char name[8];
    std::snprintf(name, sizeof name, "m%03d", k);
    alive.emplace_back(Alive{
        name,
        Endpoint::v4(10, 0, static_cast<std::uint8_t>(k / 256), static_cast<std::uint8_t>(k % 256), 7946),
        0,
        {}});
    copies[name] = 0;
  }
  h.inject(0, Endpoint::v4(10, 1, 1, 1, 7946), alive);
  ASSERT_EQ(h.node(0).count(MemberState::kAlive), 201u);
  h.run_for(30s);

  const std::size_t limit = 4 * 3;  // retransmit_mult * ceil(log10(201 + 1))
  std::size_t most = 0;
  std::size_t datagrams = 0;
  for (const Packet& p : h.wire()) {
    if (p.from != 0 || p.channel != Channel::kUnreliable) continue;
    ++datagrams;
    EXPECT_LE(p.bytes.size(), 512u);
    most = std::max(most, p.messages.size());
    for (const Message& m : p.messages) {
      const Alive* a = std::get_if<Alive>(&m);
      if (!a || a->name == "n0") continue;
      // Least-sent first: nobody is sent again while another has been sent fewer times.
      const std::size_t fewest = std::min_element(copies.begin(), copies.end(), [](auto& x, auto& y) {
                                   return x.second < y.second;
                                 })->second;
      EXPECT_EQ(copies[a->name], fewest) << a->name << " in datagram " << datagrams;
      ++copies[a->name];
    }
  }
  for (const auto& [name, n] : copies) EXPECT_EQ(n, limit) << name;
  EXPECT_GE(most, 20u) << "datagrams should carry many messages";
  EXPECT_LE(datagrams, 200 * limit / 20);
  EXPECT_EQ(h.node(0).queued_broadcasts(), 0u);
}

TEST(NodeDissemination, SetMetaSpreadsWithAHigherIncarnation) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint t = h.now();
  ASSERT_TRUE(h.set_meta(0, bytes_of({0xab, 0xcd})));
  EXPECT_EQ(h.node(0).incarnation(), 1u);
  EXPECT_EQ(h.node(0).member("n0")->meta, bytes_of({0xab, 0xcd}));
  h.run_for(5s);
  for (std::size_t i : {1u, 2u}) {
    const auto m = h.node(i).member("n0");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->meta, bytes_of({0xab, 0xcd}));
    EXPECT_EQ(m->incarnation, 1u);
    const auto ev = h.events_about(i, "n0", std::nullopt, t);
    ASSERT_EQ(ev.size(), 1u) << "viewer n" << i;
    EXPECT_EQ(ev.front().ev.type, EventType::kUpdated);
    EXPECT_EQ(ev.front().ev.incarnation, 1u);
  }
  // Over max_meta_bytes: refused, nothing changes.
  EXPECT_FALSE(h.set_meta(0, std::vector<std::byte>(h.node(0).config().max_meta_bytes + 1)));
  EXPECT_EQ(h.node(0).incarnation(), 1u);
  EXPECT_EQ(h.node(0).member("n0")->meta, bytes_of({0xab, 0xcd}));
}

// =============================================================================================
// Anti-entropy (push-pull)

TEST(NodePushPull, MergeFollowsPrecedence) {
  Config cfg;
  cfg.probe_interval = 1h;  // the phantom members never answer: keep probes out of the way
  cfg.probe_timeout = 30min;
  cfg.push_pull_interval = 1h;
  Harness h(1, cfg);
  h.join(0, {});
  const Endpoint p = Endpoint::v4(10, 0, 0, 1, 7946);
  const Endpoint x = Endpoint::v4(10, 0, 0, 2, 7946);
  const Endpoint y = Endpoint::v4(10, 0, 0, 3, 7946);
  const Endpoint z = Endpoint::v4(10, 0, 0, 4, 7946);
  std::uint32_t seq = 100;
  std::size_t syncs = 0;
  auto sync = [&](PushPullEntry e) {
    PushPull pp{seq++, false, false, {}};
    pp.members.push_back({"p", p, 0, MemberState::kAlive, {}});  // the sender comes first
    pp.members.push_back(std::move(e));
    h.inject_stream(0, p, pp);
    ++syncs;
  };
  auto view = [&](const char* name) { return h.node(0).member(name); };
  auto count = [&](const char* name, EventType t) { return h.events_about(0, name, t).size(); };

  sync({"x", x, 5, MemberState::kAlive, {}});
  ASSERT_TRUE(view("x"));
  EXPECT_EQ(view("x")->incarnation, 5u);
  EXPECT_EQ(count("x", EventType::kJoined), 1u);
  EXPECT_EQ(count("p", EventType::kJoined), 1u);

  sync({"x", x, 4, MemberState::kAlive, bytes_of({9})});  // older: ignored
  EXPECT_EQ(view("x")->incarnation, 5u);
  EXPECT_TRUE(view("x")->meta.empty());

  sync({"x", x, 5, MemberState::kSuspect, {}});  // same incarnation: suspect beats alive
  EXPECT_EQ(view("x")->state, MemberState::kSuspect);
  EXPECT_EQ(count("x", EventType::kSuspect), 1u);

  sync({"x", x, 5, MemberState::kAlive, {}});  // same incarnation: alive does not clear it
  EXPECT_EQ(view("x")->state, MemberState::kSuspect);

  sync({"x", x, 6, MemberState::kAlive, {}});  // higher incarnation wins
  EXPECT_EQ(view("x")->state, MemberState::kAlive);
  EXPECT_EQ(view("x")->incarnation, 6u);
  EXPECT_EQ(count("x", EventType::kRecovered), 1u);

  sync({"y", y, 1, MemberState::kAlive, {}});
  sync({"y", y, 1, MemberState::kFailed, {}});  // someone else's verdict: only a suspicion here
  EXPECT_EQ(view("y")->state, MemberState::kSuspect);
  // A verdict above the known incarnation is dropped (memberlist #358): we missed y's alive
  // at 3, which ends the suspicion when it arrives; a verdict at 3 is taken after that.
  sync({"y", y, 3, MemberState::kFailed, {}});
  EXPECT_EQ(view("y")->state, MemberState::kSuspect);
  EXPECT_EQ(view("y")->incarnation, 1u);
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 1u);
  sync({"y", y, 3, MemberState::kAlive, {}});
  EXPECT_EQ(view("y")->state, MemberState::kAlive);
  sync({"y", y, 3, MemberState::kFailed, {}});
  EXPECT_EQ(view("y")->state, MemberState::kSuspect);
  EXPECT_EQ(view("y")->incarnation, 3u);
  EXPECT_EQ(count("y", EventType::kFailed), 0u);
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 1u);

  sync({"z", z, 2, MemberState::kAlive, {}});
  sync({"z", z, 2, MemberState::kLeft, {}});  // a graceful leave is applied as such
  EXPECT_EQ(view("z")->state, MemberState::kLeft);
  EXPECT_EQ(count("z", EventType::kLeft), 1u);
  sync({"z", z, 2, MemberState::kAlive, {}});  // and not undone at the same incarnation
  EXPECT_EQ(view("z")->state, MemberState::kLeft);

  sync({"n0", h.addr(0), 0, MemberState::kFailed, {}});  // about us: refute
  EXPECT_EQ(h.node(0).incarnation(), 1u);
  EXPECT_EQ(h.node(0).stats().refutes, 1u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);

  // Every sync was answered over the reliable channel with our state, ourselves first.
  std::size_t replies = 0;
  for (const Packet& pk : h.wire()) {
    if (pk.from != 0 || !pk.stream || !pk.stream->response) continue;
    EXPECT_FALSE(pk.stream->join);
    EXPECT_EQ(pk.stream->seq, 100 + replies);
    ASSERT_FALSE(pk.stream->members.empty());
    EXPECT_EQ(pk.stream->members.front().name, "n0");
    EXPECT_EQ(pk.to_addr, p);
    ++replies;
  }
  EXPECT_EQ(replies, syncs);
  EXPECT_EQ(h.node(0).stats().syncs_served, syncs);
}

TEST(NodePushPull, InboundPeriodicSyncsAreRateLimitedJoinsAlwaysAnswered) {
  Config cfg;
  cfg.probe_interval = 1h;
  cfg.probe_timeout = 30min;
  cfg.push_pull_interval = 1h;
  cfg.max_inbound_syncs_per_s = 4;
  Harness h(1, cfg);
  h.join(0, {});
  const Endpoint p = Endpoint::v4(10, 0, 0, 1, 7946);
  auto sync = [&](std::uint32_t seq, bool join) {
    h.inject_stream(0, p, PushPull{seq, join, false, {{"p", p, 0, MemberState::kAlive, {}}}});
  };
  for (std::uint32_t k = 0; k < 6; ++k) sync(k, false);
  EXPECT_EQ(h.node(0).stats().syncs_served, 4u);
  EXPECT_EQ(h.node(0).stats().syncs_refused, 2u);
  sync(10, true);
  EXPECT_EQ(h.node(0).stats().syncs_served, 5u) << "joins are always answered";
  h.run_for(1s);
  sync(11, false);
  EXPECT_EQ(h.node(0).stats().syncs_served, 6u) << "a new second, a new budget";
  std::size_t replies = 0;
  for (const Packet& pk : h.wire()) replies += pk.stream && pk.stream->response ? 1u : 0u;
  EXPECT_EQ(replies, 6u);
}

TEST(NodePushPull, AtMostMaxConcurrentSyncsAreOutstanding) {
  Config cfg;
  cfg.probe_interval = 1h;
  cfg.probe_timeout = 30min;
  cfg.push_pull_interval = 1s;
  cfg.sync_timeout = 5s;
  Harness h(1, cfg);
  h.join(0, {});
  std::vector<Message> peers;  // they never answer
  for (std::uint8_t k = 1; k <= 3; ++k) {
    peers.emplace_back(Alive{"p" + std::to_string(k), Endpoint::v4(10, 0, 0, k, 7946), 0, {}});
  }
  h.inject(0, Endpoint::v4(10, 0, 0, 1, 7946), peers);
  h.run_for(30s);
  std::vector<TimePoint> started;
  for (const Packet& pk : h.wire()) {
    const SyncDigest* d = pk.find<SyncDigest>();
    if (pk.from == 0 && d != nullptr && !d->reply) started.push_back(pk.sent);
  }
  ASSERT_GE(started.size(), 8u);
  for (TimePoint t : started) {
    const auto open =
        std::count_if(started.begin(), started.end(), [&](TimePoint s) { return s > t - 5s && s <= t; });
    EXPECT_LE(open, 2) << "at " << secs(t - kEpoch);
  }
  EXPECT_EQ(h.node(0).stats().syncs_started, started.size());
  EXPECT_GE(h.node(0).stats().syncs_timed_out + 2, started.size());
}

TEST(NodePushPull, PeriodicSyncRepairsAMissedRumor) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.strip(MsgType::kAlive, std::nullopt, 2);  // n2 never hears the rumor
  const auto synced = h.node(2).stats().syncs_completed + h.node(2).stats().syncs_served;
  ASSERT_TRUE(h.set_meta(0, bytes_of({7})));
  // n2 can only learn it from a full-state sync: its own (every 30 s) or a peer's.
  ASSERT_TRUE(h.run_until([&] { return h.node(2).member("n0")->incarnation == 1; }, 30100ms)) << h.dump();
  EXPECT_EQ(h.node(2).member("n0")->meta, bytes_of({7}));
  EXPECT_GT(h.node(2).stats().syncs_completed + h.node(2).stats().syncs_served, synced);
}

// =============================================================================================
// Leave

TEST(NodeLeave, GracefulLeaveIsSeenAsLeftNeverFailed) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint t = h.now();
  const std::uint64_t inc = h.node(2).incarnation();
  h.leave(2);
  // Told directly, at once: everybody gets the leave (dead from itself).
  for (std::size_t i : {0u, 1u, 3u}) {
    auto d = carrying<Dead>(
        h, 2, i, [](const Dead& m) { return m.name == "n2" && m.from == "n2"; }, t);
    ASSERT_FALSE(d.empty()) << "peer n" << i;
    EXPECT_EQ(d.front()->sent, t);
    EXPECT_EQ(d.front()->find<Dead>()->incarnation, inc);
  }
  EXPECT_FALSE(h.node(2).leave_done());
  ASSERT_TRUE(h.run_until([&] { return h.node(2).leave_done(); }, 10s));
  h.crash(2);
  h.run_for(60s);
  for (std::size_t i : {0u, 1u, 3u}) {
    EXPECT_EQ(h.state(i, 2), MemberState::kLeft) << "viewer n" << i;
    EXPECT_EQ(h.events_about(i, "n2", EventType::kLeft).size(), 1u) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n2", EventType::kFailed).empty()) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n2", EventType::kSuspect).empty()) << "viewer n" << i;
    EXPECT_EQ(h.node(i).count(MemberState::kLeft), 1u);
    EXPECT_EQ(h.node(i).count(MemberState::kAlive), 3u);
  }
}

TEST(NodeLeave, LoneNodeIsDoneLeavingAtOnce) {
  Harness h(1);
  h.join(0, {});
  h.run_for(2s);
  h.leave(0);
  h.run_for(5s);
  EXPECT_TRUE(h.node(0).leave_done())
      << "nobody to tell: the leave cannot wait for a queue that never drains";
}

// =============================================================================================
// Names, restarts, reaping

TEST(NodeConflict, SameNameAtAnotherAddressIsRefusedWhileTheOwnerLives) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint t = h.now();
  const std::size_t impostor = h.add_node("n1", Endpoint::v4(127, 0, 0, 9, 7946));
  h.join(impostor, {0});
  h.run_for(20s);
  for (std::size_t i : {0u, 2u}) {
    const auto m = h.node(i).member("n1");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->addr, h.addr(1)) << "viewer n" << i;
    EXPECT_EQ(m->state, MemberState::kAlive) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n1", std::nullopt, t).empty()) << "viewer n" << i;
  }
  EXPECT_GE(h.node(0).stats().name_conflicts, 1u);
  EXPECT_EQ(h.node(1).member("n1")->addr, h.addr(1));
}

TEST(NodeConflict, FailedMemberMayComeBackAtANewAddress) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] { return h.state(0, 1) == MemberState::kFailed && h.state(2, 1) == MemberState::kFailed; }, 40s))
      << h.dump();
  const TimePoint t = h.now();
  const Endpoint moved = Endpoint::v4(127, 0, 0, 9, 7946);
  const std::size_t back = h.add_node("n1", moved);
  h.join(back, {0});
  ASSERT_TRUE(h.run_until(
      [&] {
        auto a = h.node(0).member("n1");
        auto b = h.node(2).member("n1");
        return a && b && a->addr == moved && b->addr == moved && a->state == MemberState::kAlive &&
               b->state == MemberState::kAlive;
      },
      10s))
      << h.dump();
  EXPECT_TRUE(h.first_event(0, "n1", EventType::kRecovered, t));
  EXPECT_TRUE(h.first_event(2, "n1", EventType::kRecovered, t));
  EXPECT_EQ(h.node(0).stats().name_conflicts, 0u);
}

TEST(NodeConflict, RestartWithAHigherIncarnationReplacesTheOldEntry) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  auto inc_at = [&](std::size_t viewer) { return h.node(viewer).member("n1")->incarnation; };

  // Restarted before anyone noticed: the entry just takes the new incarnation.
  h.crash(1);
  h.restart(1, inc_at(0) + 1);
  h.join(1, {0});
  h.run_for(5s);
  EXPECT_EQ(h.state(0, 1), MemberState::kAlive);
  EXPECT_EQ(inc_at(0), 1u);
  EXPECT_EQ(inc_at(2), 1u);
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kSuspect).empty());

  // Crashed and declared failed, then restarted: recovered.
  h.crash(1);
  ASSERT_TRUE(h.run_until([&] { return h.state(0, 1) == MemberState::kFailed; }, 40s)) << h.dump();
  TimePoint t = h.now();
  h.restart(1, inc_at(0) + 1);
  h.join(1, {0});
  ASSERT_TRUE(h.run_until([&] { return h.full_mesh(); }, 10s)) << h.dump();
  EXPECT_TRUE(h.first_event(0, "n1", EventType::kRecovered, t));
  EXPECT_TRUE(h.first_event(2, "n1", EventType::kRecovered, t));

  // Left, then restarted: joined again.
  ASSERT_TRUE(h.run_until([&] { return h.quiet(); }, 10s));
  h.leave(1);
  ASSERT_TRUE(h.run_until([&] { return h.node(1).leave_done(); }, 10s));
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] { return h.state(0, 1) == MemberState::kLeft && h.state(2, 1) == MemberState::kLeft; }, 10s));
  t = h.now();
  h.restart(1, inc_at(0) + 1);
  h.join(1, {0});
  ASSERT_TRUE(h.run_until([&] { return h.full_mesh(); }, 10s)) << h.dump();
  EXPECT_TRUE(h.first_event(0, "n1", EventType::kJoined, t));
  EXPECT_TRUE(h.first_event(2, "n1", EventType::kJoined, t));
  EXPECT_TRUE(h.events_about(0, "n1", EventType::kRecovered, t).empty());
}

TEST(NodeConflict, RestartThatLostItsIncarnationCatchesUpByRefuting) {
  Harness h(3);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  for (std::uint64_t k = 0; k < 3; ++k) h.inject(1, h.addr(2), {Suspect{"n1", k, "n2"}});
  ASSERT_EQ(h.node(1).incarnation(), 3u);
  ASSERT_TRUE(h.run_until([&] { return h.node(0).member("n1")->incarnation == 3 && h.quiet(); }, 10s));
  h.crash(1);
  h.restart(1, 0);  // no stored incarnation
  const TimePoint t = h.now();
  h.join(1, {0});
  ASSERT_TRUE(h.run_until([&] { return h.node(0).member("n1")->incarnation == 4; }, 5s)) << h.dump();
  EXPECT_EQ(h.node(1).incarnation(), 4u);
  h.run_for(5s);
  EXPECT_EQ(h.node(2).member("n1")->incarnation, 4u);
  for (std::size_t i : {0u, 2u}) {
    EXPECT_EQ(h.state(i, 1), MemberState::kAlive);
    EXPECT_TRUE(h.events_about(i, "n1", EventType::kSuspect, t).empty());
  }
}

TEST(NodeReap, FailedAndLeftMembersAreForgottenAfterReapAfter) {
  Config cfg;
  cfg.reap_after = 60s;
  Harness h(4, cfg);
  ASSERT_TRUE(h.form_cluster()) << h.dump();

  h.crash(1);
  ASSERT_TRUE(h.run_until([&] { return h.first_event(0, "n1", EventType::kFailed).has_value(); }, 40s));
  const TimePoint failed = *h.first_event(0, "n1", EventType::kFailed);
  h.run_to(failed + 60s - 100ms);
  EXPECT_EQ(h.state(0, 1), MemberState::kFailed);
  EXPECT_EQ(h.node(0).stats().reaped, 0u);
  h.run_to(failed + 60s + 100ms);
  EXPECT_FALSE(h.node(0).member("n1"));
  EXPECT_EQ(h.node(0).stats().reaped, 1u);
  EXPECT_EQ(h.node(0).members().size(), 3u);

  h.leave(2);
  ASSERT_TRUE(h.run_until([&] { return h.node(2).leave_done(); }, 10s));
  h.crash(2);  // its last datagrams are still on their way
  ASSERT_TRUE(h.run_until([&] { return h.first_event(0, "n2", EventType::kLeft).has_value(); }, 1s));
  const auto left = h.first_event(0, "n2", EventType::kLeft);
  h.run_to(*left + 60s - 100ms);
  EXPECT_EQ(h.state(0, 2), MemberState::kLeft);
  h.run_to(*left + 60s + 100ms);
  EXPECT_FALSE(h.node(0).member("n2"));
  EXPECT_EQ(h.node(0).stats().reaped, 2u);

  // Forgotten for good: later syncs and gossip do not bring them back.
  h.run_for(120s);
  for (std::size_t i : {0u, 3u}) {
    EXPECT_FALSE(h.node(i).member("n1")) << "viewer n" << i;
    EXPECT_FALSE(h.node(i).member("n2")) << "viewer n" << i;
    EXPECT_EQ(h.node(i).members().size(), 2u);
  }
}

// =============================================================================================
// Join

TEST(NodeJoin, JoinThroughASeedMakesBothSidesKnowEachOther) {
  Harness h(2);
  h.join(0, {});
  EXPECT_TRUE(h.node(0).joined());  // no seeds: the first member of a new cluster
  h.join(1, {0});
  EXPECT_FALSE(h.node(1).joined());
  const Packet& req = h.wire().back();
  ASSERT_EQ(req.channel, Channel::kReliable);
  ASSERT_TRUE(req.stream);
  EXPECT_TRUE(req.stream->join);
  EXPECT_FALSE(req.stream->response);
  ASSERT_FALSE(req.stream->members.empty());
  EXPECT_EQ(req.stream->members.front().name, "n1");
  h.run_for(10ms);  // request and answer, one network delay each
  EXPECT_TRUE(h.node(1).joined());
  EXPECT_EQ(h.state(0, 1), MemberState::kAlive);
  EXPECT_EQ(h.state(1, 0), MemberState::kAlive);
  EXPECT_EQ(h.events_about(0, "n1", EventType::kJoined).size(), 1u);
  EXPECT_EQ(h.events_about(1, "n0", EventType::kJoined).size(), 1u);
  EXPECT_EQ(h.node(1).stats().joins_sent, 1u);
  EXPECT_EQ(h.node(1).stats().syncs_completed, 1u);
  EXPECT_EQ(h.node(0).stats().syncs_served, 1u);
}

TEST(NodeJoin, JoinRetriesEverySyncTimeoutUntilTheSeedAnswers) {
  Harness h(2);
  h.crash(0);  // the seed is down
  const TimePoint t0 = h.now();
  h.join(1, {0});
  h.run_to(t0 + 12s);
  EXPECT_FALSE(h.node(1).joined());
  EXPECT_EQ(h.node(1).stats().joins_sent, 3u);  // at 0, 5 and 10 s
  h.revive(0);
  h.join(0, {});
  h.run_to(t0 + 15s - 100ms);
  EXPECT_FALSE(h.node(1).joined());
  h.run_to(t0 + 15s + 100ms);
  EXPECT_TRUE(h.node(1).joined());
  EXPECT_EQ(h.node(1).stats().joins_sent, 4u);
  EXPECT_EQ(h.node(1).stats().syncs_timed_out, 3u);
  EXPECT_TRUE(h.run_until([&] { return h.full_mesh(); }, 5s)) << h.dump();
  h.run_for(200s);
  // No more join retries once joined (the catch-up syncs after the join are counted apart).
  EXPECT_EQ(h.node(1).stats().joins_sent - h.node(1).stats().catchup_syncs, 4u);
  EXPECT_EQ(h.node(1).stats().syncs_timed_out, 3u);
}

// Members that joined at the same moment learn of each other from catch-up syncs after the join:
// delay * 4^i after the answer (0.5, 2, 8, 32, 128 s), the first with the seed that answered.
TEST(NodeJoin, JoinIsFollowedByCatchUpSyncs) {
  const Config cfg;
  ASSERT_EQ(cfg.join_catchups, 5u);
  ASSERT_EQ(cfg.join_catchup_delay, 500ms);
  Harness h(3);
  h.join(0, {});
  const TimePoint t = h.now();
  h.join(1, {0});
  h.join(2, {0});
  h.run_for(300s);
  const TimePoint answered = t + 2ms;  // request and answer, 1 ms each
  std::vector<double> at;
  std::vector<int> to;
  for (const Packet& p : h.wire()) {
    if (p.from != 1 || !p.stream || !p.stream->join || p.stream->response) continue;
    at.push_back(secs(p.sent - answered));
    to.push_back(p.to);
  }
  ASSERT_EQ(at.size(), 6u);  // the join itself, then five catch-ups
  const std::vector<double> want = {-0.002, 0.5, 2, 8, 32, 128};
  for (std::size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(at[k], want[k], 1e-6) << "sync " << k;
  EXPECT_EQ(to[0], 0);
  EXPECT_EQ(to[1], 0) << "the first catch-up goes to the seed that answered";
  EXPECT_EQ(h.node(1).stats().catchup_syncs, 5u);
  EXPECT_TRUE(h.full_mesh());
}

// =============================================================================================
// Forged and replayed accusations (issue 5, the part that needs no signatures)
//
// The forger holds the cluster key and speaks from n4's address. An accusation naming an
// incarnation above the one a member knows is dropped and counted (memberlist #358); one at or
// below it behaves as before (a live victim refutes it; an older one is stale).

constexpr std::uint64_t kMaxIncarnation = std::numeric_limits<std::uint64_t>::max();

// Accusations about `name` above `known` that any node sent (re-gossip of a forgery) since t.
std::size_t accusations_sent_above(const Harness& h, const std::string& name, std::uint64_t known,
                                   TimePoint t) {
  std::size_t n = 0;
  for (const Packet& p : h.wire()) {
    if (p.sent < t) continue;
    for (const Message& m : p.messages) {
      if (const auto* s = std::get_if<Suspect>(&m); s && s->name == name && s->incarnation > known) ++n;
      if (const auto* d = std::get_if<Dead>(&m); d && d->name == name && d->incarnation > known) ++n;
    }
    if (!p.stream) continue;
    for (const PushPullEntry& e : p.stream->members) {
      if (e.name == name && e.state != MemberState::kAlive && e.incarnation > known) ++n;
    }
  }
  return n;
}

// A jump about ourselves beyond NodeImpl::kMaxSelfIncarnationJump (2^32): dropped by the victim too.
constexpr std::uint64_t kBeyondSelfJump = std::uint64_t{1} << 40;
static_assert(kBeyondSelfJump > NodeImpl::kMaxSelfIncarnationJump);

// One forged message per bad incarnation to n0 (known + 1000, known + 2^40, UINT64_MAX) and to
// the victim n1 itself (known + 2^40, UINT64_MAX: beyond the jump it would refute, see
// BoundedJumpAboutOurselvesIsRefutedAndTheOthersTakeTheAlive): dropped and counted on both,
// never passed on; past the longest suspicion timeout (6 * 6 s) n1 is alive at its own
// incarnation on every node, with no event about it anywhere.
void expect_forgery_dropped(const std::function<Message(std::uint64_t)>& forge) {
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t known = h.node(1).incarnation();
  const std::uint64_t refutes = h.node(1).stats().refutes;
  const TimePoint t = h.now();
  for (std::uint64_t bad : {known + 1000, known + kBeyondSelfJump, kMaxIncarnation}) {
    h.inject(0, h.addr(4), {forge(bad)});
  }
  for (std::uint64_t bad : {known + kBeyondSelfJump, kMaxIncarnation}) h.inject(1, h.addr(4), {forge(bad)});
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 3u);
  EXPECT_EQ(h.node(1).stats().accusations_above_known, 2u);
  EXPECT_EQ(h.node(1).stats().refutes_above_own, 0u);
  EXPECT_EQ(h.node(1).incarnation(), known) << "the victim never refutes an incarnation it did not issue";
  EXPECT_EQ(h.node(1).stats().refutes, refutes);
  EXPECT_EQ(h.node(1).stats().refutes_saturated, 0u);
  h.run_for(60s);
  for (std::size_t i = 0; i < h.size(); ++i) {
    const auto m = h.node(i).member("n1");
    ASSERT_TRUE(m) << "viewer n" << i;
    EXPECT_EQ(m->state, MemberState::kAlive) << "viewer n" << i;
    EXPECT_EQ(m->incarnation, known) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n1", std::nullopt, t).empty()) << "viewer n" << i;
  }
  EXPECT_EQ(h.node(1).incarnation(), known);
  EXPECT_EQ(accusations_sent_above(h, "n1", known, t), 0u) << "a dropped forgery is not gossiped";
}

TEST(NodeForged, SuspectAboveTheKnownIncarnationIsDroppedAndTheVictimStaysAlive) {
  expect_forgery_dropped([](std::uint64_t inc) { return Message(Suspect{"n1", inc, "n4"}); });
}

TEST(NodeForged, FailedAboveTheKnownIncarnationIsDroppedAndTheVictimStaysAlive) {
  expect_forgery_dropped([](std::uint64_t inc) { return Message(Dead{"n1", inc, "n4"}); });
}

TEST(NodeForged, LeaveAboveTheKnownIncarnationIsDroppedAndTheVictimStaysAlive) {
  expect_forgery_dropped([](std::uint64_t inc) { return Message(Dead{"n1", inc, "n1"}); });
}

// The same verdicts in a push-pull state sync: dropped entry by entry (the alive entries of the
// same sync are still merged), about ourselves too.
TEST(NodeForged, PushPullEntriesAboveTheKnownIncarnationAreDropped) {
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const TimePoint t = h.now();
  auto inc = [&](std::size_t i) { return h.node(i).incarnation(); };
  const std::uint64_t served = h.node(0).stats().syncs_served;
  PushPull pp{900, /*join=*/false, /*response=*/false, {}};
  pp.members.push_back({"n4", h.addr(4), inc(4), MemberState::kAlive, {}});  // the sender first
  pp.members.push_back({"n0", h.addr(0), kMaxIncarnation, MemberState::kFailed, {}});
  pp.members.push_back({"n1", h.addr(1), kMaxIncarnation, MemberState::kSuspect, {}});
  pp.members.push_back({"n2", h.addr(2), inc(2) + 1000, MemberState::kFailed, {}});
  pp.members.push_back({"n3", h.addr(3), kMaxIncarnation, MemberState::kLeft, {}});
  h.inject_stream(0, h.addr(4), pp);
  EXPECT_EQ(h.node(0).stats().accusations_above_known, 4u);
  EXPECT_EQ(h.node(0).stats().refutes, 0u);
  EXPECT_EQ(h.node(0).stats().syncs_served, served + 1) << "the sync itself is answered";
  h.run_for(60s);
  EXPECT_TRUE(h.full_mesh()) << h.dump();
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h.node(i).incarnation(), 0u) << "n" << i;
    for (std::size_t j = 0; j < h.size(); ++j) {
      EXPECT_TRUE(h.events_about(i, h.name(j), std::nullopt, t).empty()) << "n" << i << " about n" << j;
    }
  }
}

// Captured packets replayed after the state moved on: n1 was isolated until it was declared
// failed, then refuted. Every datagram that accused it at the old incarnation, replayed to its
// original receiver and to n1, is stale: no suspicion, no event, no refutation.
TEST(NodeForged, ReplayedAccusationsAfterARefutationAreIgnored) {
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t old = h.node(1).incarnation();
  h.isolate(1);
  ASSERT_TRUE(h.run_until(
      [&] {
        for (std::size_t i : {0u, 2u, 3u, 4u}) {
          if (h.state(i, 1) != MemberState::kFailed) return false;
        }
        return true;
      },
      60s))
      << h.dump();
  h.isolate(1, false);
  ASSERT_TRUE(h.run_until([&] { return h.full_mesh() && h.quiet(); }, 120s)) << h.dump();
  const std::uint64_t now_inc = h.node(1).incarnation();
  ASSERT_GT(now_inc, old);

  std::vector<Packet> captured;
  for (const Packet& p : h.wire()) {
    const bool accuses = std::any_of(p.messages.begin(), p.messages.end(), [&](const Message& m) {
      if (const auto* s = std::get_if<Suspect>(&m)) return s->name == "n1" && s->incarnation == old;
      if (const auto* d = std::get_if<Dead>(&m)) return d->name == "n1" && d->incarnation == old;
      return false;
    });
    if (accuses && p.to >= 0) captured.push_back(p);
  }
  ASSERT_FALSE(captured.empty());
  ASSERT_TRUE(std::any_of(captured.begin(), captured.end(), [](const Packet& p) {
    return p.has(MsgType::kDead);
  })) << "a failed verdict was captured too";
  const TimePoint t = h.now();
  std::vector<std::uint64_t> stale(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) stale[i] = h.node(i).stats().stale_messages;
  for (const Packet& p : captured) {
    h.inject_bytes(static_cast<std::size_t>(p.to), p.from_addr, p.bytes);
    h.inject_bytes(1, p.from_addr, p.bytes);
  }
  EXPECT_EQ(h.node(1).incarnation(), now_inc) << "a stale accusation is answered, not refuted";
  h.run_for(60s);
  EXPECT_TRUE(h.full_mesh()) << h.dump();
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_TRUE(h.events_about(i, "n1", std::nullopt, t).empty()) << "viewer n" << i;
    EXPECT_EQ(h.node(i).member("n1")->incarnation, now_inc) << "viewer n" << i;
    EXPECT_GT(h.node(i).stats().stale_messages, stale[i]) << "n" << i;
    EXPECT_EQ(h.node(i).stats().accusations_above_known, 0u) << "n" << i;
  }
  EXPECT_EQ(h.node(1).incarnation(), now_inc);
}

// What stays open until signatures: a forged leave at the KNOWN incarnation is believed, until
// the live victim hears it (on the acks to its own probes) and refutes; it is back within
// seconds, at the same address, with one more incarnation.
TEST(NodeForged, LeaveAtTheKnownIncarnationIsUndoneByTheVictimsRefutation) {
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t known = h.node(1).incarnation();
  const TimePoint t = h.now();
  h.inject(0, h.addr(4), {Dead{"n1", known, "n1"}});
  EXPECT_EQ(h.state(0, 1), MemberState::kLeft);
  ASSERT_TRUE(h.run_until([&] { return h.full_mesh() && h.quiet(); }, 10s)) << h.dump();
  EXPECT_EQ(h.node(1).incarnation(), known + 1);
  for (std::size_t i : {0u, 2u, 3u, 4u}) {
    EXPECT_EQ(h.node(i).member("n1")->addr, h.addr(1)) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n1", EventType::kFailed, t).empty()) << "viewer n" << i;
  }
}

// A member that failed or left comes back from another address only above the incarnation it
// had: a captured alive from its old address, replayed after it moved and failed, is stale.
TEST(NodeForged, ReplayedAliveFromAnOldAddressDoesNotMoveAFailedMemberBack) {
  Harness h(4);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const Endpoint old_addr = h.addr(1);
  std::optional<Packet> captured;
  for (const Packet& p : h.wire()) {
    const bool own_alive = std::any_of(p.messages.begin(), p.messages.end(), [&](const Message& m) {
      const Alive* a = std::get_if<Alive>(&m);
      return a && a->name == "n1" && a->addr == old_addr;
    });
    if (p.from == 1 && own_alive) {
      captured = p;
      break;
    }
  }
  ASSERT_TRUE(captured);
  const Endpoint moved = Endpoint::v4(127, 0, 0, 9, 7946);
  h.crash(1);
  h.restart(1, h.node(0).member("n1")->incarnation + 1, moved);
  h.join(1, {0});
  ASSERT_TRUE(h.run_until([&] { return h.full_mesh() && h.quiet(); }, 20s)) << h.dump();
  ASSERT_EQ(h.node(0).member("n1")->addr, moved);
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] {
        return h.state(0, 1) == MemberState::kFailed && h.state(2, 1) == MemberState::kFailed &&
               h.state(3, 1) == MemberState::kFailed;
      },
      60s))
      << h.dump();
  h.run_for(1s);
  const TimePoint t = h.now();
  const std::uint64_t stale = h.node(0).stats().stale_messages;
  h.inject_bytes(0, old_addr, captured->bytes);
  EXPECT_EQ(h.state(0, 1), MemberState::kFailed);
  EXPECT_EQ(h.node(0).member("n1")->addr, moved);
  EXPECT_GT(h.node(0).stats().stale_messages, stale);
  EXPECT_TRUE(h.events_about(0, "n1", std::nullopt, t).empty());
}

// A left member gets no probes and no gossip, so without a direct copy a live owner would learn
// of a forged leave only at its next push-pull (30 s here). Members that apply a leave tell the
// leaver with probability 4 / live members: the owner refutes within a second and is alive again
// everywhere, at the same address.
TEST(NodeForged, ForgedLeaveIsEchoedToTheOwnerWhoRefutesAtOnce) {
  constexpr std::size_t kNodes = 40;
  Harness h(kNodes);
  ASSERT_TRUE(h.form_cluster(60s)) << h.dump();
  const std::uint64_t known = h.node(1).incarnation();
  const TimePoint t = h.now();
  for (std::size_t i : {0u, 2u, 3u}) h.inject(i, h.addr(4), {Dead{"n1", known, "n1"}});
  auto back_everywhere = [&] {
    for (std::size_t i = 0; i < kNodes; ++i) {
      const auto m = h.node(i).member("n1");
      if (!m || m->state != MemberState::kAlive || m->incarnation <= known) return false;
    }
    return true;
  };
  ASSERT_TRUE(h.run_until(back_everywhere, 3s)) << h.dump();
  EXPECT_LE(secs(h.now() - t), 3.0);
  EXPECT_EQ(h.node(1).stats().refutes, 1u);
  std::uint64_t echoes = 0;
  for (std::size_t i = 0; i < kNodes; ++i) echoes += h.node(i).stats().leave_echoes;
  EXPECT_GT(echoes, 0u);
  EXPECT_LE(echoes, 20u) << "about 4 cluster-wide, not one per member";
  EXPECT_FALSE(carrying<Dead>(
                   h, std::nullopt, 1, [](const Dead& d) { return d.name == "n1"; }, t)
                   .empty());
}

// memberlist #370 without signatures, narrowed by Config::reclaim_after: a forged leave at the
// known incarnation, then at once an alive for the same name from the forger's address. With
// reclaim_after the new address is refused while the owner refutes from its own, and once the
// owner is alive again any later claim from elsewhere is an ordinary name conflict.
TEST(NodeForged, ReclaimAfterKeepsAForgedLeaveFromHandingTheNameToAnotherAddress) {
  Config cfg;
  cfg.reclaim_after = 60s;
  Harness h(5, cfg);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t known = h.node(1).incarnation();
  const Endpoint forger = Endpoint::v4(127, 0, 0, 9, 7946);
  const std::vector<std::size_t> others = {0, 2, 3, 4};
  for (std::size_t i : others)
    h.inject(i, forger, {Dead{"n1", known, "n1"}, Alive{"n1", forger, known + 1, {}}});
  for (std::size_t i : others) {
    EXPECT_EQ(h.node(i).member("n1")->addr, h.addr(1)) << "viewer n" << i;
    EXPECT_EQ(h.node(i).stats().name_conflicts, 1u) << "viewer n" << i;
  }
  auto owner_everywhere = [&] {
    for (std::size_t i : others) {
      const auto m = h.node(i).member("n1");
      if (!m || m->state != MemberState::kAlive || m->addr != h.addr(1)) return false;
    }
    return true;
  };
  ASSERT_TRUE(h.run_until(owner_everywhere, 40s)) << h.dump();
  EXPECT_GT(h.node(1).incarnation(), known);
  for (std::size_t i : others) h.inject(i, forger, {Alive{"n1", forger, known + 100, {}}});
  h.run_for(60s);
  EXPECT_TRUE(owner_everywhere()) << h.dump();
}

// The price of reclaim_after: an honest member that failed and came back at a new address is
// refused there until reclaim_after has passed since the verdict, then accepted (its periodic
// sync carries its alive).
TEST(NodeForged, ReclaimAfterDelaysAnHonestMoveUntilItHasPassed) {
  Config cfg;
  cfg.reclaim_after = 60s;
  Harness h(3, cfg);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] { return h.state(0, 1) == MemberState::kFailed && h.state(2, 1) == MemberState::kFailed; }, 40s))
      << h.dump();
  const TimePoint failed =
      std::min(*h.first_event(0, "n1", EventType::kFailed), *h.first_event(2, "n1", EventType::kFailed));
  const Endpoint moved = Endpoint::v4(127, 0, 0, 9, 7946);
  h.restart(1, h.node(0).member("n1")->incarnation + 1, moved);
  h.join(1, {0});
  auto moved_everywhere = [&] {
    for (std::size_t i : {0u, 2u}) {
      const auto m = h.node(i).member("n1");
      if (!m || m->state != MemberState::kAlive || m->addr != moved) return false;
    }
    return true;
  };
  ASSERT_TRUE(h.run_until(moved_everywhere, 120s)) << h.dump();
  for (std::size_t i : {0u, 2u}) {
    const auto back = h.first_event(i, "n1", EventType::kRecovered, failed);
    ASSERT_TRUE(back) << "viewer n" << i;
    EXPECT_GE(*back - failed, cfg.reclaim_after) << "viewer n" << i;
  }
  EXPECT_GE(h.node(0).stats().name_conflicts, 1u);
}

// Refuting never wraps: at UINT64_MAX (reachable only through an impostor's alive, which
// signatures will stop) we stay there and count it, instead of dropping to 0.
TEST(NodeForged, RefutationSaturatesAtTheLargestIncarnation) {
  Harness h(1);
  h.join(0, {});
  const Endpoint impostor = Endpoint::v4(10, 0, 0, 9, 7946);
  h.inject(0, impostor, {Alive{"n0", impostor, kMaxIncarnation, {}}});
  EXPECT_EQ(h.node(0).incarnation(), kMaxIncarnation);
  EXPECT_EQ(h.node(0).stats().refutes_saturated, 1u);
  h.inject(0, impostor, {Suspect{"n0", kMaxIncarnation, "x"}});
  EXPECT_EQ(h.node(0).incarnation(), kMaxIncarnation) << "not wrapped to 0";
  EXPECT_EQ(h.node(0).stats().refutes_saturated, 2u);
  EXPECT_EQ(h.node(0).member("n0")->state, MemberState::kAlive);
  // A metadata change needs a higher incarnation: refused rather than wrapped.
  EXPECT_FALSE(h.set_meta(0, bytes_of({1})));
  EXPECT_EQ(h.node(0).incarnation(), kMaxIncarnation);
  EXPECT_TRUE(h.node(0).member("n0")->meta.empty());
}

// The cost of the rule, bounded: n0 missed n1's refutation (it knows incarnation 0, the others
// 1), then n1 crashed. n0 drops the others' accusations at 1, but its own probe still finds
// n1 dead, and every member declares it failed.
TEST(NodeForged, AMemberThatMissedTheRefutationStillDetectsTheCrash) {
  Config cfg;
  cfg.push_pull_interval = 1h;
  Harness h(5, cfg);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  h.add_filter([](Packet& p) {  // n0 hears no alive: no gossiped one, no state sync (catch-ups)
    if (p.to != 0) return false;
    if (p.stream) return true;
    p.erase_if([](const Message& m) { return std::holds_alternative<Alive>(m); });
    return false;
  });
  h.inject(1, h.addr(2), {Suspect{"n1", 0, "n2"}});
  ASSERT_EQ(h.node(1).incarnation(), 1u);
  ASSERT_TRUE(h.run_until(
      [&] {
        for (std::size_t i : {2u, 3u, 4u}) {
          if (h.node(i).member("n1")->incarnation != 1) return false;
        }
        return h.quiet();
      },
      20s))
      << h.dump();
  ASSERT_EQ(h.node(0).member("n1")->incarnation, 0u);
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] {
        for (std::size_t i : {0u, 2u, 3u, 4u}) {
          if (h.state(i, 1) != MemberState::kFailed) return false;
        }
        return true;
      },
      60s))
      << h.dump();
  EXPECT_GT(h.node(0).stats().accusations_above_known, 0u);
}

// The exception about ourselves: a forged accusation about n1 at known + 1000, sent to every
// member but n4 and then to n1. The others drop it (counted, not passed on); n1 cannot tell it
// from its own forgotten past and refutes to known + 1001, and the others take that alive. n1
// stays alive everywhere, with no event about it anywhere.
TEST(NodeForged, BoundedJumpAboutOurselvesIsRefutedAndTheOthersTakeTheAlive) {
  for (int kind = 0; kind < 3; ++kind) {
    SCOPED_TRACE(kind == 0 ? "suspect" : kind == 1 ? "failed" : "leave");
    Harness h(5);
    ASSERT_TRUE(h.form_cluster()) << h.dump();
    const std::uint64_t known = h.node(1).incarnation();
    const TimePoint t = h.now();
    const std::uint64_t bad = known + 1000;
    const Message forged = kind == 0   ? Message(Suspect{"n1", bad, "n4"})
                           : kind == 1 ? Message(Dead{"n1", bad, "n4"})
                                       : Message(Dead{"n1", bad, "n1"});
    for (std::size_t i : {0u, 2u, 3u}) {
      h.inject(i, h.addr(4), {forged});
      EXPECT_EQ(h.node(i).stats().accusations_above_known, 1u) << "n" << i;
      EXPECT_EQ(h.state(i, 1), MemberState::kAlive) << "n" << i;
      EXPECT_EQ(h.node(i).member("n1")->incarnation, known) << "n" << i;
    }
    h.inject(1, h.addr(4), {forged});
    EXPECT_EQ(h.node(1).incarnation(), bad + 1);
    EXPECT_EQ(h.node(1).stats().refutes_above_own, 1u);
    EXPECT_EQ(h.node(1).stats().accusations_above_known, 0u);
    auto refuted_everywhere = [&] {
      for (std::size_t i = 0; i < h.size(); ++i) {
        const auto m = h.node(i).member("n1");
        if (!m || m->state != MemberState::kAlive || m->incarnation != bad + 1) return false;
      }
      return true;
    };
    ASSERT_TRUE(h.run_until(refuted_everywhere, 1s)) << h.dump();
    h.run_for(60s);
    EXPECT_TRUE(refuted_everywhere()) << h.dump();
    EXPECT_TRUE(h.full_mesh()) << h.dump();
    for (std::size_t i = 0; i < h.size(); ++i) {
      EXPECT_TRUE(h.events_about(i, "n1", std::nullopt, t).empty()) << "viewer n" << i;
    }
    EXPECT_EQ(h.node(1).incarnation(), bad + 1);
    EXPECT_EQ(accusations_sent_above(h, "n1", known, t), 0u) << "the forgery is not gossiped";
  }
}

// Beyond the bound (own + 2^40), sent to every member and to the victim: dropped and counted
// everywhere, no refutation, no event; n1 stays alive at its own incarnation.
TEST(NodeForged, JumpBeyondTheBoundIsDroppedByTheVictimAndEveryoneElse) {
  Harness h(5);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::uint64_t known = h.node(1).incarnation();
  const std::uint64_t refutes = h.node(1).stats().refutes;
  const TimePoint t = h.now();
  const std::uint64_t bad = known + kBeyondSelfJump;
  for (std::size_t i : {0u, 1u, 2u, 3u}) {
    h.inject(i, h.addr(4), {Suspect{"n1", bad, "n4"}, Dead{"n1", bad, "n4"}, Dead{"n1", bad, "n1"}});
    EXPECT_EQ(h.node(i).stats().accusations_above_known, 3u) << "n" << i;
  }
  EXPECT_EQ(h.node(1).incarnation(), known);
  EXPECT_EQ(h.node(1).stats().refutes, refutes);
  EXPECT_EQ(h.node(1).stats().refutes_above_own, 0u);
  h.run_for(60s);
  EXPECT_TRUE(h.full_mesh()) << h.dump();
  for (std::size_t i = 0; i < h.size(); ++i) {
    const auto m = h.node(i).member("n1");
    ASSERT_TRUE(m) << "viewer n" << i;
    EXPECT_EQ(m->incarnation, known) << "viewer n" << i;
    EXPECT_TRUE(h.events_about(i, "n1", std::nullopt, t).empty()) << "viewer n" << i;
  }
  EXPECT_EQ(h.node(1).stats().refutes, refutes);
  EXPECT_EQ(accusations_sent_above(h, "n1", known, t), 0u);
}

// =============================================================================================
// A rebuilt host (its data directory lost) rejoins under its old name
//
// Its previous life reached incarnation 50 and every member holds it failed or left there; the
// new process starts at `wiped` (0 or 1). Its own alive is below the verdict (stale), but the
// seed's join answer tells it "failed / left at 50" about itself: it refutes to 51 and every
// member takes that alive, at its old address or a new one.

enum class Gone { kFailed, kLeft };

struct Rebuilt {
  Gone gone = Gone::kFailed;
  std::uint64_t wiped = 0;
  std::optional<Endpoint> moved{};
  Config cfg{};
  Duration limit = 3s;  // a few probe periods
};

void expect_rebuilt_host_rejoins(const Rebuilt& r) {
  constexpr std::uint64_t kPrevious = 50;
  Harness h(5, r.cfg);
  ASSERT_TRUE(h.form_cluster()) << h.dump();
  const std::vector<std::size_t> others = {0, 2, 3, 4};
  h.crash(1);
  h.restart(1, kPrevious);
  h.join(1, {0});
  ASSERT_TRUE(h.run_until(
      [&] {
        for (std::size_t i : others) {
          const auto m = h.node(i).member("n1");
          if (!m || m->state != MemberState::kAlive || m->incarnation != kPrevious) return false;
        }
        return h.quiet();
      },
      20s))
      << h.dump();
  const MemberState verdict = r.gone == Gone::kLeft ? MemberState::kLeft : MemberState::kFailed;
  if (r.gone == Gone::kLeft) {
    h.leave(1);
    ASSERT_TRUE(h.run_until([&] { return h.node(1).leave_done(); }, 10s)) << h.dump();
  }
  h.crash(1);
  ASSERT_TRUE(h.run_until(
      [&] {
        for (std::size_t i : others) {
          const auto m = h.node(i).member("n1");
          if (!m || m->state != verdict || m->incarnation != kPrevious) return false;
        }
        return true;
      },
      60s))
      << h.dump();
  h.run_for(2s);  // the verdict's gossip has settled

  h.restart(1, r.wiped, r.moved);
  const Endpoint addr = h.addr(1);
  const TimePoint t = h.now();
  h.join(1, {0});
  auto back_everywhere = [&] {
    for (std::size_t i : others) {
      const auto m = h.node(i).member("n1");
      if (!m || m->state != MemberState::kAlive || m->incarnation <= kPrevious) return false;
      if (m->addr != addr) return false;
    }
    return true;
  };
  ASSERT_TRUE(h.run_until(back_everywhere, r.limit)) << h.dump();
  EXPECT_EQ(h.node(1).incarnation(), kPrevious + 1);
  EXPECT_GE(h.node(1).stats().refutes_above_own, 1u);
  for (std::size_t i : others) {
    const EventType back = r.gone == Gone::kLeft ? EventType::kJoined : EventType::kRecovered;
    const auto verdict_at =
        h.first_event(i, "n1", r.gone == Gone::kLeft ? EventType::kLeft : EventType::kFailed);
    const auto back_at = h.first_event(i, "n1", back, t);
    ASSERT_TRUE(verdict_at && back_at) << "viewer n" << i;
    EXPECT_GE(*back_at - *verdict_at, r.cfg.reclaim_after) << "viewer n" << i;
    for (const TimedEvent& e : h.events_about(i, "n1", std::nullopt, t)) {
      EXPECT_GT(e.ev.incarnation, kPrevious) << "viewer n" << i << ": the wiped alive is stale";
    }
  }
  h.run_for(60s);
  EXPECT_TRUE(h.full_mesh()) << h.dump();
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h.node(i).member("n1")->incarnation, kPrevious + 1) << "viewer n" << i;
    EXPECT_EQ(h.node(i).member("n1")->addr, addr) << "viewer n" << i;
  }
}

TEST(NodeRebuilt, WipedMemberHeldFailedRejoinsAboveTheVerdict) {
  expect_rebuilt_host_rejoins({.gone = Gone::kFailed, .wiped = 0});
}

TEST(NodeRebuilt, WipedMemberHeldLeftRejoinsAboveTheVerdict) {
  expect_rebuilt_host_rejoins({.gone = Gone::kLeft, .wiped = 1});
}

TEST(NodeRebuilt, WipedMemberAtANewAddressRejoinsAboveTheVerdict) {
  expect_rebuilt_host_rejoins({.gone = Gone::kFailed, .wiped = 1, .moved = Endpoint::v4(127, 0, 0, 9, 7946)});
}

// With reclaim_after the new address is refused for that long after the verdict (a name
// conflict), then taken from the rebuilt host's next sync: back within reclaim_after plus a
// push-pull interval (30 s).
TEST(NodeRebuilt, WipedMemberAtANewAddressRejoinsAfterReclaimAfter) {
  Config cfg;
  cfg.reclaim_after = 60s;
  expect_rebuilt_host_rejoins({.gone = Gone::kFailed,
                               .wiped = 0,
                               .moved = Endpoint::v4(127, 0, 0, 9, 7946),
                               .cfg = cfg,
                               .limit = 60s + 30s + 5s});
}

// =============================================================================================
// Untrusted input

TEST(NodeInput, MalformedPacketsAreCountedByReasonAndIgnored) {
  Harness h(1);
  h.join(0, {});
  h.run_for(1s);
  const TimePoint t = h.now();
  const Endpoint evil = Endpoint::v4(10, 6, 6, 6, 7946);
  auto rejected = [&](DecodeError e) { return h.node(0).stats().rejected[static_cast<std::size_t>(e)]; };

  PacketBuilder pb(1400);
  pb.add(Ack{7});
  const std::vector<std::byte> valid = pb.finish();
  std::vector<std::byte> truncated(valid.begin(), valid.end() - 1);
  std::vector<std::byte> trailing = valid;
  trailing.push_back(std::byte{0});
  std::vector<std::byte> too_many = bytes_of({0xdc, 0x01, 0x01, 0x01});  // array16 of 257: version + 256
  for (int k = 0; k < 256; ++k) {
    for (std::byte b : bytes_of({0x92, 0x03, 0x07})) too_many.push_back(b);
  }
  std::vector<std::byte> long_name = bytes_of({0x92, 0x01, 0x95, 0x05, 0xd9, 129});
  long_name.insert(long_name.end(), 129, std::byte{'a'});
  for (std::byte b : bytes_of({0xc4, 6, 10, 0, 0, 1, 0x1f, 0x0a, 0x00, 0xc4, 0x00})) long_name.push_back(b);

  const std::vector<std::tuple<const char*, std::vector<std::byte>, DecodeError>> cases = {
      {"empty", {}, DecodeError::kMalformed},
      {"reserved byte", bytes_of({0xc1}), DecodeError::kMalformed},
      {"truncated", truncated, DecodeError::kMalformed},
      {"trailing bytes", trailing, DecodeError::kMalformed},
      {"not an array", bytes_of({0x01}), DecodeError::kBadEnvelope},
      {"no messages", bytes_of({0x91, 0x01}), DecodeError::kBadEnvelope},
      {"version 2", bytes_of({0x92, 0x02, 0x92, 0x03, 0x07}), DecodeError::kBadVersion},
      {"ack without seq", bytes_of({0x92, 0x01, 0x91, 0x03}), DecodeError::kBadMessage},
      {"ack with a string seq", bytes_of({0x92, 0x01, 0x92, 0x03, 0xa1, 'x'}), DecodeError::kBadMessage},
      {"alive with a 5-byte address",
       bytes_of({0x92, 0x01, 0x95, 0x05, 0xa1, 'x', 0xc4, 0x05, 1, 2, 3, 4, 5, 0x00, 0xc4, 0x00}),
       DecodeError::kBadAddress},
      {"256 messages", too_many, DecodeError::kTooManyMessages},
      {"129-byte name", long_name, DecodeError::kTooLarge},
  };
  std::uint64_t total = 0;
  for (const auto& [what, bytes, want] : cases) {
    const auto before = rejected(want);
    h.inject_bytes(0, evil, bytes);
    EXPECT_EQ(rejected(want), before + 1) << what;
    ++total;
  }
  std::uint64_t sum = 0;
  for (std::uint64_t n : h.node(0).stats().rejected) sum += n;
  EXPECT_EQ(sum, total);

  // Metadata within the wire limit but over ours: the message is refused (and counted).
  const auto too_large = rejected(DecodeError::kTooLarge);
  h.inject(0, evil, {Alive{"big", evil, 0, std::vector<std::byte>(h.node(0).config().max_meta_bytes + 1)}});
  EXPECT_EQ(rejected(DecodeError::kTooLarge), too_large + 1);
  EXPECT_FALSE(h.node(0).member("big"));

  // Streams too.
  h.node(0).handle_stream(h.now(), evil, bytes_of({0xc1}));
  EXPECT_EQ(rejected(DecodeError::kMalformed), 5u);
  h.node(0).handle_stream(h.now(), evil, bytes_of({0x92, 0x01, 0x92, 0x09, 0x01}));
  EXPECT_EQ(rejected(DecodeError::kUnknownType), 1u);
  EXPECT_EQ(h.node(0).stats().streams_received, 2u);

  // Nothing happened: no members, events or answers.
  EXPECT_EQ(h.node(0).members().size(), 1u);
  EXPECT_TRUE(h.events(0).empty());
  EXPECT_TRUE(h.node(0).take_outgoing().empty());
  for (const Packet& p : h.wire()) EXPECT_LT(p.sent, t) << "answered garbage";

  // Unknown message types inside a good packet are skipped, the rest is handled.
  h.inject_bytes(0, evil, bytes_of({0x93, 0x01, 0x92, 0x63, 0x01, 0x93, 0x01, 0x05, 0xa2, 'n', '0'}));
  EXPECT_EQ(h.node(0).stats().unknown_messages, 1u);
  const auto acks = carrying<Ack>(
      h, 0, std::nullopt, [](const Ack& a) { return a.seq == 5; }, t);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks.front()->to_addr, evil);
}

TEST(NodeInput, RelayStateIsBoundedUnderAFloodOfPingRequests) {
  Harness h(1);
  h.join(0, {});
  h.run_for(1s);
  const Endpoint asker = Endpoint::v4(10, 6, 6, 6, 7946);
  const Endpoint nowhere = Endpoint::v4(10, 9, 9, 9, 7946);
  const std::size_t flood = NodeImpl::kMaxRelays + 100;
  for (std::size_t k = 0; k < flood; ++k) {
    h.inject(0, asker, {IndirectPing{static_cast<std::uint32_t>(k), "ghost", nowhere, true}});
  }
  EXPECT_EQ(h.node(0).stats().relayed_pings, NodeImpl::kMaxRelays);
  EXPECT_EQ(h.node(0).stats().relays_refused, 100u);
  // Once the requests time out, the node serves relays again.
  h.run_for(2s);
  h.inject(0, asker, {IndirectPing{1, "ghost", nowhere, true}});
  EXPECT_EQ(h.node(0).stats().relayed_pings, NodeImpl::kMaxRelays + 1);
}

}  // namespace
}  // namespace weft::gossip::test
