#pragma once
// NodeImpl: the state behind weft::gossip::Node. Split by concern:
//   node.cpp        API, packet dispatch, timers, sending, gossip rounds
//   node_probe.cpp  probing (SWIM + Lifeguard nacks), relaying pings for others
//   node_refused.cpp the refused-probe fast path (ICMP "port unreachable" reports)
//   node_state.cpp  alive / suspect / dead rules: merge, refute, conflicts, events
//   node_sync.cpp   join, push-pull anti-entropy, leave, reaping
//   node_claims.cpp signed claims: signing ours, verifying others', the proofs we forward

#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "awareness.h"
#include "dissemination.h"
#include "member_table.h"
#include "suspicion.h"
#include "weft/base/rng.h"
#include "weft/gossip/codec.h"
#include "weft/gossip/node.h"

namespace weft::gossip {

enum class TimerKind : std::uint8_t {
  kProbe,        // start the next probe (ends the previous one)
  kAckTimeout,   // direct ack missed: ask relays
  kProbeRetry,   // no ack halfway to the timeout: ping once more directly
  kRelay,        // a ping we relay for someone timed out: nack
  kGossip,
  kPushPull,
  kSync,         // an outstanding sync request timed out
  kJoinRetry,
  kCatchup,      // key = which catch-up sync after the join (0-based)
  kReconnect,
  kSuspicion,
  kReap,
  kVerifyEnd,    // a verify probe's period ended (key = seq)
};

struct Timer {
  TimePoint at;
  std::uint64_t key;   // seq, member uid, ...
  std::uint32_t slot;
  TimerKind kind;
  friend bool operator>(const Timer& a, const Timer& b) { return a.at > b.at; }
};

// One probe of one member: the regular round-robin probe (NodeImpl::probe_) or an out-of-turn
// verify probe after a refusal (NodeImpl::verifies_). Acks and nacks find it by seq; each has
// its own seq, so neither is ever credited with the other's answers.
struct Probe {
  std::uint32_t seq = 0;
  std::uint32_t slot = MemberTable::kNone;
  std::uint64_t uid = 0;
  std::uint64_t incarnation = 0;  // the target's when probed: a failed probe accuses only that
  bool active = false;
  bool acked = false;
  bool escalated = false;         // the relays were asked
  bool refused = false;           // our own ping to the target drew a refusal (fast path)
  unsigned expected_nacks = 0;
  unsigned nacks = 0;
  TimePoint ends{};               // verify probes: dropped then (until then, no other of it)
  std::vector<Endpoint> relays{};      // asked; only their refused nacks count
  std::vector<Endpoint> refused_by{};  // distinct relays whose nack said "refused"
};

struct Relay {
  std::uint32_t orig_seq;
  Endpoint source;
  Endpoint target_addr;  // where our ping went: a refusal from there is nacked at once
  TimePoint deadline;    // the target's ack is forwarded until then
  bool want_nack;
  bool nacked = false;
};

struct PendingSync {
  TimePoint deadline;
  bool join;
  bool digest_only = false;  // we sent our digest only (a periodic sync)
};

class NodeImpl {
 public:
  static constexpr std::size_t kMaxRelays = 4096;  // ping-req we serve at once
  static constexpr std::size_t kMaxVerifies = 16;  // verify probes at once (fast path)
  static constexpr unsigned kLastWords = 2;         // pings to a suspect before declaring it failed
  // The largest jump above our own incarnation that an accusation about us may name and still be
  // refuted (to its incarnation + 1) rather than dropped; see refuted_above_own for the choice.
  static constexpr std::uint64_t kMaxSelfIncarnationJump = std::uint64_t{1} << 32;

  NodeImpl(Config cfg, Self self, std::uint64_t seed, std::shared_ptr<spdlog::logger> log);

  // --- node.cpp ---
  void handle_packet(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes);
  // Untrusted input that did not decode: counted by reason, logged at debug, never answered.
  void reject(DecodeError e, const Endpoint& from, const char* what);
  TimePoint tick(TimePoint now);
  TimePoint next_deadline() const;
  bool is_noop(const Timer& t) const;
  void start(TimePoint now);
  void schedule(TimePoint at, TimerKind kind, std::uint32_t slot = 0, std::uint64_t key = 0);
  void gossip_round(TimePoint now);
  // Re-arms the parked gossip timer when broadcasts are waiting; every entry point that may queue
  // one calls it before returning.
  void wake_gossip(TimePoint now);
  enum class Pick : std::uint8_t {
    kAlive,   // alive members
    kLive,    // alive or suspect
    kGossip,  // live, or failed within gossip_to_the_dead
  };
  // Up to k distinct random members of the kind, other than us and `exclude`.
  std::vector<std::uint32_t> random_members(TimePoint now, unsigned k, std::uint32_t exclude, Pick pick);
  // Sends `first` (may be empty) plus piggybacked broadcasts in one datagram.
  void send_packet(const Endpoint& to, std::span<const Message> first);
  void fill_broadcasts(PacketBuilder& pb);
  bool encode_broadcast(BroadcastRef ref, std::vector<std::byte>& out);
  unsigned retransmit_limit_now() const;

  // --- node_probe.cpp ---
  void on_ping(TimePoint now, const Endpoint& from, const Ping& p);
  void on_indirect_ping(TimePoint now, const Endpoint& from, const IndirectPing& p);
  void on_ack(TimePoint now, const Ack& a);
  void on_nack(TimePoint now, const Endpoint& from, const Nack& n);
  void on_relay_timeout(TimePoint now, std::uint32_t seq);
  void start_probe(TimePoint now);
  void finish_probe(TimePoint now);
  void on_ack_timeout(TimePoint now, std::uint32_t seq);
  void on_probe_retry(std::uint32_t seq);
  // Sends the probe's ping-req to indirect_checks random alive members (once per probe).
  void ask_relays(TimePoint now, Probe& p);
  // The member to probe now: the ring member `step` places after us (see node_probe.cpp).
  std::uint32_t next_probe_target(TimePoint now);
  // Brings ring_ up to date with the member table (merges ring_new_, or rebuilds).
  void refresh_ring();
  [[nodiscard]] bool ring_before(std::uint32_t a, std::uint32_t b) const;
  // The regular probe or a verify probe with this seq, if one is running.
  Probe* find_probe(std::uint32_t seq);
  void send_ping(const Endpoint& to, std::uint32_t seq, const std::string& target);
  // Who accused a suspect member last (the `from` we repeat), or ourselves.
  const std::string& accuser_of(std::uint32_t slot) const;

  // --- node_refused.cpp ---
  void handle_unreachable(TimePoint now, const Endpoint& to);
  // The alive or suspect member (not us) at `to`, or MemberTable::kNone.
  std::uint32_t live_member_at(const Endpoint& to) const;
  void start_verify(TimePoint now, std::uint32_t slot);
  void on_verify_end(std::uint32_t seq);
  void on_refused_nack(TimePoint now, Probe& p, const Endpoint& from);
  // Declares the probed member failed once the probe has its own refusal and enough refused
  // nacks, and nothing answered.
  void check_refused(TimePoint now, Probe& p);

  // --- node_state.cpp ---
  void on_alive(TimePoint now, const Alive& a, bool rebroadcast);
  void on_suspect(TimePoint now, const Suspect& s);
  void on_dead(TimePoint now, const Dead& d);
  // Tells a member we just marked left, with probability ~4 / live members (see the definition).
  void echo_leave(const Dead& d, std::uint32_t slot);
  void answer_stale_accusation(TimePoint now, const Endpoint& from, const std::string& name,
                               std::uint64_t incarnation);
  void refute(TimePoint now, std::uint64_t accused_incarnation);
  // True (refuted, counted) when a suspect / dead / leave about ourselves names an incarnation
  // above our own by at most kMaxSelfIncarnationJump: we lost our stored incarnation.
  bool refuted_above_own(TimePoint now, std::uint32_t slot, std::uint64_t incarnation,
                         const char* kind, const std::string& from);
  // True (counted, logged) when a suspect / dead / leave names an incarnation above m's known one.
  bool accusation_above_known(const Member& m, std::uint64_t incarnation, const char* kind,
                              const std::string& from);
  void queue_broadcast(std::uint32_t slot);
  void emit(EventType type, std::uint32_t slot);
  void on_suspicion_timeout(TimePoint now, std::uint32_t slot, std::uint64_t id);
  Duration suspicion_min() const;

  // --- node_claims.cpp --- (signed claims; without Config::claims they sign nothing and accept)
  Proofs& proofs_of(std::uint32_t slot);
  std::vector<std::byte> sign_claim(std::span<const std::byte> claim);
  // Signs our current alive claim; after every change of our incarnation, address or metadata.
  void sign_self();
  // What we say about a member, with the signatures we hold for it.
  Alive alive_of(std::uint32_t slot) const;
  Suspect suspect_of(std::uint32_t slot) const;
  Dead dead_of(std::uint32_t slot) const;
  PushPullEntry entry_of(std::uint32_t slot) const;
  // Our own accusations, signed.
  Suspect own_suspect(const std::string& name, std::uint64_t incarnation);
  Dead own_dead(const std::string& name, std::uint64_t incarnation);
  // Counted; call only for news (a claim that would change what we believe).
  bool verified_alive(const Alive& a);
  bool verified_accusation(ClaimKind kind, const std::string& name, std::uint64_t incarnation, const std::string& from,
                           const std::vector<std::byte>& sig);
  void keep_alive_proof(std::uint32_t slot, const Alive& a);
  std::size_t recheck_credentials(TimePoint now);
  void keep_accusation_proof(std::uint32_t slot, const std::string& from, const std::vector<std::byte>& sig, bool dead);

  // --- node_sync.cpp ---
  void join(TimePoint now, std::span<const Endpoint> seeds);
  void send_join(TimePoint now);
  void leave(TimePoint now);
  bool leave_done() const;
  void handle_stream(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes);
  void on_sync_digest(TimePoint now, const Endpoint& from, const SyncDigest& d);
  bool admit_inbound_sync(TimePoint now);
  void start_sync(TimePoint now, const Endpoint& to, bool join, bool digest_only = false);
  void send_state(const Endpoint& to, std::uint32_t seq, bool join, bool response,
                  std::optional<std::uint64_t> digest = std::nullopt);
  // Order-independent digest of (name, incarnation, state) over the whole member table: equal
  // tables have equal digests, so a periodic sync between agreeing members sends 8 bytes.
  std::uint64_t state_digest() const;
  void send_stream(const Endpoint& to, const PushPull& pp);
  void merge_state(TimePoint now, const PushPull& pp);
  void push_pull_round(TimePoint now);
  Duration push_pull_interval() const;
  void on_sync_timeout(std::uint32_t seq);
  void on_catchup(TimePoint now, unsigned which);
  void reconnect_round(TimePoint now);
  void on_reap(TimePoint now, std::uint32_t slot, std::uint64_t uid);
  MemberInfo info(std::uint32_t slot) const;

  Config cfg_;
  ClaimAuthority* claims_ = nullptr;  // cfg_.claims, or null when claims are not signed
  std::shared_ptr<spdlog::logger> log_;
  Rng rng_;
  MemberTable members_;
  std::uint32_t self_slot_ = 0;
  BroadcastQueue broadcasts_;
  std::size_t pending_broadcasts_ = 0;  // members whose newest broadcast is still being sent
  Awareness awareness_;
  GossipStats stats_;

  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  TimePoint next_probe_at_{};
  TimePoint next_gossip_at_{};
  TimePoint next_push_pull_at_{};
  TimePoint next_refute_burst_{};
  TimePoint stale_answer_window_{};
  unsigned stale_answers_in_window_ = 0;
  bool started_ = false;
  bool gossip_parked_ = false;
  bool leaving_ = false;
  bool joined_ = false;

  // The probe ring: every slot in use, ourselves included, in ring_before order. Slots added
  // since the last probe wait in ring_new_; a removed slot has the ring rebuilt.
  std::vector<std::uint32_t> ring_;
  std::vector<std::uint32_t> ring_new_;
  bool ring_rebuild_ = true;
  std::uint64_t last_probe_step_ = 0;
  Duration shared_clock_offset_{0};  // now + this = a time every member shares (Node::set_shared_clock)
  Probe probe_;
  std::vector<Probe> verifies_;  // at most kMaxVerifies, at most one per member
  std::unordered_map<std::uint32_t, Relay> relays_;
  std::unordered_map<std::uint32_t, Suspicion> suspicions_;  // by slot
  std::unordered_map<std::uint32_t, PendingSync> syncs_;     // by seq
  std::vector<Endpoint> seeds_;
  Endpoint answered_seed_;  // the seed whose join response we took
  std::uint32_t next_seq_ = 1;
  std::uint64_t next_suspicion_id_ = 1;
  TimePoint inbound_window_start_{};
  unsigned inbound_in_window_ = 0;

  std::vector<Datagram> outgoing_;
  std::vector<MemberEvent> events_;
};

}  // namespace weft::gossip
