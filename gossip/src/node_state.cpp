// The membership rules: how alive / suspect / dead updates change what we believe.
//
// Precedence for one member: a higher incarnation wins; at equal incarnation
// dead(left/failed) > suspect > alive. Only the member itself raises its incarnation (to refute).

#include <spdlog/spdlog.h>

#include "node_impl.h"

namespace weft::gossip {

void NodeImpl::emit(EventType type, std::uint32_t slot) {
  const Member& m = members_.at(slot);
  events_.push_back(MemberEvent{type, m.name, m.addr, m.incarnation, m.state});
}

void NodeImpl::queue_broadcast(std::uint32_t slot) {
  Member& m = members_.at(slot);
  ++m.bcast_gen;
  if (!m.bcast_pending) {
    m.bcast_pending = true;
    ++pending_broadcasts_;
  }
  broadcasts_.push(BroadcastRef{slot, m.bcast_gen});
  ++stats_.broadcasts_queued;
}

MemberInfo NodeImpl::info(std::uint32_t slot) const {
  const Member& m = members_.at(slot);
  return MemberInfo{m.name, m.addr, m.incarnation, m.state, m.meta, m.state_change};
}

Duration NodeImpl::suspicion_min() const {
  return Suspicion::min_timeout(cfg_.suspicion_mult, members_.live(), cfg_.probe_interval, cfg_.suspicion_min_floor);
}

void NodeImpl::refute(TimePoint now, std::uint64_t accused_incarnation) {
  Member& self = members_.at(self_slot_);
  self.incarnation = std::max(self.incarnation, accused_incarnation) + 1;
  ++stats_.refutes;
  awareness_.apply(1);  // being accused hints that we are the slow one
  queue_broadcast(self_slot_);
  if (log_) log_->info("refute incarnation={}", self.incarnation);
  // Every member that heard the accusation runs a suspicion timer, and a member that misses every
  // gossip copy of the refutation declares us failed: at N = 64 and 10 % loss the simulator saw
  // 2-6 such false failures in 10 minutes. Telling refute_fanout members directly as well makes a
  // miss need the direct copy and every gossip copy lost. At most four bursts per probe interval,
  // so a flood of accusations cannot turn us into an amplifier.
  if (cfg_.refute_fanout == 0 || now < next_refute_burst_) return;
  next_refute_burst_ = now + cfg_.probe_interval / 4;
  ++stats_.refute_bursts;
  const Message msgs[] = {Alive{self.name, self.addr, self.incarnation, self.meta}};
  for (std::uint32_t p : random_members(now, cfg_.refute_fanout, MemberTable::kNone, Pick::kLive)) {
    send_packet(members_.at(p).addr, msgs);
  }
}

// A member that accuses an older incarnation of us missed our refutation (the direct copy and
// every gossip copy were lost), and its suspicion timer is still running: left alone it declares
// us failed. The accusation came from it (as the buddy-system suspect with its ping, or as its
// gossip), so answer it directly with our current alive. At most 16 answers per probe interval.
void NodeImpl::answer_stale_accusation(TimePoint now, const Endpoint& from, const std::string& name,
                                       std::uint64_t incarnation) {
  const Member& self = members_.at(self_slot_);
  if (leaving_ || name != self.name || incarnation >= self.incarnation) return;
  if (now - stale_answer_window_ >= cfg_.probe_interval) {
    stale_answer_window_ = now;
    stale_answers_in_window_ = 0;
  }
  if (stale_answers_in_window_ >= 16) return;
  ++stale_answers_in_window_;
  ++stats_.stale_accusations_answered;
  const Message msgs[] = {Alive{self.name, self.addr, self.incarnation, self.meta}};
  send_packet(from, msgs);
}

void NodeImpl::on_alive(TimePoint now, const Alive& a, bool rebroadcast) {
  if (a.meta.size() > cfg_.max_meta_bytes || a.name.size() > cfg_.max_name_bytes) {
    ++stats_.rejected[static_cast<std::size_t>(DecodeError::kTooLarge)];
    return;
  }
  std::uint32_t slot = members_.find(a.name);
  if (slot == MemberTable::kNone) {
    slot = members_.add(a.name, a.addr, a.incarnation, MemberState::kAlive, a.meta, now);
    // Insert at a random place in the rest of this probe pass (memberlist does the same).
    probe_order_.push_back(slot);
    const std::size_t lo = std::min(probe_pos_, probe_order_.size() - 1);
    std::swap(probe_order_.back(), probe_order_[lo + rng_.below(probe_order_.size() - lo)]);
    emit(EventType::kJoined, slot);
    if (rebroadcast) queue_broadcast(slot);
    return;
  }
  Member& m = members_.at(slot);
  if (slot == self_slot_) {
    // Someone speaks for us. Our own echo is fine; anything else at or above our incarnation
    // (another address, other metadata, or a higher number) must be corrected.
    if (a.incarnation < m.incarnation) return;
    if (a.incarnation == m.incarnation && a.addr == m.addr && a.meta == m.meta) return;
    if (a.addr != m.addr) ++stats_.name_conflicts;
    refute(now, a.incarnation);
    return;
  }
  if (a.addr != m.addr) {
    if (m.state == MemberState::kAlive || m.state == MemberState::kSuspect) {
      // Same name, other address, while the old one is alive: refuse, never take over silently.
      ++stats_.name_conflicts;
      if (log_) {
        log_->warn("name_conflict name={} known={} claimed={}", a.name, m.addr.to_string(), a.addr.to_string());
      }
      return;
    }
    // A failed or left member may come back from another address, with any incarnation.
  } else if (a.incarnation <= m.incarnation) {
    ++stats_.stale_messages;
    return;
  }
  const MemberState old = m.state;
  const bool changed = a.addr != m.addr || a.meta != m.meta;
  suspicions_.erase(slot);
  m.incarnation = a.incarnation;
  m.addr = a.addr;
  if (a.meta != m.meta) m.meta = a.meta;
  members_.set_state(slot, MemberState::kAlive, now);
  if (old == MemberState::kLeft) {
    emit(EventType::kJoined, slot);
  } else if (old != MemberState::kAlive) {
    emit(EventType::kRecovered, slot);
  } else if (changed) {
    emit(EventType::kUpdated, slot);
  }
  if (rebroadcast) queue_broadcast(slot);
}

void NodeImpl::on_suspect(TimePoint now, const Suspect& s) {
  const std::uint32_t slot = members_.find(s.name);
  if (slot == MemberTable::kNone) return;  // we cannot suspect whom we never knew
  Member& m = members_.at(slot);
  if (s.incarnation < m.incarnation) {
    ++stats_.stale_messages;
    return;
  }
  if (auto it = suspicions_.find(slot); it != suspicions_.end()) {
    if (s.incarnation > m.incarnation) {
      // Accused again at a newer incarnation (we missed its refutation): keep the running
      // timer, spread the newer accusation.
      m.incarnation = s.incarnation;
      queue_broadcast(slot);
    } else if (it->second.confirm(s.from)) {
      ++stats_.suspicion_confirmations;
      schedule(it->second.deadline(), TimerKind::kSuspicion, slot, it->second.id());
      queue_broadcast(slot);  // carries the new confirmer's name
    }
    return;
  }
  if (m.state != MemberState::kAlive) return;
  if (slot == self_slot_) {
    if (!leaving_) refute(now, s.incarnation);
    return;
  }
  const std::size_t n = members_.live();
  unsigned k = cfg_.suspicion_confirmations;
  if (n < k + 2) k = 0;  // too few members to expect independent confirmations
  const Duration min = suspicion_min();
  const Duration max = min * cfg_.suspicion_max_mult;
  auto [it, _] = suspicions_.try_emplace(slot, s.from, k, min, max, now, next_suspicion_id_++);
  m.incarnation = s.incarnation;
  members_.set_state(slot, MemberState::kSuspect, now);
  ++stats_.suspicions_started;
  schedule(it->second.deadline(), TimerKind::kSuspicion, slot, it->second.id());
  emit(EventType::kSuspect, slot);
  queue_broadcast(slot);
  if (log_) log_->debug("suspect name={} incarnation={} from={}", s.name, s.incarnation, s.from);
}

void NodeImpl::on_suspicion_timeout(TimePoint now, std::uint32_t slot, std::uint64_t id) {
  auto it = suspicions_.find(slot);
  if (it == suspicions_.end() || it->second.id() != id || it->second.deadline() > now) return;
  const Member& m = members_.at(slot);
  ++stats_.failed_declared;
  if (log_) log_->info("failed name={} incarnation={} confirmations={}", m.name, m.incarnation, it->second.confirmations());
  on_dead(now, Dead{m.name, m.incarnation, members_.at(self_slot_).name});
}

void NodeImpl::on_dead(TimePoint now, const Dead& d) {
  const std::uint32_t slot = members_.find(d.name);
  if (slot == MemberTable::kNone) return;
  Member& m = members_.at(slot);
  if (d.incarnation < m.incarnation) {
    ++stats_.stale_messages;
    return;
  }
  const bool left = d.from == d.name;
  // Already gone. A graceful leave may still correct an earlier "failed" (never the reverse).
  if (m.state == MemberState::kLeft) return;
  if (m.state == MemberState::kFailed && !left) return;
  if (slot == self_slot_) {
    if (!leaving_) refute(now, d.incarnation);
    return;
  }
  suspicions_.erase(slot);
  m.incarnation = d.incarnation;
  const MemberState state = left ? MemberState::kLeft : MemberState::kFailed;
  members_.set_state(slot, state, now);
  emit(left ? EventType::kLeft : EventType::kFailed, slot);
  queue_broadcast(slot);
  schedule(now + cfg_.reap_after, TimerKind::kReap, slot, m.uid);
}

}  // namespace weft::gossip
