// Probing (SWIM with Lifeguard's nacks): the round-robin probe, its relays, and the pings we
// relay for others. The refused-probe fast path that shortcuts a probe lives in node_refused.cpp.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>

#include "node_impl.h"

namespace weft::gossip {

// ---------------------------------------------------------------------------------------------
// Answering and relaying

void NodeImpl::on_ping(TimePoint, const Endpoint& from, const Ping& p) {
  // A ping meant for another name (say, a node that used to live at this address) gets no ack,
  // or it would vouch for a dead member.
  if (p.target != members_.at(self_slot_).name) {
    ++stats_.pings_wrong_target;
    return;
  }
  const Message ack[] = {Ack{p.seq}};
  send_packet(from, ack);
}

void NodeImpl::on_indirect_ping(TimePoint now, const Endpoint& from, const IndirectPing& p) {
  // Each request holds state for one probe timeout; a flood must not grow it without bound.
  if (relays_.size() >= kMaxRelays) {
    ++stats_.relays_refused;
    return;
  }
  ++stats_.relayed_pings;
  const std::uint32_t seq = next_seq_++;
  const TimePoint deadline = now + awareness_.scale(cfg_.probe_timeout);
  relays_[seq] = Relay{p.seq, from, p.target_addr, deadline, p.want_nack};
  // Lifeguard (footnote 5): the nack goes out at 80% of the probe timeout, so that it reaches
  // the asker within its probe period; a later ack is still forwarded until `deadline`. The
  // asker sends us the request (score + 1) * probe_timeout into its period and waits until
  // (score + 1) * probe_interval, so it has at least probe_interval - probe_timeout left.
  const Duration nack_after = std::min(cfg_.probe_timeout, cfg_.probe_interval - cfg_.probe_timeout) * 4 / 5;
  schedule(p.want_nack ? std::min(deadline, now + nack_after) : deadline, TimerKind::kRelay, 0, seq);
  send_ping(p.target_addr, seq, p.target);
}

const std::string& NodeImpl::accuser_of(std::uint32_t slot) const {
  auto it = suspicions_.find(slot);
  return it != suspicions_.end() ? it->second.last_from() : members_.at(self_slot_).name;
}

void NodeImpl::send_ping(const Endpoint& to, std::uint32_t seq, const std::string& target) {
  // Buddy system (Lifeguard §IV-C): whoever pings a member it holds suspect, as prober or as
  // relay, tells it first, so it can refute before the timeout.
  const std::uint32_t slot = members_.find(target);
  if (slot != MemberTable::kNone && slot != self_slot_ && members_.at(slot).state == MemberState::kSuspect &&
      members_.at(slot).addr == to) {
    const Message msgs[] = {suspect_of(slot), Ping{seq, target}};
    send_packet(to, msgs);
    return;
  }
  const Message ping[] = {Ping{seq, target}};
  send_packet(to, ping);
}

Probe* NodeImpl::find_probe(std::uint32_t seq) {
  if (probe_.active && probe_.seq == seq) return &probe_;
  for (Probe& v : verifies_) {
    if (v.seq == seq) return &v;
  }
  return nullptr;
}

void NodeImpl::on_ack(TimePoint, const Ack& a) {
  if (Probe* p = find_probe(a.seq)) {
    if (!p->acked) {
      p->acked = true;
      // Only the regular probe feeds the health score: verify probes are extra, out of turn.
      if (p == &probe_) {
        ++stats_.probe_acks;
        awareness_.apply(-1);
      }
    }
    return;
  }
  auto it = relays_.find(a.seq);
  if (it != relays_.end()) {
    const Message ack[] = {Ack{it->second.orig_seq}};
    const Endpoint source = it->second.source;
    relays_.erase(it);
    send_packet(source, ack);
  }
}

void NodeImpl::on_nack(TimePoint now, const Endpoint& from, const Nack& n) {
  ++stats_.nacks_received;
  Probe* p = find_probe(n.seq);
  if (p == nullptr) return;
  ++p->nacks;
  if (n.refused) on_refused_nack(now, *p, from);
}

void NodeImpl::on_relay_timeout(TimePoint now, std::uint32_t seq) {
  auto it = relays_.find(seq);
  if (it == relays_.end()) return;  // answered in time
  Relay& r = it->second;
  if (r.want_nack && !r.nacked) {
    r.nacked = true;
    ++stats_.nacks_sent;
    const Message nack[] = {Nack{r.orig_seq}};
    send_packet(r.source, nack);
  }
  // A nack (at 80%, or earlier when refused) does not end the relay: a late ack is still
  // forwarded until the deadline.
  if (r.deadline > now) {
    schedule(r.deadline, TimerKind::kRelay, 0, seq);
    return;
  }
  relays_.erase(it);
}

// ---------------------------------------------------------------------------------------------
// The round-robin probe

namespace {

// FNV-1a, 64 bit: the ring order must be the same on every member, whatever its build.
std::uint64_t ring_key(std::string_view name) {
  std::uint64_t h = 14695981039346656037ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

bool NodeImpl::ring_before(std::uint32_t a, std::uint32_t b) const {
  const std::string& na = members_.at(a).name;
  const std::string& nb = members_.at(b).name;
  const std::uint64_t ka = ring_key(na);
  const std::uint64_t kb = ring_key(nb);
  return ka != kb ? ka < kb : na < nb;
}

void NodeImpl::refresh_ring() {
  auto before = [this](std::uint32_t a, std::uint32_t b) { return ring_before(a, b); };
  if (ring_rebuild_) {
    ring_.clear();
    ring_new_.clear();
    for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
      if (members_.in_use(s)) ring_.push_back(s);
    }
    std::sort(ring_.begin(), ring_.end(), before);
    ring_rebuild_ = false;
    return;
  }
  if (ring_new_.empty()) return;
  // O(ring + new log new): a join burst adds many members between two probes.
  std::sort(ring_new_.begin(), ring_new_.end(), before);
  const auto mid = static_cast<std::ptrdiff_t>(ring_.size());
  ring_.insert(ring_.end(), ring_new_.begin(), ring_new_.end());
  std::inplace_merge(ring_.begin(), ring_.begin() + mid, ring_.end(), before);
  ring_new_.clear();
}

// Rotation round robin. Every member orders the members the same way (a ring, by a hash of the
// name) and counts probe periods on a clock they share. In period `step`, the member at ring
// position i probes the live member d = 1 + step mod (n - 1) places after it. For one d that is
// a permutation: every member is probed by exactly one other in every period, so a crashed
// member draws its first probe (and with it the refusal or the missed ack that starts its
// detection) within two periods, where SWIM's independent random orders leave a tail
// (P(no probe for t periods) ~ e^-t: ~1 % of crashes waited over 5 s at N = 64). Each prober
// still visits every member once per n - 1 periods, and successive probes of a member come from
// distinct probers, which keeps suspicion confirmations independent. Views that differ during
// churn only shift part of the ring for a while; failed and left members keep their places
// and are skipped (their successor is probed twice).
std::uint32_t NodeImpl::next_probe_target(TimePoint now) {
  refresh_ring();
  const std::size_t n = ring_.size();
  if (n < 2) return MemberTable::kNone;
  const auto self_it = std::lower_bound(ring_.begin(), ring_.end(), self_slot_,
                                        [this](std::uint32_t a, std::uint32_t b) { return ring_before(a, b); });
  const auto self_pos = static_cast<std::size_t>(self_it - ring_.begin());
  const auto since_epoch = (now + shared_clock_offset_).time_since_epoch();
  std::uint64_t step = since_epoch.count() > 0 ? static_cast<std::uint64_t>(since_epoch / cfg_.probe_interval) : 0;
  // Never the same period twice in a row. A wall clock stepped back is followed at once (a
  // `step <= last` guard would keep this member out of phase with the others for good).
  if (step == last_probe_step_) ++step;
  last_probe_step_ = step;
  const std::size_t d = 1 + static_cast<std::size_t>(step % (n - 1));
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t pos = (self_pos + d + j) % n;
    if (pos == self_pos) continue;
    const std::uint32_t slot = ring_[pos];
    const MemberState s = members_.at(slot).state;
    if (s == MemberState::kAlive || s == MemberState::kSuspect) return slot;
  }
  return MemberTable::kNone;
}

void NodeImpl::start_probe(TimePoint now) {
  if (probe_.active) finish_probe(now);
  next_probe_at_ = now + awareness_.scale(cfg_.probe_interval);
  schedule(next_probe_at_, TimerKind::kProbe);
  if (leaving_) return;
  const std::uint32_t slot = next_probe_target(now);
  if (slot == MemberTable::kNone) return;
  const Member& m = members_.at(slot);
  probe_ = Probe{.seq = next_seq_++, .slot = slot, .uid = m.uid, .incarnation = m.incarnation, .active = true};
  ++stats_.probes;
  const Duration timeout = awareness_.scale(cfg_.probe_timeout);
  schedule(now + timeout, TimerKind::kAckTimeout, 0, probe_.seq);
  for (unsigned i = 1; i <= cfg_.probe_retries; ++i) {
    schedule(now + timeout * i / (cfg_.probe_retries + 1), TimerKind::kProbeRetry, 0, probe_.seq);
  }
  send_ping(m.addr, probe_.seq, m.name);
}

// Under loss most failed probes are one lost ping or ack. More direct pings before the timeout
// (2 datagrams each) save most of the ping-reqs (4 per relay, plus nacks) and most suspicions
// (a suspect and a refute broadcast to everyone): at 10 % loss the share of probes that need
// relays drops from ~19 % to ~3.6 % with one retry and ~0.7 % with two, and so does the traffic
// that loss adds. A healthy LAN answers within milliseconds, so retries never fire there.
void NodeImpl::on_probe_retry(std::uint32_t seq) {
  if (!probe_.active || probe_.seq != seq || probe_.acked || probe_.escalated) return;
  if (!members_.in_use(probe_.slot) || members_.at(probe_.slot).uid != probe_.uid) return;
  ++stats_.probe_retries;
  const Member& m = members_.at(probe_.slot);
  send_ping(m.addr, probe_.seq, m.name);
}

void NodeImpl::on_ack_timeout(TimePoint now, std::uint32_t seq) {
  // Already escalated: a refusal asked the relays early (node_refused.cpp).
  if (!probe_.active || probe_.seq != seq || probe_.acked || probe_.escalated) return;
  ask_relays(now, probe_);
}

void NodeImpl::ask_relays(TimePoint now, Probe& p) {
  p.escalated = true;
  if (!members_.in_use(p.slot) || members_.at(p.slot).uid != p.uid) return;
  const Member& target = members_.at(p.slot);
  auto relays = random_members(now, cfg_.indirect_checks, p.slot, Pick::kAlive);
  const Message req[] = {IndirectPing{p.seq, target.name, target.addr, /*want_nack=*/true}};
  for (std::uint32_t r : relays) {
    ++stats_.indirect_probes;
    ++p.expected_nacks;
    const Endpoint& to = members_.at(r).addr;
    p.relays.push_back(to);
    send_packet(to, req);
  }
}

void NodeImpl::finish_probe(TimePoint now) {
  probe_.active = false;
  if (probe_.acked) return;
  // Lifeguard: missing nacks mean the trouble may be ours; with no relays, any miss counts.
  int delta = 1;
  if (probe_.expected_nacks > 0) {
    delta = static_cast<int>(probe_.expected_nacks) - static_cast<int>(std::min(probe_.nacks, probe_.expected_nacks));
  }
  awareness_.apply(delta);
  if (!members_.in_use(probe_.slot) || members_.at(probe_.slot).uid != probe_.uid) return;
  const Member& m = members_.at(probe_.slot);
  if (m.state != MemberState::kAlive && m.state != MemberState::kSuspect) return;
  ++stats_.probe_failures;
  // At the incarnation we probed: if the member refuted or restarted since, this is stale.
  const Suspect accusation = own_suspect(m.name, probe_.incarnation);
  const Endpoint target = m.addr;
  on_suspect(now, accusation);
  // Tell the accused directly too: if it misses every gossip copy of the suspicion it cannot
  // refute, and the whole cluster declares a live member failed (seen at N = 64, 10 % loss).
  const Message msgs[] = {accusation};
  send_packet(target, msgs);
}

}  // namespace weft::gossip
