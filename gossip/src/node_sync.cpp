// Join, push-pull anti-entropy, graceful leave and reaping.

#include <spdlog/spdlog.h>

#include <cmath>

#include "node_impl.h"

namespace weft::gossip {

// memberlist's pushPullScale: the interval grows with log2(n) above 32 members, so the
// cluster-wide sync load stays roughly constant.
Duration NodeImpl::push_pull_interval() const {
  const std::size_t n = members_.size();
  if (n <= 32) return cfg_.push_pull_interval;
  const double mult = std::ceil(std::log2(static_cast<double>(n)) - std::log2(32.0)) + 1.0;
  return cfg_.push_pull_interval * static_cast<int>(mult);
}

void NodeImpl::join(TimePoint now, std::span<const Endpoint> seeds) {
  start(now);
  const Endpoint& own = members_.at(self_slot_).addr;
  for (const Endpoint& e : seeds) {
    if (e != own && std::find(seeds_.begin(), seeds_.end(), e) == seeds_.end()) seeds_.push_back(e);
  }
  if (seeds_.empty()) {
    joined_ = true;  // the first member of a new cluster
    return;
  }
  joined_ = false;
  send_join(now);
}

void NodeImpl::send_join(TimePoint now) {
  for (const Endpoint& e : seeds_) start_sync(now, e, /*join=*/true);
  schedule(now + cfg_.sync_timeout, TimerKind::kJoinRetry);
}

void NodeImpl::start_sync(TimePoint now, const Endpoint& to, bool join, bool digest_only) {
  const std::uint32_t seq = next_seq_++;
  syncs_[seq] = PendingSync{now + cfg_.sync_timeout, join, digest_only};
  schedule(now + cfg_.sync_timeout, TimerKind::kSync, 0, seq);
  if (join) {
    ++stats_.joins_sent;
  } else {
    ++stats_.syncs_started;
  }
  if (digest_only) {
    // One datagram each way when the tables agree (the usual case); see on_sync_digest.
    const Message msgs[] = {SyncDigest{seq, state_digest(), /*reply=*/false}};
    send_packet(to, msgs);
    return;
  }
  send_state(to, seq, join, /*response=*/false);
}

namespace {

std::uint64_t mix64(std::uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::uint64_t NodeImpl::state_digest() const {
  // XOR of one well-mixed hash per member: independent of slot order. FNV-1a over the name, then
  // incarnation and state folded in. Fixed functions, so every build computes the same digest.
  std::uint64_t digest = 0;
  for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
    if (!members_.in_use(s)) continue;
    const Member& m = members_.at(s);
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (char c : m.name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    h = mix64(h ^ mix64(m.incarnation + 0x9e3779b97f4a7c15ULL));
    digest ^= mix64(h + static_cast<std::uint64_t>(m.state));
  }
  return digest;
}

void NodeImpl::send_stream(const Endpoint& to, const PushPull& pp) {
  Datagram d{to, encode_stream(pp), Channel::kReliable};
  ++stats_.streams_sent;
  stats_.stream_bytes_sent += d.bytes.size();
  outgoing_.push_back(std::move(d));
}

void NodeImpl::send_state(const Endpoint& to, std::uint32_t seq, bool join, bool response,
                          std::optional<std::uint64_t> digest) {
  PushPull pp{seq, join, response, {}, digest};
  pp.members.reserve(members_.size());
  // Our own entry first: the receiver takes it as the sender's name for confirmations.
  auto add = [&](std::uint32_t s) { pp.members.push_back(entry_of(s)); };
  add(self_slot_);
  for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
    if (s != self_slot_ && members_.in_use(s)) add(s);
  }
  send_stream(to, pp);
}

void NodeImpl::push_pull_round(TimePoint now) {
  next_push_pull_at_ = now + push_pull_interval();
  schedule(next_push_pull_at_, TimerKind::kPushPull);
  if (leaving_) return;
  std::size_t outstanding = 0;
  for (const auto& [seq, s] : syncs_) outstanding += s.join ? 0 : 1;
  if (outstanding >= cfg_.max_concurrent_syncs) return;
  auto peer = random_members(now, 1, MemberTable::kNone, Pick::kAlive);
  if (peer.empty()) return;
  // Digest first: agreeing members (the usual case) exchange 8 bytes instead of their tables.
  start_sync(now, members_.at(peer[0]).addr, /*join=*/false, /*digest_only=*/true);
}

void NodeImpl::on_catchup(TimePoint now, unsigned which) {
  if (leaving_) return;
  if (which + 1 < cfg_.join_catchups && which < 8) {
    // Catch-up i runs delay * 4^i after the join: the next one is delay * 3 * 4^which from now.
    schedule(now + cfg_.join_catchup_delay * (3u << (2 * which)), TimerKind::kCatchup, 0, which + 1);
  }
  Endpoint peer = answered_seed_;
  if (which > 0) {
    auto pick = random_members(now, 1, MemberTable::kNone, Pick::kAlive);
    if (pick.empty()) return;
    peer = members_.at(pick[0]).addr;
  }
  ++stats_.catchup_syncs;
  // Flagged as a join: always answered, and what we learn is not re-broadcast.
  start_sync(now, peer, /*join=*/true);
}

void NodeImpl::reconnect_round(TimePoint now) {
  schedule(now + cfg_.reconnect_interval, TimerKind::kReconnect);
  if (leaving_ || members_.count(MemberState::kFailed) == 0) return;
  // Few failed members among many: sampling slots at random would miss them, so scan (once per
  // interval) and keep one uniformly at random.
  std::uint32_t pick = MemberTable::kNone;
  std::uint64_t seen = 0;
  for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
    if (members_.in_use(s) && members_.at(s).state == MemberState::kFailed && rng_.below(++seen) == 0) pick = s;
  }
  if (pick == MemberTable::kNone) return;
  ++stats_.reconnect_syncs;
  start_sync(now, members_.at(pick).addr, /*join=*/false);
}

void NodeImpl::on_sync_timeout(std::uint32_t seq) {
  if (syncs_.erase(seq) > 0) ++stats_.syncs_timed_out;
}

void NodeImpl::handle_stream(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes) {
  ++stats_.streams_received;
  stats_.stream_bytes_received += bytes.size();
  auto decoded = decode_stream(bytes);
  if (!decoded) {
    reject(decoded.error(), from, "stream");
    return;
  }
  const PushPull& pp = *decoded;
  if (pp.response) {
    auto it = syncs_.find(pp.seq);
    if (it == syncs_.end()) return;  // late or unsolicited: ignore
    const bool asked_digest = it->second.digest_only;
    syncs_.erase(it);
    ++stats_.syncs_completed;
    if (pp.join && !joined_) {
      joined_ = true;
      answered_seed_ = from;
      if (cfg_.join_catchups > 0) schedule(now + cfg_.join_catchup_delay, TimerKind::kCatchup, 0, 0);
      if (log_) log_->info("joined via={} members={}", from.to_string(), pp.members.size());
    }
    merge_state(now, pp);
    // We asked with our digest and got the peer's table: if ours still differs from what the
    // peer has (or the peer sent no digest), the peer lacks something of ours: push it all.
    if (asked_digest && (!pp.digest || state_digest() != *pp.digest)) start_sync(now, from, /*join=*/false);
    return;
  }
  if (!pp.join && !admit_inbound_sync(now)) return;
  ++stats_.syncs_served;
  // Merge first: a refutation it triggers (we were believed failed) goes out in the response.
  merge_state(now, pp);
  send_state(from, pp.seq, pp.join, /*response=*/true);
}

// Periodic syncs are optional work: shed them past the rate limit (joins are always answered).
bool NodeImpl::admit_inbound_sync(TimePoint now) {
  if (now - inbound_window_start_ >= std::chrono::seconds(1)) {
    inbound_window_start_ = now;
    inbound_in_window_ = 0;
  }
  if (inbound_in_window_ >= cfg_.max_inbound_syncs_per_s) {
    ++stats_.syncs_refused;
    return false;
  }
  ++inbound_in_window_;
  return true;
}

void NodeImpl::on_sync_digest(TimePoint now, const Endpoint& from, const SyncDigest& d) {
  if (d.reply) {
    // "Same digest": the sync is complete without a table either way (anything that changed
    // since the asking spreads by gossip as usual).
    auto it = syncs_.find(d.seq);
    if (it == syncs_.end() || !it->second.digest_only) return;
    syncs_.erase(it);
    ++stats_.syncs_completed;
    ++stats_.syncs_in_agreement;
    return;
  }
  if (!admit_inbound_sync(now)) return;
  ++stats_.syncs_served;
  const std::uint64_t ours = state_digest();
  if (ours == d.digest) {
    const Message msgs[] = {SyncDigest{d.seq, ours, /*reply=*/true}};
    send_packet(from, msgs);
  } else {
    // Our table (with our digest, so the asker can tell whether we lack something of its own)
    // on the reliable channel, as the response to the asker's sync.
    send_state(from, d.seq, false, /*response=*/true, ours);
  }
}

void NodeImpl::merge_state(TimePoint now, const PushPull& pp) {
  if (pp.members.empty()) return;
  const std::string& sender = pp.members.front().name;
  // A joiner learns what everyone already knows: re-broadcasting it would only add traffic.
  const bool rebroadcast = !(pp.join && pp.response);
  // Entries take the same rules as gossip: a suspect, failed or left entry above the incarnation
  // we know is dropped and counted (node_state.cpp); an alive one above it is a refutation.
  //
  // Signed claims: each entry carries its signatures, checked as if it came by gossip. Alive
  // entries go first, so that an accusation by a member we learn of in this same table finds the
  // accuser's credential; a suspect or failed entry stays attributed to its signing accuser.
  auto merge = [&](const PushPullEntry& e) {
    switch (e.state) {
      case MemberState::kAlive:
        on_alive(now, Alive{e.name, e.addr, e.incarnation, e.meta, e.sig, e.cred}, rebroadcast);
        break;
      case MemberState::kLeft:
        on_dead(now, Dead{e.name, e.incarnation, e.name, e.accuse_sig});
        break;
      case MemberState::kSuspect:
      case MemberState::kFailed:
        // Lifeguard: another node's verdict is a reason to suspect, not to declare failed.
        if (claims_) {
          on_suspect(now, Suspect{e.name, e.incarnation, e.accuser, e.accuse_sig, e.accuse_dead});
        } else {
          on_suspect(now, Suspect{e.name, e.incarnation, sender});
        }
        break;
    }
  };
  if (!claims_) {
    for (const PushPullEntry& e : pp.members) merge(e);
    return;
  }
  for (const PushPullEntry& e : pp.members) {
    if (e.state == MemberState::kAlive) merge(e);
  }
  for (const PushPullEntry& e : pp.members) {
    if (e.state != MemberState::kAlive) merge(e);
  }
}

void NodeImpl::leave(TimePoint now) {
  if (leaving_) return;
  start(now);
  leaving_ = true;
  Member& self = members_.at(self_slot_);
  members_.set_state(self_slot_, MemberState::kLeft, now);
  const Dead leave_claim = own_dead(self.name, self.incarnation);  // from == name: a leave
  keep_accusation_proof(self_slot_, leave_claim.from, leave_claim.sig, /*dead=*/true);
  queue_broadcast(self_slot_);
  // Tell many members at once so "left" is everywhere before anyone's probe could fail.
  const Message msgs[] = {leave_claim};
  auto peers = random_members(now, cfg_.leave_fanout, MemberTable::kNone, Pick::kLive);
  for (std::uint32_t p : peers) send_packet(members_.at(p).addr, msgs);
  if (log_) log_->info("leave incarnation={} told={}", self.incarnation, peers.size());
}

// Done once the leave has been retransmitted enough, or when no live member is left to hear it
// (the broadcast would otherwise stay queued forever and shutdown would wait in vain).
bool NodeImpl::leave_done() const {
  return leaving_ && (!members_.at(self_slot_).bcast_pending || members_.live() == 0);
}

void NodeImpl::on_reap(TimePoint now, std::uint32_t slot, std::uint64_t uid) {
  if (!members_.in_use(slot) || slot == self_slot_) return;
  Member& m = members_.at(slot);
  if (m.uid != uid) return;
  if (m.state != MemberState::kFailed && m.state != MemberState::kLeft) return;
  if (now - m.state_change < cfg_.reap_after) return;  // a newer verdict scheduled its own timer
  if (m.bcast_pending) --pending_broadcasts_;
  suspicions_.erase(slot);
  members_.remove(slot);
  ring_rebuild_ = true;
  ++stats_.reaped;
}

}  // namespace weft::gossip
