#pragma once
// SimCluster: N gossip Nodes on a SimNetwork, on virtual time, single-threaded and deterministic
// for a given seed (like tarantool's swim_cluster).
//
//   SimCluster c({.nodes = 5, .seed = seed});
//   ASSERT_TRUE(c.run_until([&] { return c.fullmesh(); }, 10s)) << c.dump();  // virtual seconds
//   c.net().partition({0, 1}, {2, 3, 4});
//   c.run_for(60s);
//   EXPECT_EQ(c.view(0, 3)->state, MemberState::kFailed);
//
// Time jumps to the next event: the earliest of the next network delivery and the next node
// wake-up. Wake-ups live in an indexed min-heap with exactly one entry per node (its next timer
// deadline, start time or end of stall), updated after every interaction with the node, so there
// are no stale entries. Ties: deliveries before wake-ups, wake-ups by node index.
//
// Joining: node 0 starts alone at time zero; node i > 0 starts at a uniformly random time in
// [0, join_window) and joins through node 0 (the one seed).
//
// The cluster watches every node's events as they are produced (O(N) memory in total, never
// O(N^2)): false positives (a live node marked failed by anyone), and per watched target how many
// live observers believe something of it (crash detection, dissemination of an update).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/gossip/config.h"
#include "weft/gossip/node.h"
#include "weft/gossip/types.h"
#include "weft/sim/network.h"

namespace weft::sim {

namespace detail {
class WakeHeap;
}

// Virtual time zero of every cluster (a non-zero time point, so that TimePoint{} stays "never").
inline constexpr TimePoint kSimEpoch = TimePoint{} + std::chrono::hours(1);

struct ClusterConfig {
  std::size_t nodes = 5;
  std::uint64_t seed = 1;
  gossip::Config gossip{};
  NetConfig net{};
  // Joins through node 0 are spread over this window; unset: max(1 s, nodes x 1 ms), i.e. at
  // most ~1000 joins per second through the seed.
  std::optional<Duration> join_window{};
  // run_until() evaluates its predicate at most once per this much virtual time.
  Duration check_interval = 1ms;
  // A leaving node stops when its broadcasts are out (Node::leave_done) or after this long.
  Duration leave_timeout = 10s;
  // Signed claims: node i's authority (overrides gossip.claims); unset: gossip.claims for all.
  std::function<std::shared_ptr<gossip::ClaimAuthority>(NodeId, const std::string& name)> claims{};
};

enum class NodeStatus : std::uint8_t {
  kPending,  // not started yet (before its join time)
  kRunning,
  kStalled,  // paused: timers do not fire, inbound messages queue up
  kLeaving,  // left gracefully, still sending its last broadcasts
  kLeft,     // stopped after a graceful leave
  kCrashed,
};
const char* to_string(NodeStatus s);

struct NodeCounters {
  std::uint64_t packets_sent = 0;  // unreliable channel
  std::uint64_t bytes_sent = 0;
  std::uint64_t streams_sent = 0;  // reliable channel
  std::uint64_t stream_bytes_sent = 0;
};

struct ClusterCounters {
  NodeCounters sent;             // sum over nodes
  std::uint64_t deliveries = 0;  // messages handed to a node
  std::uint64_t ticks = 0;
  std::uint64_t events = 0;          // member events observed
  std::uint64_t status_changes = 0;  // starts, stalls, resumes, crashes, leaves, restarts
  std::uint64_t unknown_event_targets = 0;
  std::uint64_t dropped_not_running = 0;
  std::uint64_t stuck_deadlines = 0;        // tick() left a deadline <= now (a Node bug); pushed 1 us
  std::uint64_t false_positive_events = 0;  // kFailed about a live node (any observer)
  std::uint64_t left_marked_failed = 0;     // kFailed about a node that had left gracefully
};

// What live observers believe of one target, followed through their events from `since`.
//   kFailed:  the observer's current state of the target is failed.
//   kUpdated: the observer has seen the target alive at incarnation >= `incarnation`.
// Observers are the running and stalled nodes other than the target.
struct Watch {
  enum class Kind : std::uint8_t { kFailed, kUpdated };
  Kind kind = Kind::kFailed;
  NodeId target = 0;
  std::uint64_t incarnation = 0;
  TimePoint since{};
  std::optional<TimePoint> first{};    // the first observer
  std::optional<TimePoint> all{};      // the first moment every observer did
  std::vector<TimePoint> reached{};    // reached[k]: when the count of observers first hit k + 1
  std::size_t covered = 0;             // observers that currently do
  std::vector<std::uint8_t> marked{};  // per observer
  bool active = true;                  // false once the target restarted

  // Time from `since` until `fraction` of `observers` did; nullopt if not (yet).
  [[nodiscard]] std::optional<Duration> time_to(double fraction, std::size_t observers) const;
};

class SimCluster {
 public:
  explicit SimCluster(ClusterConfig cfg);
  ~SimCluster();
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  [[nodiscard]] std::size_t size() const { return slots_.size(); }
  [[nodiscard]] const ClusterConfig& config() const { return cfg_; }
  [[nodiscard]] TimePoint now() const { return now_; }
  [[nodiscard]] Duration elapsed() const { return now_ - kSimEpoch; }

  // Runs events until pred() holds or `timeout` of virtual time passed; returns pred(). The
  // predicate sees the state between events: it is evaluated first, then whenever the clock is
  // about to move past the last evaluation + config().check_interval, so the time at which it
  // returns true is exact when events are sparse and at most check_interval late otherwise.
  // On false, the clock stands at the deadline.
  template <class Pred>
  bool run_until(Pred&& pred, Duration timeout) {
    const TimePoint limit = now_ + timeout;
    TimePoint next_check = now_;
    for (;;) {
      const TimePoint t = next_event_time();
      if (t > next_check) {
        if (pred()) return true;
        next_check = now_ + cfg_.check_interval;
      }
      if (t > limit || !step(limit)) break;
    }
    now_ = limit;
    return pred();
  }
  void run_for(Duration d);
  // Processes the next event if it is due at or before `limit`; false (time unchanged) if none.
  bool step(TimePoint limit);
  // Time of the next delivery or node wake-up; TimePoint::max() if there is none.
  [[nodiscard]] TimePoint next_event_time() const;

  // --- faults and lifecycle (take effect at now()) ---
  // Stops for good (until restart); messages to it are dropped; starts a kFailed watch of it.
  void crash(NodeId i);
  // A process paused by the OS for d (running nodes only): its timers do not fire and inbound
  // messages queue up; at the end the queued messages are handled in order, then the overdue
  // timers fire.
  void stall(NodeId i, Duration d);
  // A crashed or left node comes back with incarnation + 1 and joins through node 0 (or the
  // first live node). With `wiped`, it lost its stored incarnation (a host rebuilt under the same
  // name) and starts at that instead; a failure about an incarnation of its previous life is
  // still about the old process.
  void restart(NodeId i, std::optional<std::uint64_t> wiped = std::nullopt);
  // Graceful leave (running nodes only); the node stops once Node::leave_done() or after
  // config().leave_timeout.
  void leave(NodeId i);
  Result<void> set_meta(NodeId i, std::vector<std::byte> meta);

  // --- inspection ---
  [[nodiscard]] NodeStatus status(NodeId i) const { return slots_[i].status; }
  // When node i last started (its join; scheduled time while pending).
  [[nodiscard]] TimePoint start_time(NodeId i) const { return slots_[i].start_at; }
  [[nodiscard]] bool live(NodeId i) const;  // running or stalled
  [[nodiscard]] std::size_t live_count() const { return live_count_; }
  // What node i believes of node j (nullopt if i never started or does not know j).
  [[nodiscard]] std::optional<gossip::MemberInfo> view(NodeId i, NodeId j) const;
  // Every node that should be up (pending, running, stalled) is up and sees exactly those nodes
  // alive, and none of the crashed or departed ones. O(N + N * departed) with Node::count().
  [[nodiscard]] bool fullmesh() const;
  [[nodiscard]] gossip::Node* node(NodeId i);  // nullptr before it started
  [[nodiscard]] const gossip::Node* node(NodeId i) const;
  [[nodiscard]] const std::string& name(NodeId i) const { return slots_[i].name; }
  [[nodiscard]] static Endpoint addr(NodeId i) { return endpoint_of(i); }
  [[nodiscard]] SimNetwork& net() { return net_; }
  [[nodiscard]] const SimNetwork& net() const { return net_; }
  // Compact text for failure messages: per-node status and counts (and, for small clusters, the
  // matrix of views), up to max_nodes rows.
  [[nodiscard]] std::string dump(std::size_t max_nodes = 40) const;

  // --- observation ---
  [[nodiscard]] const ClusterCounters& counters() const { return counters_; }
  [[nodiscard]] const NodeCounters& node_counters(NodeId i) const { return slots_[i].sent; }
  // kFailed events about node j from any observer, over the whole run.
  [[nodiscard]] std::uint64_t failed_events(NodeId j) const { return slots_[j].failed_events; }
  // Node j was marked failed by someone while it was live (running, stalled or leaving).
  [[nodiscard]] bool false_positive(NodeId j) const { return slots_[j].false_positive; }
  [[nodiscard]] std::size_t false_positives() const { return false_positive_nodes_; }
  // Starts a watch (crash() starts a kFailed watch of the crashed node by itself).
  std::size_t watch_failed(NodeId target);
  std::size_t watch_update(NodeId target, std::uint64_t incarnation);
  [[nodiscard]] const Watch& watch(std::size_t id) const { return watches_[id]; }
  [[nodiscard]] std::optional<std::size_t> failure_watch(NodeId target) const;
  // Observers a watch of `target` needs for `all`.
  [[nodiscard]] std::size_t observers_of(NodeId target) const;

 private:
  struct Slot {
    std::optional<gossip::Node> node;
    std::string name;
    NodeStatus status = NodeStatus::kPending;
    std::uint32_t restarts = 0;
    std::uint64_t start_incarnation = 0;
    // Stored incarnation + 1 at the last restart (start_incarnation unless wiped): kFailed about
    // an older one is about an earlier process, not a FP. (After a wiped restart, a failure of
    // the new process below it would be missed; it refutes above it on its first verdict.)
    std::uint64_t life_incarnation = 0;
    TimePoint start_at{};
    TimePoint stall_until{};
    TimePoint leave_deadline{};
    std::vector<Delivery> stalled;  // inbound messages held during a stall
    NodeCounters sent;
    std::uint64_t failed_events = 0;
    bool false_positive = false;
    std::uint32_t first_watch = 0;  // 1 + index into watches_, 0 = none
  };
  void start(NodeId i);
  void deliver(Delivery& d);
  void handle(NodeId i, Delivery& d);
  void wake(NodeId i);
  void after(NodeId i, bool ticked);  // drain outputs and events, reschedule
  void observe(NodeId observer, const gossip::MemberEvent& e);
  void mark(Watch& w, NodeId observer, bool on);
  void check_all(Watch& w);
  void check_all_watches();
  void set_observer(NodeId i, bool observing);  // status change of a possible observer
  void stop(NodeId i, NodeStatus why);
  std::size_t add_watch(Watch w);
  [[nodiscard]] bool observing(NodeId i) const;
  [[nodiscard]] std::uint64_t node_seed(NodeId i) const;
  [[nodiscard]] std::optional<NodeId> seed_for(NodeId i) const;

  ClusterConfig cfg_;
  TimePoint now_ = kSimEpoch;
  SimNetwork net_;
  std::vector<Slot> slots_;
  std::unique_ptr<detail::WakeHeap> heap_;
  std::size_t live_count_ = 0;
  std::size_t false_positive_nodes_ = 0;
  std::vector<Watch> watches_;
  std::vector<std::uint32_t> watch_next_;  // next watch of the same target (1 + index, 0 = end)
  ClusterCounters counters_;
  // Reused buffers: no allocation per interaction beyond what the Node itself makes.
  std::vector<gossip::Datagram> out_;
  std::vector<gossip::MemberEvent> events_;
  Delivery delivery_;
};

}  // namespace weft::sim
