// SimCluster: read-only inspection (views, fullmesh, dump).

#include <cstdio>
#include <string>

#include "weft/sim/cluster.h"

namespace weft::sim {

using gossip::MemberState;

std::optional<gossip::MemberInfo> SimCluster::view(NodeId i, NodeId j) const {
  const gossip::Node* n = node(i);
  if (n == nullptr) return std::nullopt;
  return n->member(slots_[j].name);
}

bool SimCluster::fullmesh() const {
  std::size_t expected = 0;
  std::vector<NodeId> gone;
  for (NodeId i = 0; i < slots_.size(); ++i) {
    switch (slots_[i].status) {
      case NodeStatus::kPending:
        return false;
      case NodeStatus::kRunning:
      case NodeStatus::kStalled:
        ++expected;
        break;
      default:
        gone.push_back(i);
        break;
    }
  }
  // count(kAlive) == expected and no departed node is alive: the alive set is exactly the
  // expected set, without an O(N^2) comparison.
  for (NodeId i = 0; i < slots_.size(); ++i) {
    if (observing(i) && slots_[i].node->count(MemberState::kAlive) != expected) return false;
  }
  for (NodeId i = 0; i < slots_.size(); ++i) {
    if (!observing(i)) continue;
    for (NodeId g : gone) {
      const std::optional<gossip::MemberInfo> m = slots_[i].node->member(slots_[g].name);
      if (m && m->state == MemberState::kAlive) return false;
    }
  }
  return true;
}

namespace {

char state_char(const std::optional<gossip::MemberInfo>& m) {
  if (!m) return '-';
  switch (m->state) {
    case MemberState::kAlive:
      return 'A';
    case MemberState::kSuspect:
      return 's';
    case MemberState::kFailed:
      return 'F';
    case MemberState::kLeft:
      return 'L';
  }
  return '?';
}

}  // namespace

std::string SimCluster::dump(std::size_t max_nodes) const {
  std::string out;
  char line[320];
  const NetStats& ns = net_.stats();
  std::snprintf(line, sizeof line,
                "t=%.3fs nodes=%zu live=%zu false_positives=%zu events=%llu stuck=%llu | net: "
                "inflight=%zu sent=%llu delivered=%llu lost=%llu partitioned=%llu to_down=%llu icmp=%llu\n",
                to_seconds(elapsed()), slots_.size(), live_count_, false_positive_nodes_,
                static_cast<unsigned long long>(counters_.events),
                static_cast<unsigned long long>(counters_.stuck_deadlines), net_.in_flight(),
                static_cast<unsigned long long>(ns.sent), static_cast<unsigned long long>(ns.delivered),
                static_cast<unsigned long long>(ns.lost), static_cast<unsigned long long>(ns.partitioned),
                static_cast<unsigned long long>(ns.to_down), static_cast<unsigned long long>(ns.unreachable));
  out += line;
  const bool matrix = slots_.size() <= 32;
  if (matrix) out += "  (views: A alive, s suspect, F failed, L left, - unknown, * self)\n";
  const std::size_t rows = std::min(max_nodes, slots_.size());
  for (NodeId i = 0; i < rows; ++i) {
    const Slot& s = slots_[i];
    if (!s.node) {
      std::snprintf(line, sizeof line, "  #%u %-10s %-8s\n", i, s.name.c_str(), to_string(s.status));
      out += line;
      continue;
    }
    const gossip::Node& n = *s.node;
    std::snprintf(line, sizeof line,
                  "  #%u %-10s %-8s inc=%llu alive=%zu suspect=%zu failed=%zu left=%zu health=%u "
                  "queued=%zu%s",
                  i, s.name.c_str(), to_string(s.status), static_cast<unsigned long long>(n.incarnation()),
                  n.count(MemberState::kAlive), n.count(MemberState::kSuspect), n.count(MemberState::kFailed),
                  n.count(MemberState::kLeft), n.health_score(), n.queued_broadcasts(),
                  s.false_positive ? " FP" : "");
    out += line;
    if (matrix) {
      out += "  ";
      for (NodeId j = 0; j < slots_.size(); ++j) out += i == j ? '*' : state_char(n.member(slots_[j].name));
    }
    out += '\n';
  }
  if (rows < slots_.size()) out += "  ... " + std::to_string(slots_.size() - rows) + " more nodes\n";
  return out;
}

}  // namespace weft::sim
