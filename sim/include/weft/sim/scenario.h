#pragma once
// The scenario behind `weft sim`: join, crash and stall, detection, dissemination.
//
//   t = 0                 node 0 starts; the others join through it (ClusterConfig::join_window)
//   join_converged        every node sees every other alive (fullmesh), checked every 1 ms
//   crash_at = join_converged + settle, or join_timeout if the join has not converged by then
//                         (join_converged_s stays null): `fail` random nodes crash and `stall` other random
//                         nodes pause for `stall_for` (never node 0)
//   detect_first / all    first live node / every live node marks every crashed node failed
//   detect_all + stall end (or crash_at + stall_for, whichever is later):
//                         a random running node other than 0 calls set_meta(); we time how long
//                         until 99.99 % / 100 % of the live nodes saw its new incarnation alive
//   duration              the run always lasts this much simulated time (the cost measure)
//
// A phase that does not finish within the duration leaves the later ones unmeasured (nullopt).
// False positives (a live node marked failed by anyone) are counted over the whole run.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "weft/base/time.h"
#include "weft/gossip/config.h"
#include "weft/sim/cluster.h"

namespace weft::sim {

struct ScenarioConfig {
  ClusterConfig cluster{};
  std::size_t fail = 1;
  std::size_t stall = 0;
  Duration stall_for = 5s;
  Duration settle = 5s;         // after join convergence, before the crashes
  Duration join_timeout = 60s;  // crash anyway at this time if the join did not converge
  Duration duration = 120s;     // total simulated time
  bool dissemination = true;
};

struct ScenarioResult {
  std::size_t nodes = 0;
  double loss = 0;
  std::uint64_t seed = 0;
  double simulated_s = 0;
  std::optional<double> join_converged_s;
  std::optional<double> crash_at_s;
  std::optional<double> detect_first_s;  // relative to crash_at
  std::optional<double> detect_all_s;
  std::size_t false_positives = 0;  // distinct live nodes ever marked failed
  std::uint64_t false_positive_events = 0;
  std::optional<double> dissemination_p9999_s;
  std::optional<double> dissemination_all_s;
  std::optional<double> dissemination_p50_s;
  std::uint64_t packets_sent = 0;  // unreliable channel
  std::uint64_t bytes_sent = 0;
  std::uint64_t streams_sent = 0;  // reliable channel
  std::uint64_t stream_bytes_sent = 0;
  double msgs_per_node_per_s = 0;  // both channels, whole run
  double bytes_per_node_per_s = 0;
  std::uint64_t events = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t stuck_deadlines = 0;
  // Protocol counters summed over the nodes that run at the end (a crashed node's are gone):
  // where the traffic comes from.
  gossip::GossipStats protocol{};
  std::vector<NodeId> crashed;
  std::vector<NodeId> stalled;
  NetStats net{};

  friend bool operator==(const ScenarioResult&, const ScenarioResult&) = default;
};

ScenarioResult run_scenario(const ScenarioConfig& cfg);

// memberlist's DefaultLANConfig, for comparisons against weft's defaults.
gossip::Config memberlist_lan_config();

}  // namespace weft::sim
