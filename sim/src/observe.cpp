// SimCluster: observing every node's events (false positives, watches). O(N) memory in total:
// per-target counters, and one byte per observer only for the few watched targets.

#include "names.h"
#include "weft/sim/cluster.h"

namespace weft::sim {

using gossip::EventType;
using gossip::MemberState;

void SimCluster::observe(NodeId observer, const gossip::MemberEvent& e) {
  ++counters_.events;
  std::optional<NodeId> t = node_of(e.addr);
  if (!t || *t >= slots_.size()) t = node_of_name(e.name);
  if (!t || *t >= slots_.size()) {
    ++counters_.unknown_event_targets;
    return;
  }
  Slot& ts = slots_[*t];
  if (e.type == EventType::kFailed) {
    ++ts.failed_events;
    const bool target_live = ts.status == NodeStatus::kRunning || ts.status == NodeStatus::kStalled ||
                             ts.status == NodeStatus::kLeaving;
    // A failure of an older incarnation (before a restart) is about the crashed process.
    if (target_live && e.incarnation >= ts.life_incarnation) {
      ++counters_.false_positive_events;
      if (!ts.false_positive) {
        ts.false_positive = true;
        ++false_positive_nodes_;
      }
    } else if (ts.status == NodeStatus::kLeft) {
      ++counters_.left_marked_failed;
    }
  }
  if (ts.first_watch == 0 || observer == *t || !observing(observer)) return;
  for (std::uint32_t w = ts.first_watch; w != 0; w = watch_next_[w - 1]) {
    Watch& wt = watches_[w - 1];
    if (!wt.active) continue;
    const bool on =
        wt.kind == Watch::Kind::kFailed
            ? e.state == MemberState::kFailed
            : wt.marked[observer] != 0 || (e.state == MemberState::kAlive && e.incarnation >= wt.incarnation);
    mark(wt, observer, on);
  }
}

void SimCluster::mark(Watch& w, NodeId observer, bool on) {
  if (on == (w.marked[observer] != 0)) return;
  w.marked[observer] = on ? 1 : 0;
  if (!on) {
    --w.covered;
    return;
  }
  ++w.covered;
  if (!w.first) w.first = now_;
  if (w.covered > w.reached.size()) w.reached.push_back(now_);
  check_all(w);
}

std::size_t SimCluster::observers_of(NodeId target) const {
  return live_count_ - (observing(target) ? 1 : 0);
}

void SimCluster::check_all(Watch& w) {
  if (!w.all && w.active && w.covered >= observers_of(w.target)) w.all = now_;
}

void SimCluster::check_all_watches() {
  for (Watch& w : watches_) check_all(w);
}

void SimCluster::set_observer(NodeId i, bool on) {
  if (on) {
    ++live_count_;
    return;
  }
  --live_count_;
  // What a stopped observer believed no longer counts (a restart begins from nothing).
  for (Watch& w : watches_) {
    if (w.marked[i] != 0) {
      w.marked[i] = 0;
      --w.covered;
    }
  }
}

std::size_t SimCluster::add_watch(Watch w) {
  w.since = now_;
  w.marked.assign(slots_.size(), 0);
  watches_.push_back(std::move(w));
  Slot& s = slots_[watches_.back().target];
  watch_next_.push_back(s.first_watch);
  s.first_watch = static_cast<std::uint32_t>(watches_.size());
  check_all(watches_.back());
  return watches_.size() - 1;
}

std::size_t SimCluster::watch_failed(NodeId target) {
  WEFT_CHECK(target < slots_.size());
  return add_watch(Watch{.kind = Watch::Kind::kFailed, .target = target});
}

std::size_t SimCluster::watch_update(NodeId target, std::uint64_t incarnation) {
  WEFT_CHECK(target < slots_.size());
  return add_watch(Watch{.kind = Watch::Kind::kUpdated, .target = target, .incarnation = incarnation});
}

std::optional<std::size_t> SimCluster::failure_watch(NodeId target) const {
  for (std::uint32_t w = slots_[target].first_watch; w != 0; w = watch_next_[w - 1]) {
    const Watch& wt = watches_[w - 1];
    if (wt.active && wt.kind == Watch::Kind::kFailed) return w - 1;
  }
  return std::nullopt;
}

std::optional<Duration> Watch::time_to(double fraction, std::size_t observers) const {
  // The smallest count k with k >= fraction * observers (guarding against 0.9999 * 10000 being
  // computed as 9999.000000001).
  const double want = fraction * static_cast<double>(observers);
  auto k = static_cast<std::size_t>(want);
  if (static_cast<double>(k) < want - 1e-9) ++k;
  if (k == 0) return Duration::zero();
  if (k > reached.size()) return std::nullopt;
  return reached[k - 1] - since;
}

}  // namespace weft::sim
