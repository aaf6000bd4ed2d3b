#include "weft/sim/scenario.h"

#include <algorithm>
#include <string>

#include "weft/base/rng.h"

namespace weft::sim {

gossip::Config memberlist_lan_config() {
  // hashicorp/memberlist config.go DefaultLANConfig (v0.5), in weft's terms.
  gossip::Config c;
  c.probe_interval = 1s;
  c.probe_timeout = 500ms;
  c.indirect_checks = 3;
  c.suspicion_mult = 4;
  c.suspicion_max_mult = 6;
  c.suspicion_confirmations = 2;  // memberlist: SuspicionMult - 2
  c.suspicion_min_floor = 0s;
  c.awareness_max = 8;
  c.gossip_interval = 200ms;
  c.gossip_nodes = 3;
  c.gossip_to_the_dead = 30s;
  c.retransmit_mult = 4;
  c.max_packet_bytes = 1400;
  c.push_pull_interval = 30s;
  c.join_catchups = 0;  // memberlist syncs once on join, then every push_pull_interval
  c.refused_fast_path = false;  // memberlist ignores ICMP errors
  return c;
}

namespace {

std::optional<double> seconds_since(const std::optional<TimePoint>& t, TimePoint since) {
  if (!t) return std::nullopt;
  return to_seconds(*t - since);
}

}  // namespace

ScenarioResult run_scenario(const ScenarioConfig& cfg) {
  SimCluster c(cfg.cluster);
  const std::size_t n = c.size();
  const TimePoint end = kSimEpoch + cfg.duration;
  auto remaining = [&] { return std::max<Duration>(end - c.now(), Duration::zero()); };

  ScenarioResult r;
  r.nodes = n;
  r.loss = cfg.cluster.net.loss;
  r.seed = cfg.cluster.seed;
  Rng rng(cfg.cluster.seed ^ 0x7363656e6172696fULL);

  // Phase 1: join through node 0.
  // fullmesh() only changes with a member event or a node's status: skip it in between.
  std::uint64_t seen = ~std::uint64_t{0};
  auto converged = [&] {
    const std::uint64_t changes = c.counters().events + c.counters().status_changes;
    if (changes == seen) return false;
    seen = changes;
    return c.fullmesh();
  };
  if (c.run_until(converged, std::min(cfg.join_timeout, remaining()))) {
    r.join_converged_s = to_seconds(c.elapsed());
    c.run_for(std::min(cfg.settle, remaining()));
  }

  // Phase 2: crashes and stalls at the same moment, never node 0.
  std::vector<std::size_t> watches;
  bool detected = false;
  if (c.now() < end) {
    const TimePoint crash_at = c.now();
    r.crash_at_s = to_seconds(c.elapsed());
    std::vector<NodeId> pool;
    for (NodeId i = 1; i < n; ++i) pool.push_back(i);
    for (std::size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[rng.below(i)]);
    const std::size_t fail = std::min(cfg.fail, pool.size());
    const std::size_t stall = std::min(cfg.stall, pool.size() - fail);
    r.crashed.assign(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(fail));
    r.stalled.assign(pool.begin() + static_cast<std::ptrdiff_t>(fail),
                     pool.begin() + static_cast<std::ptrdiff_t>(fail + stall));
    std::sort(r.crashed.begin(), r.crashed.end());
    std::sort(r.stalled.begin(), r.stalled.end());
    for (NodeId i : r.crashed) {
      c.crash(i);
      watches.push_back(*c.failure_watch(i));
    }
    for (NodeId i : r.stalled) c.stall(i, cfg.stall_for);

    auto all_detected = [&] {
      return std::all_of(watches.begin(), watches.end(),
                         [&](std::size_t w) { return c.watch(w).all.has_value(); });
    };
    detected = c.run_until(all_detected, remaining());
    if (!watches.empty()) {
      std::optional<TimePoint> first;
      std::optional<TimePoint> all;
      for (std::size_t w : watches) {
        const Watch& wt = c.watch(w);
        if (wt.first && (!first || *wt.first < *first)) first = wt.first;
        if (wt.all && (!all || *wt.all > *all)) all = wt.all;
      }
      r.detect_first_s = seconds_since(first, crash_at);
      if (detected) r.detect_all_s = seconds_since(all, crash_at);
    }
    // Dissemination starts once the stalled nodes are back.
    if (!r.stalled.empty() && c.now() < crash_at + cfg.stall_for) {
      c.run_for(std::min<Duration>(crash_at + cfg.stall_for - c.now(), remaining()));
    }
  }

  // Phase 3: one running node (not node 0, not a crashed or stalled one) updates its metadata.
  if (cfg.dissemination && detected && c.now() < end) {
    std::optional<NodeId> origin;
    for (std::size_t tries = 0; tries < 4 * n && !origin; ++tries) {
      const auto i = static_cast<NodeId>(rng.below(n));
      if (i != 0 && c.status(i) == NodeStatus::kRunning) origin = i;
    }
    if (!origin && c.status(0) == NodeStatus::kRunning) origin = NodeId{0};
    if (origin) {
      const std::string text = "updated-" + std::to_string(cfg.cluster.seed);
      std::vector<std::byte> meta(text.size());
      std::transform(text.begin(), text.end(), meta.begin(),
                     [](char ch) { return static_cast<std::byte>(ch); });
      if (c.set_meta(*origin, std::move(meta))) {
        const std::size_t w = c.watch_update(*origin, c.node(*origin)->incarnation());
        c.run_until([&] { return c.watch(w).all.has_value(); }, remaining());
        const Watch& wt = c.watch(w);
        const std::size_t observers = c.observers_of(*origin);
        auto secs = [](std::optional<Duration> d) -> std::optional<double> {
          if (!d) return std::nullopt;
          return to_seconds(*d);
        };
        r.dissemination_p50_s = secs(wt.time_to(0.5, observers));
        r.dissemination_p9999_s = secs(wt.time_to(0.9999, observers));
        r.dissemination_all_s = seconds_since(wt.all, wt.since);
      }
    }
  }

  if (c.now() < end) c.run_for(end - c.now());

  for (NodeId i = 0; i < c.size(); ++i) {
    if (c.status(i) == NodeStatus::kRunning && c.node(i) != nullptr) r.protocol += c.node(i)->stats();
  }
  const ClusterCounters& k = c.counters();
  r.simulated_s = to_seconds(c.elapsed());
  r.false_positives = c.false_positives();
  r.false_positive_events = k.false_positive_events;
  r.packets_sent = k.sent.packets_sent;
  r.bytes_sent = k.sent.bytes_sent;
  r.streams_sent = k.sent.streams_sent;
  r.stream_bytes_sent = k.sent.stream_bytes_sent;
  const double node_seconds = static_cast<double>(n) * std::max(r.simulated_s, 1e-9);
  r.msgs_per_node_per_s = static_cast<double>(r.packets_sent + r.streams_sent) / node_seconds;
  r.bytes_per_node_per_s = static_cast<double>(r.bytes_sent + r.stream_bytes_sent) / node_seconds;
  r.events = k.events;
  r.deliveries = k.deliveries;
  r.stuck_deadlines = k.stuck_deadlines;
  r.net = c.net().stats();
  return r;
}

}  // namespace weft::sim
