#include "weft/sim/cluster.h"

#include <algorithm>
#include <span>
#include <utility>

#include "names.h"
#include "wake_heap.h"
#include "weft/base/assert.h"

namespace weft::sim {

namespace {

using gossip::Channel;

constexpr TimePoint kNever = TimePoint::max();

}  // namespace

const char* to_string(NodeStatus s) {
  switch (s) {
    case NodeStatus::kPending:
      return "pending";
    case NodeStatus::kRunning:
      return "running";
    case NodeStatus::kStalled:
      return "stalled";
    case NodeStatus::kLeaving:
      return "leaving";
    case NodeStatus::kLeft:
      return "left";
    case NodeStatus::kCrashed:
      return "crashed";
  }
  return "?";
}

SimCluster::SimCluster(ClusterConfig cfg)
    : cfg_(std::move(cfg)),
      net_(cfg_.nodes, cfg_.net, cfg_.seed ^ 0x6e65742d73656564ULL),
      slots_(cfg_.nodes),
      heap_(std::make_unique<detail::WakeHeap>(cfg_.nodes)) {
  WEFT_CHECK(cfg_.nodes >= 1 && cfg_.nodes <= kMaxSimNodes);
  const Duration window =
      cfg_.join_window.value_or(std::max<Duration>(1s, std::chrono::milliseconds(cfg_.nodes)));
  Rng rng(cfg_.seed);
  const auto window_ns =
      static_cast<std::uint64_t>(std::max<std::int64_t>(std::chrono::nanoseconds(window).count(), 0));
  for (NodeId i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    s.name = std::string(kNamePrefix) + std::to_string(i);
    net_.set_down(i, true);
    // Node 0 first; ties at time zero are broken by node index in the heap.
    const std::uint64_t offset = (i == 0 || window_ns == 0) ? 0 : rng.below(window_ns);
    s.start_at = kSimEpoch + std::chrono::nanoseconds(static_cast<std::int64_t>(offset));
    heap_->set(i, s.start_at);
  }
}

SimCluster::~SimCluster() = default;

std::uint64_t SimCluster::node_seed(NodeId i) const {
  std::uint64_t x =
      cfg_.seed ^ (std::uint64_t{i} * 0x9e3779b97f4a7c15ULL) ^ (std::uint64_t{slots_[i].restarts} << 48);
  return Rng::splitmix64(x);
}

bool SimCluster::observing(NodeId i) const {
  const NodeStatus s = slots_[i].status;
  return s == NodeStatus::kRunning || s == NodeStatus::kStalled;
}

bool SimCluster::live(NodeId i) const { return observing(i); }

gossip::Node* SimCluster::node(NodeId i) { return slots_[i].node ? &*slots_[i].node : nullptr; }
const gossip::Node* SimCluster::node(NodeId i) const { return slots_[i].node ? &*slots_[i].node : nullptr; }

// ---------------------------------------------------------------------------------- driving

void SimCluster::run_for(Duration d) {
  const TimePoint limit = now_ + d;
  while (step(limit)) {
  }
  now_ = limit;
}

TimePoint SimCluster::next_event_time() const {
  const TimePoint tw = heap_->empty() ? kNever : heap_->top_time();
  const std::optional<TimePoint> tn = net_.next_time();
  return tn ? std::min(*tn, tw) : tw;
}

bool SimCluster::step(TimePoint limit) {
  const std::optional<TimePoint> tn = net_.next_time();
  const TimePoint tw = heap_->empty() ? kNever : heap_->top_time();
  if (tn && *tn <= tw) {
    if (*tn > limit) return false;
    now_ = std::max(now_, *tn);
    if (net_.pop(delivery_)) deliver(delivery_);
    return true;
  }
  if (heap_->empty() || tw > limit) return false;
  now_ = std::max(now_, tw);
  wake(heap_->top());
  return true;
}

void SimCluster::deliver(Delivery& d) {
  Slot& s = slots_[d.to];
  switch (s.status) {
    case NodeStatus::kRunning:
    case NodeStatus::kLeaving:
      handle(d.to, d);
      break;
    case NodeStatus::kStalled:
      s.stalled.push_back(std::move(d));
      break;
    default:
      ++counters_.dropped_not_running;
      break;
  }
}

void SimCluster::handle(NodeId i, Delivery& d) {
  ++counters_.deliveries;
  gossip::Node& n = *slots_[i].node;
  const Endpoint from = endpoint_of(d.from);
  if (d.unreachable) {
    n.handle_unreachable(now_, from);  // what the agent's transport reads from the error queue
  } else if (d.channel == Channel::kReliable) {
    n.handle_stream(now_, from, d.bytes);
  } else {
    n.handle_packet(now_, from, d.bytes);
  }
  after(i, false);
}

void SimCluster::wake(NodeId i) {
  Slot& s = slots_[i];
  if (s.status == NodeStatus::kPending) {
    start(i);
    return;
  }
  if (s.status == NodeStatus::kStalled) {
    // The process resumes: first what queued up in its socket buffers, in order, then its
    // overdue timers.
    s.status = NodeStatus::kRunning;
    ++counters_.status_changes;
    std::vector<Delivery> queued = std::move(s.stalled);
    s.stalled.clear();
    for (Delivery& d : queued) handle(i, d);
  }
  if (s.status == NodeStatus::kLeaving && now_ >= s.leave_deadline) {
    stop(i, NodeStatus::kLeft);
    return;
  }
  bool ticked = false;
  if (s.node->next_deadline() <= now_) {
    (void)s.node->tick(now_);
    ++counters_.ticks;
    ticked = true;
  }
  after(i, ticked);
}

void SimCluster::after(NodeId i, bool ticked) {
  Slot& s = slots_[i];
  gossip::Node& n = *s.node;

  n.drain_outgoing(out_);
  for (gossip::Datagram& dg : out_) {
    const auto size = static_cast<std::uint64_t>(dg.bytes.size());
    if (dg.channel == Channel::kReliable) {
      ++s.sent.streams_sent;
      s.sent.stream_bytes_sent += size;
      ++counters_.sent.streams_sent;
      counters_.sent.stream_bytes_sent += size;
    } else {
      ++s.sent.packets_sent;
      s.sent.bytes_sent += size;
      ++counters_.sent.packets_sent;
      counters_.sent.bytes_sent += size;
    }
    const std::optional<NodeId> to = node_of(dg.to);
    if (!to || *to >= slots_.size()) {
      ++net_.stats().unroutable;
      continue;
    }
    net_.send(now_, i, *to, dg.channel, std::move(dg.bytes));
  }
  out_.clear();

  n.drain_events(events_);
  for (const gossip::MemberEvent& e : events_) observe(i, e);
  events_.clear();

  if (s.status == NodeStatus::kLeaving && n.leave_done()) {
    stop(i, NodeStatus::kLeft);
    return;
  }
  TimePoint next = n.next_deadline();
  if (next <= now_) {
    if (ticked) {
      // tick() must move every deadline past `now`; never spin on one instant.
      ++counters_.stuck_deadlines;
      next = now_ + 1us;
    } else {
      next = now_;
    }
  }
  if (s.status == NodeStatus::kLeaving) next = std::min(next, s.leave_deadline);
  if (next == kNever) {
    heap_->erase(i);
  } else {
    heap_->set(i, next);
  }
}

// ------------------------------------------------------------------------------- lifecycle

std::optional<NodeId> SimCluster::seed_for(NodeId i) const {
  if (i != 0 && (observing(0) || slots_[0].status == NodeStatus::kPending)) return NodeId{0};
  for (NodeId j = 0; j < slots_.size(); ++j) {
    if (j != i && observing(j)) return j;
  }
  return std::nullopt;
}

void SimCluster::start(NodeId i) {
  Slot& s = slots_[i];
  gossip::Config gcfg = cfg_.gossip;
  if (cfg_.claims) gcfg.claims = cfg_.claims(i, s.name);
  s.node.emplace(
      std::move(gcfg),
      gossip::Self{.name = s.name, .addr = endpoint_of(i), .incarnation = s.start_incarnation, .meta = {}},
      node_seed(i), nullptr);
  s.status = NodeStatus::kRunning;
  ++counters_.status_changes;
  s.start_at = now_;
  s.stalled.clear();
  net_.set_down(i, false);
  set_observer(i, true);
  if (const std::optional<NodeId> seed = seed_for(i)) {
    const Endpoint e = endpoint_of(*seed);
    s.node->join(now_, std::span<const Endpoint>(&e, 1));
  } else {
    s.node->join(now_, {});
  }
  after(i, false);
  check_all_watches();
}

void SimCluster::stop(NodeId i, NodeStatus why) {
  Slot& s = slots_[i];
  const bool was_observing = observing(i);
  s.status = why;
  ++counters_.status_changes;
  s.stalled.clear();
  net_.set_down(i, true);
  heap_->erase(i);
  if (was_observing) set_observer(i, false);
  check_all_watches();
}

void SimCluster::crash(NodeId i) {
  WEFT_CHECK(i < slots_.size());
  const NodeStatus st = slots_[i].status;
  if (st == NodeStatus::kCrashed || st == NodeStatus::kLeft) return;
  stop(i, NodeStatus::kCrashed);
  if (!failure_watch(i)) watch_failed(i);
}

void SimCluster::stall(NodeId i, Duration d) {
  WEFT_CHECK(i < slots_.size());
  Slot& s = slots_[i];
  if (s.status != NodeStatus::kRunning || d <= Duration::zero()) return;
  s.status = NodeStatus::kStalled;
  ++counters_.status_changes;
  s.stall_until = now_ + d;
  heap_->set(i, s.stall_until);
}

void SimCluster::restart(NodeId i, std::optional<std::uint64_t> wiped) {
  WEFT_CHECK(i < slots_.size());
  Slot& s = slots_[i];
  if (s.status != NodeStatus::kCrashed && s.status != NodeStatus::kLeft) return;
  // An agent restarts with its stored incarnation + 1.
  s.life_incarnation = s.node ? s.node->incarnation() + 1 : 0;
  s.start_incarnation = wiped.value_or(s.life_incarnation);
  ++s.restarts;
  for (std::uint32_t w = s.first_watch; w != 0; w = watch_next_[w - 1]) watches_[w - 1].active = false;
  start(i);
}

void SimCluster::leave(NodeId i) {
  WEFT_CHECK(i < slots_.size());
  Slot& s = slots_[i];
  if (s.status != NodeStatus::kRunning) return;
  s.status = NodeStatus::kLeaving;
  ++counters_.status_changes;
  set_observer(i, false);
  s.leave_deadline = now_ + cfg_.leave_timeout;
  s.node->leave(now_);
  after(i, false);
  check_all_watches();
}

Result<void> SimCluster::set_meta(NodeId i, std::vector<std::byte> meta) {
  WEFT_CHECK(i < slots_.size());
  Slot& s = slots_[i];
  if (s.status != NodeStatus::kRunning) return fail("node is not running");
  Result<void> r = s.node->set_meta(now_, std::move(meta));
  after(i, false);
  return r;
}

}  // namespace weft::sim
