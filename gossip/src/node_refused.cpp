// The refused-probe fast path (Config::refused_fast_path): ICMP "port unreachable" reports.
//
// A crashed process leaves its port closed, and a datagram to it draws an ICMP "port
// unreachable"; a stalled process (its socket still open) or a lossy network never does. A
// refusal is strong evidence, but it may be stale (about a datagram sent before a restart) or
// spoofed, so it is only acted on when a second member sees the same:
//
//   refusal about live member M, from any of our traffic to M
//     a probe of M is running, unanswered    -> that probe is refused: ask its relays now
//     a probe of M is running, answered      -> stale: ignored
//     none                                   -> verify probe of M now (out of turn; at most one
//                                               per member per probe period, kMaxVerifies at once)
//   a relay's ping to M refused              -> the relay nacks at once, with refused = true
//   own refusal + refused_confirmations refused nacks from distinct relays we asked, no ack
//                                            -> M failed now: Dead broadcast, kFailed, stats, and
//                                               Dead sent directly to leave_fanout members
//   any ack of the probe (direct or relayed) -> M answered: this probe never declares
//
// Anything less falls back to the ordinary path: a verify probe that is not confirmed ends
// quietly after one probe period (it never suspects and never moves the health score; the
// round-robin probe keeps doing both), and a refused regular probe ends as any other probe.
//
// A refusal of a ping we relay is the asker's evidence: we nack it and start no verify of our
// own. Otherwise every relay would verify too and ask k relays of its own: one crash would set
// off a cascade through the cluster.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "node_impl.h"

namespace weft::gossip {

std::uint32_t NodeImpl::live_member_at(const Endpoint& to) const {
  if (to == members_.at(self_slot_).addr) return MemberTable::kNone;
  // No address index: a refusal is rare, and an index would cost every member table 8+ bytes
  // per entry (a 10 000-node simulation holds 10^8 entries).
  for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
    if (s == self_slot_ || !members_.in_use(s)) continue;
    const Member& m = members_.at(s);
    if (m.addr == to && (m.state == MemberState::kAlive || m.state == MemberState::kSuspect)) return s;
  }
  return MemberTable::kNone;
}

void NodeImpl::handle_unreachable(TimePoint now, const Endpoint& to) {
  ++stats_.unreachable_reports;
  if (!cfg_.refused_fast_path || !started_) {
    ++stats_.unreachable_ignored;
    return;
  }

  // As a relay: every request whose ping went to `to` is nacked now, not at 80 % of the probe
  // timeout. In seq order, so that the output does not depend on the hash table's layout.
  bool relaying = false;
  std::vector<std::uint32_t> nack_now;
  for (const auto& [seq, r] : relays_) {
    if (r.target_addr != to) continue;
    relaying = true;
    if (r.want_nack && !r.nacked) nack_now.push_back(seq);
  }
  std::sort(nack_now.begin(), nack_now.end());
  for (std::uint32_t seq : nack_now) {
    Relay& r = relays_.at(seq);
    r.nacked = true;  // the relay stays until its deadline: a late ack is still forwarded
    ++stats_.nacks_sent;
    ++stats_.refused_nacks_sent;
    const Message nack[] = {Nack{.seq = r.orig_seq, .refused = true}};
    send_packet(r.source, nack);
  }

  // As a prober.
  const std::uint32_t slot = live_member_at(to);
  if (slot == MemberTable::kNone) {
    if (!relaying) ++stats_.unreachable_ignored;
    return;
  }
  const std::uint64_t uid = members_.at(slot).uid;
  bool probing = false;
  bool verifying = false;
  auto refuse = [&](Probe& p) {
    if (!p.active || p.slot != slot || p.uid != uid) return;
    probing = true;
    if (&p != &probe_) verifying = true;
    if (p.acked || p.refused) return;  // answered (the refusal is stale), or already counted
    const MemberState s = members_.at(slot).state;
    if (s != MemberState::kAlive && s != MemberState::kSuspect) return;  // declared just now
    p.refused = true;
    ++stats_.refused_probes;
    if (!p.escalated) ask_relays(now, p);
    check_refused(now, p);  // the relays' refused nacks may have come first
  };
  refuse(probe_);
  for (Probe& v : verifies_) refuse(v);
  if (verifying) ++stats_.verifies_limited;
  if (probing || relaying || leaving_) return;
  start_verify(now, slot);
}

void NodeImpl::start_verify(TimePoint now, std::uint32_t slot) {
  if (verifies_.size() >= kMaxVerifies) {
    ++stats_.verifies_limited;
    return;
  }
  const Member& m = members_.at(slot);
  const std::uint32_t seq = next_seq_++;
  // The entry lives one (scaled) probe period whatever happens: while it does, no other verify
  // of the member starts, and a late ack or nack still finds it.
  const TimePoint ends = now + awareness_.scale(cfg_.probe_interval);
  verifies_.push_back(
      Probe{.seq = seq, .slot = slot, .uid = m.uid, .incarnation = m.incarnation, .active = true, .ends = ends});
  ++stats_.refused_verifies;
  schedule(ends, TimerKind::kVerifyEnd, 0, seq);
  if (log_) log_->debug("verify name={} incarnation={} reason=refused", m.name, m.incarnation);
  send_ping(m.addr, seq, m.name);
}

void NodeImpl::on_verify_end(std::uint32_t seq) {
  std::erase_if(verifies_, [&](const Probe& v) { return v.seq == seq; });
}

void NodeImpl::on_refused_nack(TimePoint now, Probe& p, const Endpoint& from) {
  if (!cfg_.refused_fast_path) return;
  // Only the relays we asked, each once: a duplicated datagram or a stray (or forged) nack from
  // anyone else must not stand in for a second opinion.
  if (std::find(p.relays.begin(), p.relays.end(), from) == p.relays.end()) return;
  if (std::find(p.refused_by.begin(), p.refused_by.end(), from) != p.refused_by.end()) return;
  p.refused_by.push_back(from);
  ++stats_.refused_nacks_received;
  check_refused(now, p);
}

void NodeImpl::check_refused(TimePoint now, Probe& p) {
  if (!p.active || p.acked || !p.refused || p.refused_by.size() < cfg_.refused_confirmations) return;
  if (!members_.in_use(p.slot) || members_.at(p.slot).uid != p.uid) return;
  const Member& m = members_.at(p.slot);
  if (m.state != MemberState::kAlive && m.state != MemberState::kSuspect) return;
  if (m.incarnation > p.incarnation) return;  // it refuted or restarted since we probed
  ++stats_.refused_failures;
  if (log_) {
    log_->info("failed name={} incarnation={} reason=refused confirmations={}", m.name, m.incarnation,
               p.refused_by.size());
  }
  const Dead dead = own_dead(m.name, m.incarnation);
  const std::uint32_t slot = p.slot;
  on_dead(now, dead);
  // On the ordinary path many members suspect a crashed one independently, and both the
  // suspicions and the verdict spread: a member that misses every gossip copy of one still hears
  // another. Here one verdict is the only rumor, and at retransmit_limit copies per member a
  // miss is not rare (N = 64: limit 8, ~e^-8 per member; seen in ~1 % of simulated crashes,
  // leaving one member unaware until its own probe or a push-pull, tens of seconds). So, as a
  // graceful leave does, tell up to leave_fanout members directly: one burst per failure.
  const Message msgs[] = {dead};
  for (std::uint32_t peer : random_members(now, cfg_.leave_fanout, slot, Pick::kLive)) {
    send_packet(members_.at(peer).addr, msgs);
  }
}

}  // namespace weft::gossip
