// Node API, packet dispatch, timers, sending and gossip rounds. Probing: node_probe.cpp.

#include "weft/gossip/node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "node_impl.h"

namespace weft::gossip {

NodeImpl::NodeImpl(Config cfg, Self self, std::uint64_t seed, std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg), log_(std::move(log)), rng_(seed), awareness_(cfg.awareness_max) {
  self_slot_ = members_.add(std::move(self.name), self.addr, self.incarnation, MemberState::kAlive,
                            std::move(self.meta), TimePoint{});
  claims_ = cfg_.claims.get();
  sign_self();
}

void NodeImpl::schedule(TimePoint at, TimerKind kind, std::uint32_t slot, std::uint64_t key) {
  timers_.push(Timer{at, key, slot, kind});
}

void NodeImpl::start(TimePoint now) {
  if (started_) return;
  started_ = true;
  // Stagger the periodic work so nodes started together do not act in lockstep.
  auto jitter = [&](Duration d) { return Duration(static_cast<Duration::rep>(rng_.below(
                                      static_cast<std::uint64_t>(std::max<Duration::rep>(1, d.count()))))); };
  next_probe_at_ = now + jitter(cfg_.probe_interval);
  next_gossip_at_ = now + jitter(cfg_.gossip_interval);
  next_push_pull_at_ = now + jitter(push_pull_interval());
  schedule(next_probe_at_, TimerKind::kProbe);
  schedule(next_gossip_at_, TimerKind::kGossip);
  schedule(next_push_pull_at_, TimerKind::kPushPull);
  schedule(now + cfg_.reconnect_interval + jitter(cfg_.reconnect_interval), TimerKind::kReconnect);
  queue_broadcast(self_slot_);  // announce ourselves
}

TimePoint NodeImpl::next_deadline() const {
  return timers_.empty() ? TimePoint::max() : timers_.top().at;
}

void NodeImpl::wake_gossip(TimePoint now) {
  // Alone (a cluster of one, or before the join answer): nobody to tell, so no rounds either.
  if (!gossip_parked_ || pending_broadcasts_ == 0 || members_.size() <= 1) return;
  gossip_parked_ = false;
  if (next_gossip_at_ < now) {
    const auto missed = (now - next_gossip_at_ + cfg_.gossip_interval - Duration(1)) / cfg_.gossip_interval;
    next_gossip_at_ += cfg_.gossip_interval * missed;
  }
  schedule(next_gossip_at_, TimerKind::kGossip);
}

// A timer whose handler would do nothing now: the probe it belongs to was answered, the relay or
// sync it guards ended, the suspicion it ends was cleared, or a newer round replaced it. Mirrors
// the early returns of the handlers.
bool NodeImpl::is_noop(const Timer& t) const {
  const auto seq = static_cast<std::uint32_t>(t.key);
  switch (t.kind) {
    case TimerKind::kProbe:
      return t.at != next_probe_at_;
    case TimerKind::kAckTimeout:
    case TimerKind::kProbeRetry:
      return !probe_.active || probe_.seq != seq || probe_.acked || probe_.escalated;
    case TimerKind::kRelay:
      return !relays_.contains(seq);
    case TimerKind::kGossip:
      return t.at != next_gossip_at_;
    case TimerKind::kPushPull:
      return t.at != next_push_pull_at_;
    case TimerKind::kSync:
      return !syncs_.contains(seq);
    case TimerKind::kSuspicion: {
      auto it = suspicions_.find(t.slot);
      return it == suspicions_.end() || it->second.id() != t.key;
    }
    default:
      return false;
  }
}

TimePoint NodeImpl::tick(TimePoint now) {
  wake_gossip(now);
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer t = timers_.top();
    timers_.pop();
    switch (t.kind) {
      case TimerKind::kProbe:
        if (t.at == next_probe_at_) start_probe(now);
        break;
      case TimerKind::kAckTimeout:
        on_ack_timeout(now, static_cast<std::uint32_t>(t.key));
        break;
      case TimerKind::kProbeRetry:
        on_probe_retry(static_cast<std::uint32_t>(t.key));
        break;
      case TimerKind::kRelay:
        on_relay_timeout(now, static_cast<std::uint32_t>(t.key));
        break;
      case TimerKind::kGossip:
        if (t.at == next_gossip_at_) gossip_round(now);
        break;
      case TimerKind::kPushPull:
        if (t.at == next_push_pull_at_) push_pull_round(now);
        break;
      case TimerKind::kSync:
        on_sync_timeout(static_cast<std::uint32_t>(t.key));
        break;
      case TimerKind::kJoinRetry:
        if (!joined_ && !leaving_) send_join(now);
        break;
      case TimerKind::kReconnect:
        reconnect_round(now);
        break;
      case TimerKind::kCatchup:
        on_catchup(now, static_cast<unsigned>(t.key));
        break;
      case TimerKind::kSuspicion:
        on_suspicion_timeout(now, t.slot, t.key);
        break;
      case TimerKind::kReap:
        on_reap(now, t.slot, t.key);
        break;
      case TimerKind::kVerifyEnd:
        on_verify_end(static_cast<std::uint32_t>(t.key));
        break;
    }
    wake_gossip(now);  // a timer may have queued a broadcast
  }
  // An answered probe leaves its retry and ack-timeout timers behind, and so on: drop those now
  // rather than wake for them (an idle agent's wake-ups fell from ~5 to ~3 a second).
  while (!timers_.empty() && is_noop(timers_.top())) timers_.pop();
  return next_deadline();
}

// ---------------------------------------------------------------------------------------------
// Receiving

void NodeImpl::handle_packet(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes) {
  ++stats_.packets_received;
  stats_.bytes_received += bytes.size();
  auto decoded = decode_packet(bytes);
  if (!decoded) {
    reject(decoded.error(), from, "packet");
    return;
  }
  stats_.unknown_messages += decoded->unknown_skipped;
  stats_.messages_received += decoded->messages.size();
  for (const Message& msg : decoded->messages) {
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Ping>) {
            on_ping(now, from, m);
          } else if constexpr (std::is_same_v<T, IndirectPing>) {
            on_indirect_ping(now, from, m);
          } else if constexpr (std::is_same_v<T, Ack>) {
            on_ack(now, m);
          } else if constexpr (std::is_same_v<T, Nack>) {
            on_nack(now, from, m);
          } else if constexpr (std::is_same_v<T, Alive>) {
            on_alive(now, m, /*rebroadcast=*/true);
          } else if constexpr (std::is_same_v<T, Suspect>) {
            answer_stale_accusation(now, from, m.name, m.incarnation);
            on_suspect(now, m);
          } else if constexpr (std::is_same_v<T, Dead>) {
            answer_stale_accusation(now, from, m.name, m.incarnation);
            on_dead(now, m);
          } else if constexpr (std::is_same_v<T, SyncDigest>) {
            on_sync_digest(now, from, m);
          }
        },
        msg);
  }
}

void NodeImpl::reject(DecodeError e, const Endpoint& from, const char* what) {
  ++stats_.rejected[static_cast<std::size_t>(e)];
  if (log_) log_->debug("rejected kind={} from={} reason={}", what, from.to_string(), to_string(e));
}

std::vector<std::uint32_t> NodeImpl::random_members(TimePoint now, unsigned k, std::uint32_t exclude, Pick pick) {
  auto eligible = [&](const Member& m) {
    switch (pick) {
      case Pick::kAlive: return m.state == MemberState::kAlive;
      case Pick::kLive: return m.state == MemberState::kAlive || m.state == MemberState::kSuspect;
      case Pick::kGossip:
        // The recently failed get gossip too: if they are alive after all, they learn to refute.
        return m.state == MemberState::kAlive || m.state == MemberState::kSuspect ||
               (m.state == MemberState::kFailed && now - m.state_change < cfg_.gossip_to_the_dead);
    }
    return false;
  };
  std::vector<std::uint32_t> out;
  const std::uint32_t end = members_.slot_end();
  if (k == 0 || end == 0) return out;
  // Rejection sampling over slots; bounded so a table of mostly ineligible members stays cheap.
  const unsigned tries = 8 * k + 3 * static_cast<unsigned>(std::min<std::size_t>(members_.size(), 64));
  for (unsigned i = 0; i < tries && out.size() < k; ++i) {
    const auto s = static_cast<std::uint32_t>(rng_.below(end));
    if (s == self_slot_ || s == exclude || !members_.in_use(s) || !eligible(members_.at(s))) continue;
    if (std::find(out.begin(), out.end(), s) != out.end()) continue;
    out.push_back(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sending and dissemination

unsigned NodeImpl::retransmit_limit_now() const {
  return retransmit_limit(cfg_.retransmit_mult, members_.size());
}

bool NodeImpl::encode_broadcast(BroadcastRef ref, std::vector<std::byte>& out) {
  if (!members_.in_use(ref.slot)) return false;
  const Member& m = members_.at(ref.slot);
  if (m.bcast_gen != ref.gen) return false;
  switch (m.state) {
    case MemberState::kAlive:
      encode_message(alive_of(ref.slot), out);
      break;
    case MemberState::kSuspect:
      encode_message(suspect_of(ref.slot), out);
      break;
    case MemberState::kFailed:
    case MemberState::kLeft:
      encode_message(dead_of(ref.slot), out);
      break;
  }
  return true;
}

void NodeImpl::fill_broadcasts(PacketBuilder& pb) {
  const std::size_t n = broadcasts_.fill(
      pb, retransmit_limit_now(), [&](BroadcastRef ref, std::vector<std::byte>& out) { return encode_broadcast(ref, out); },
      [&](BroadcastRef ref) {
        if (members_.in_use(ref.slot)) {
          Member& m = members_.at(ref.slot);
          if (m.bcast_gen == ref.gen && m.bcast_pending) {
            m.bcast_pending = false;
            --pending_broadcasts_;
          }
        }
      });
  stats_.broadcasts_sent += n;
}

void NodeImpl::send_packet(const Endpoint& to, std::span<const Message> first) {
  PacketBuilder pb(cfg_.max_packet_bytes);
  for (const Message& m : first) {
    const bool ok = pb.add(m);
    WEFT_CHECK(ok);  // our own control messages are small
  }
  fill_broadcasts(pb);
  if (pb.empty()) return;
  Datagram d{to, pb.finish(), Channel::kUnreliable};
  ++stats_.packets_sent;
  stats_.bytes_sent += d.bytes.size();
  outgoing_.push_back(std::move(d));
}

void NodeImpl::gossip_round(TimePoint now) {
  next_gossip_at_ = now + cfg_.gossip_interval;
  if (pending_broadcasts_ == 0 || members_.size() <= 1) {
    if (pending_broadcasts_ == 0) broadcasts_.clear();  // only stale entries remain
    // Nothing to say, or nobody to say it to: no timer until something is queued or someone
    // joins (an idle agent then wakes only to probe). wake_gossip() resumes on the same grid,
    // so rounds happen when they would have.
    gossip_parked_ = true;
    return;
  }
  schedule(next_gossip_at_, TimerKind::kGossip);
  ++stats_.gossip_rounds;
  auto targets = random_members(now, cfg_.gossip_nodes, MemberTable::kNone, Pick::kGossip);
  for (std::uint32_t t : targets) {
    if (pending_broadcasts_ == 0) break;
    send_packet(members_.at(t).addr, {});
  }
}

// ---------------------------------------------------------------------------------------------
// Node: thin forwarding layer

Node::Node(Config cfg, Self self, std::uint64_t seed, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<NodeImpl>(cfg, std::move(self), seed, std::move(log))) {}
Node::~Node() = default;
Node::Node(Node&&) noexcept = default;
Node& Node::operator=(Node&&) noexcept = default;

void Node::join(TimePoint now, std::span<const Endpoint> seeds) {
  impl_->join(now, seeds);
  impl_->wake_gossip(now);
}
void Node::leave(TimePoint now) {
  impl_->leave(now);
  impl_->wake_gossip(now);
}
bool Node::leave_done() const { return impl_->leave_done(); }

Result<void> Node::set_meta(TimePoint now, std::vector<std::byte> meta) {
  if (meta.size() > impl_->cfg_.max_meta_bytes) return fail("metadata larger than max_meta_bytes");
  Member& self = impl_->members_.at(impl_->self_slot_);
  // Only after a saturated refutation (an impostor's alive at UINT64_MAX): wrapping to 0 would
  // make every member ignore us as stale, and at the same incarnation the change cannot spread.
  if (self.incarnation == std::numeric_limits<std::uint64_t>::max()) return fail("incarnation exhausted");
  self.meta = std::move(meta);
  ++self.incarnation;
  impl_->sign_self();
  impl_->queue_broadcast(impl_->self_slot_);
  impl_->wake_gossip(now);
  return {};
}

std::size_t Node::recheck_credentials(TimePoint now) {
  const std::size_t n = impl_->recheck_credentials(now);
  impl_->wake_gossip(now);
  return n;
}

void Node::handle_packet(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes) {
  impl_->handle_packet(now, from, bytes);
  impl_->wake_gossip(now);
}
void Node::handle_stream(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes) {
  impl_->handle_stream(now, from, bytes);
  impl_->wake_gossip(now);
}
void Node::handle_unreachable(TimePoint now, const Endpoint& to) {
  impl_->handle_unreachable(now, to);
  impl_->wake_gossip(now);
}
TimePoint Node::tick(TimePoint now) { return impl_->tick(now); }
TimePoint Node::next_deadline() const { return impl_->next_deadline(); }

std::vector<Datagram> Node::take_outgoing() { return std::exchange(impl_->outgoing_, {}); }
std::vector<MemberEvent> Node::take_events() { return std::exchange(impl_->events_, {}); }
namespace {
// Moves everything from `from` to the end of `to`. A burst (a join response brings one event per
// member) must not leave its capacity behind in every node: n nodes x n members adds up.
template <typename T>
void drain_into(std::vector<T>& from, std::vector<T>& to) {
  for (auto& x : from) to.push_back(std::move(x));
  from.clear();
  if (from.capacity() > 64) std::vector<T>().swap(from);
}
}  // namespace

void Node::drain_outgoing(std::vector<Datagram>& out) { drain_into(impl_->outgoing_, out); }
void Node::drain_events(std::vector<MemberEvent>& out) { drain_into(impl_->events_, out); }

const GossipStats& Node::stats() const { return impl_->stats_; }
const Config& Node::config() const { return impl_->cfg_; }
std::string_view Node::name() const { return impl_->members_.at(impl_->self_slot_).name; }
std::uint64_t Node::incarnation() const { return impl_->members_.at(impl_->self_slot_).incarnation; }
void Node::set_shared_clock(Duration offset) { impl_->shared_clock_offset_ = offset; }

unsigned Node::health_score() const { return impl_->awareness_.score(); }
bool Node::joined() const { return impl_->joined_; }

std::optional<MemberInfo> Node::member(std::string_view name) const {
  const std::uint32_t slot = impl_->members_.find(name);
  if (slot == MemberTable::kNone) return std::nullopt;
  return impl_->info(slot);
}

std::vector<MemberInfo> Node::members() const {
  std::vector<MemberInfo> out;
  out.reserve(impl_->members_.size());
  for (std::uint32_t s = 0; s < impl_->members_.slot_end(); ++s) {
    if (impl_->members_.in_use(s)) out.push_back(impl_->info(s));
  }
  return out;
}

std::size_t Node::count(MemberState s) const { return impl_->members_.count(s); }
std::size_t Node::queued_broadcasts() const { return impl_->pending_broadcasts_; }

}  // namespace weft::gossip
