// The membership rules: how alive / suspect / dead updates change what we believe.
//
// Precedence for one member: a higher incarnation wins; at equal incarnation
// dead(left/failed) > suspect > alive. Only the member itself raises its incarnation (to refute).
//
// An accusation (suspect, failed, or a leave) naming an incarnation ABOVE the one we know for
// the member is dropped and counted (GossipStats::accusations_above_known), about ourselves too
// unless the jump is bounded (the exception below).
// Only the member itself issues its incarnations, announcing each by an alive before anyone can
// honestly accuse it at that number: an accusation above what we know means we missed that alive
// (gossip or push-pull still brings it) or it is forged. Without this rule one forged message at
// a huge incarnation evicts a member for good (memberlist #358): its refutation must beat the
// accused number, which is impossible at UINT64_MAX (refute wrapped to 0 before), and every alive
// it sends stays below the forged verdict. The trade-off is at accusation_above_known.
// An accusation at the known incarnation is still applied; a live victim refutes it at known + 1.
// Alive messages at a higher incarnation are taken as before: that is how refutations spread.
//
// One exception, about ourselves only: an accusation above our own incarnation by at most
// kMaxSelfIncarnationJump is refuted (to its incarnation + 1), not dropped. A host rebuilt with
// the same name has lost its stored incarnation and starts at 0 or 1 while the others hold it
// failed or left at some k (its previous life): it learns that verdict about itself (from the
// seed's push-pull state when it joins, or gossip, a leave echo, a sync), refutes to k + 1, and
// every member takes that alive, at its old address or (after reclaim_after) a new one. It is
// back within seconds, as with Serf / Consul, instead of being refused until the others reap it.
// The others still drop an accusation above what THEY know, so a forged one never moves their
// view: only our own alive at k + 1 does. Larger jumps are dropped as before (see
// refuted_above_own for the bound).
//
// What stays open when claims are not signed (Config::claims null, no trust root): forged
// accusations at the known incarnation (a live victim refutes them), forged alive messages for
// another member (including one at UINT64_MAX, which the owner can no longer outbid), and a
// forged leave or failure followed by an alive from another address taking over the name
// (memberlist #370, see on_alive). With signed claims (claims.h) each rule below also requires
// the author's verified signature before anything changes, which closes all three.

#include <spdlog/spdlog.h>

#include <limits>

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

// accused_incarnation is above ours only for an alive about us (an impostor, which signatures
// will stop, or our own earlier life) or an accusation about us within kMaxSelfIncarnationJump of
// ours (refuted_above_own). Saturates instead of wrapping to 0 (which every member would then
// ignore as stale).
void NodeImpl::refute(TimePoint now, std::uint64_t accused_incarnation) {
  Member& self = members_.at(self_slot_);
  const std::uint64_t base = std::max(self.incarnation, accused_incarnation);
  if (base == std::numeric_limits<std::uint64_t>::max()) {
    ++stats_.refutes_saturated;
    if (log_) log_->warn("refute_saturated incarnation={}", base);
  }
  self.incarnation = base == std::numeric_limits<std::uint64_t>::max() ? base : base + 1;
  sign_self();
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
  const Message msgs[] = {alive_of(self_slot_)};
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
  const Message msgs[] = {alive_of(self_slot_)};
  send_packet(from, msgs);
}

// The exception to dropping accusations above the known incarnation (see the header): one about
// ourselves at k above our own incarnation means that we lost our stored incarnation (a wiped
// data directory: the others still remember our previous life) or that it is forged. We refute
// to k + 1 when k - own <= kMaxSelfIncarnationJump (2^32). A real history never comes close: an
// incarnation is spent per refutation, metadata change or restart, and even one a second for
// 136 years is 2^32. A forger can push us up by at most 2^32 per accusation, so saturating us
// (where we can no longer refute or change metadata) takes ~2^32 forged accusations (tens of
// gigabytes, however packed into datagrams or push-pull entries), each refuted and counted
// (refutes_above_own), instead of one. Each refutation is an ordinary alive at k + 1;
// the others dropped the forgery itself (above what they know) and take that alive, so their
// view stays right. (A forged alive about us at UINT64_MAX saturates us in one message: open
// until claims are signed.) A larger jump is dropped and counted as accusations_above_known: a
// previous life that long is not believable. While leaving we refute nothing; it is dropped too.
bool NodeImpl::refuted_above_own(TimePoint now, std::uint32_t slot, std::uint64_t incarnation,
                                 const char* kind, const std::string& from) {
  if (slot != self_slot_ || leaving_) return false;
  const std::uint64_t own = members_.at(slot).incarnation;
  if (incarnation <= own || incarnation - own > kMaxSelfIncarnationJump) return false;
  ++stats_.refutes_above_own;
  if (log_) {
    log_->info("accused_above_own kind={} incarnation={} own={} from={}", kind, incarnation, own, from);
  }
  refute(now, incarnation);
  return true;
}

// The trade-off of dropping accusations above the known incarnation: an honest accuser at k + 1
// while we know k means we missed the member's alive at k + 1 (a refutation or a metadata change).
// Gossip or push-pull brings that alive (it clears a suspicion we hold at k), and the prober, if
// its probes still fail, accuses again at k + 1, which we then take. If the member died right
// after announcing k + 1 and every copy of that alive missed us, the other members' verdicts at
// k + 1 are dropped here, and we find the failure through our own probe (one probe pass plus the
// suspicion timeout, at k); the two views then differ in incarnation until the member is reaped.
// Slower detection in a rare case, in exchange for no eviction by one forged message.
bool NodeImpl::accusation_above_known(const Member& m, std::uint64_t incarnation, const char* kind,
                                      const std::string& from) {
  if (incarnation <= m.incarnation) return false;
  ++stats_.accusations_above_known;
  if (log_) {
    log_->debug("accusation_above_known kind={} name={} incarnation={} known={} from={}", kind, m.name,
                incarnation, m.incarnation, from);
  }
  return true;
}

void NodeImpl::on_alive(TimePoint now, const Alive& a, bool rebroadcast) {
  if (a.meta.size() > cfg_.max_meta_bytes || a.name.size() > cfg_.max_name_bytes) {
    ++stats_.rejected[static_cast<std::size_t>(DecodeError::kTooLarge)];
    return;
  }
  std::uint32_t slot = members_.find(a.name);
  if (slot == MemberTable::kNone) {
    if (!verified_alive(a)) return;  // signed claims: only a certified member joins
    slot = members_.add(a.name, a.addr, a.incarnation, MemberState::kAlive, a.meta, now);
    keep_alive_proof(slot, a);
    ring_new_.push_back(slot);
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
    // Signed claims: only our own signature (a previous life's) can be about us; a forgery is
    // dropped by everyone, so there is nothing to correct.
    if (!verified_alive(a)) return;
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
    // A failed or left member may come back from another address, but only above the
    // incarnation it failed or left at, as at its old address: a captured old alive, replayed
    // after the member moved and then failed or left, must not move it back. An agent restarts
    // at its stored incarnation + 1, so an honest comeback is always above; a member that lost
    // its stored incarnation learns the verdict about itself and refutes above it
    // (refuted_above_own), then comes back here like any other (after reclaim_after, if set).
    // What this cannot stop without signatures (memberlist #370): a forged leave or failure at
    // the known incarnation, then an alive from the attacker's address one above it. The name
    // moves to the attacker, and the owner's refutation from its own address is then refused as
    // a name conflict. Config::reclaim_after narrows it: a new address is refused for that long
    // after the verdict, while a live owner refutes from its own. Only the owner's signature on
    // its alive (issue 5) closes it.
    if (now - m.state_change < cfg_.reclaim_after) {
      ++stats_.name_conflicts;
      if (log_) {
        log_->warn("name_conflict name={} known={} claimed={} reason=reclaim_after", a.name,
                   m.addr.to_string(), a.addr.to_string());
      }
      return;
    }
  }
  if (a.incarnation <= m.incarnation) {
    ++stats_.stale_messages;
    return;
  }
  if (!verified_alive(a)) return;
  keep_alive_proof(slot, a);
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
  // Signed claims: verified only once it is news, right before it would change something.
  auto verified = [&] {
    return verified_accusation(s.failed ? ClaimKind::kDead : ClaimKind::kSuspect, s.name, s.incarnation, s.from, s.sig);
  };
  // This also covers "accused again at a newer incarnation while our timer runs (we missed its
  // refutation)", which used to keep the timer and take the newer incarnation: we now wait for
  // the member's own alive at that incarnation instead (it ends our suspicion).
  if (slot == self_slot_ && s.incarnation > m.incarnation && !leaving_ && !verified()) return;
  if (refuted_above_own(now, slot, s.incarnation, "suspect", s.from)) return;
  if (accusation_above_known(m, s.incarnation, "suspect", s.from)) return;
  if (auto it = suspicions_.find(slot); it != suspicions_.end()) {
    if (it->second.wants(s.from) && verified() && it->second.confirm(s.from)) {
      keep_accusation_proof(slot, s.from, s.sig, s.failed);
      ++stats_.suspicion_confirmations;
      schedule(it->second.deadline(), TimerKind::kSuspicion, slot, it->second.id());
      queue_broadcast(slot);  // carries the new confirmer's name
    }
    return;
  }
  if (m.state != MemberState::kAlive) return;
  if (slot == self_slot_) {
    if (!leaving_ && verified()) refute(now, s.incarnation);
    return;
  }
  if (!verified()) return;
  keep_accusation_proof(slot, s.from, s.sig, s.failed);
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
  // The last word: before declaring, ping the suspect ourselves, kLastWords times over one probe
  // timeout. send_ping's buddy rule puts our suspicion in front of each ping, so a live suspect
  // answers with its alive: a refutation when it had not heard of the suspicion, its current
  // alive when it had refuted and we missed every copy (answer_stale_accusation). Either ends the
  // suspicion here. Without it, a member that lost the refutation's few copies (the direct one
  // and the gossip, all gone within a second as everyone else already knows) declared a live
  // member failed: ~1 in 400 ten-minute runs at N = 64, 10 % loss and a 2.5 s stall. A crashed
  // suspect costs one probe timeout more (its refusal, if ICMP reports it, declares at once
  // through the refused fast path), and the first verdict still ends every other timer.
  Suspicion& s = it->second;
  if (s.last_words() < kLastWords && !leaving_) {
    s.last_word(now + awareness_.scale(cfg_.probe_timeout) / kLastWords);
    ++stats_.last_words;
    send_ping(m.addr, next_seq_++, m.name);
    schedule(s.deadline(), TimerKind::kSuspicion, slot, s.id());
    return;
  }
  ++stats_.failed_declared;
  if (log_) log_->info("failed name={} incarnation={} confirmations={}", m.name, m.incarnation, it->second.confirmations());
  on_dead(now, own_dead(m.name, m.incarnation));
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
  auto verified = [&] { return verified_accusation(ClaimKind::kDead, d.name, d.incarnation, d.from, d.sig); };
  if (slot == self_slot_ && d.incarnation > m.incarnation && !leaving_ && !verified()) return;
  // A leave above the known incarnation too: a member that refuted or changed its metadata and
  // then left while we missed the alive ends up failed here instead of left (our own probe finds
  // it gone). A forged leave at a huge incarnation would otherwise pin its name as left forever.
  if (refuted_above_own(now, slot, d.incarnation, left ? "leave" : "dead", d.from)) return;
  if (accusation_above_known(m, d.incarnation, left ? "leave" : "dead", d.from)) return;
  // Already gone. A graceful leave may still correct an earlier "failed" (never the reverse).
  if (m.state == MemberState::kLeft) return;
  if (m.state == MemberState::kFailed && !left) return;
  if (slot == self_slot_) {
    if (!leaving_ && verified()) refute(now, d.incarnation);
    return;
  }
  if (!verified()) return;
  keep_accusation_proof(slot, d.from, d.sig, /*dead=*/true);
  suspicions_.erase(slot);
  m.incarnation = d.incarnation;
  const MemberState state = left ? MemberState::kLeft : MemberState::kFailed;
  members_.set_state(slot, state, now);
  emit(left ? EventType::kLeft : EventType::kFailed, slot);
  queue_broadcast(slot);
  schedule(now + cfg_.reap_after, TimerKind::kReap, slot, m.uid);
  if (left) echo_leave(d, slot);
}

// Anyone with the cluster key can forge a leave at the known incarnation, and a left member
// gets no probes and no gossip: a live owner would learn of it only from its next push-pull
// (minutes in a large cluster), while every member has dropped it, and (memberlist #370) another
// address may claim its name (at once, or after Config::reclaim_after). So each member that applies
// a leave sends the member one copy with probability kLeaveEchoes / live members: about
// kLeaveEchoes copies cluster-wide whatever the size. The owner refutes at once; a real leaver
// is still draining its broadcasts (it ignores them) or gone.
void NodeImpl::echo_leave(const Dead& d, std::uint32_t slot) {
  constexpr std::uint64_t kLeaveEchoes = 4;
  const std::uint64_t live = std::max<std::uint64_t>(members_.live(), 1);
  if (live > kLeaveEchoes && rng_.below(live) >= kLeaveEchoes) return;
  ++stats_.leave_echoes;
  const Message msgs[] = {d};
  send_packet(members_.at(slot).addr, msgs);
}

}  // namespace weft::gossip
