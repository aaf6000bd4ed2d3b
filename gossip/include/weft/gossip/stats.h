#pragma once
// Counters of one node. Plain uint64 fields: `weft info` shows them, tests assert them.

#include <array>
#include <cstdint>

#include "weft/gossip/codec.h"

namespace weft::gossip {

struct GossipStats {
  // traffic
  std::uint64_t packets_sent = 0;
  std::uint64_t packets_received = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t streams_sent = 0;
  std::uint64_t streams_received = 0;
  std::uint64_t stream_bytes_sent = 0;
  std::uint64_t stream_bytes_received = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t unknown_messages = 0;  // skipped inside otherwise good packets
  std::array<std::uint64_t, kDecodeErrorCount> rejected{};  // by DecodeError

  // failure detection
  std::uint64_t probes = 0;
  std::uint64_t probe_acks = 0;           // probes answered (directly or through a relay)
  std::uint64_t indirect_probes = 0;      // ping-req sent
  std::uint64_t probe_retries = 0;        // extra direct pings (Config::probe_retries)
  std::uint64_t relayed_pings = 0;        // ping-req we served for others
  std::uint64_t relays_refused = 0;       // ping-req dropped: kMaxRelays already in flight
  std::uint64_t nacks_sent = 0;
  std::uint64_t nacks_received = 0;
  std::uint64_t probe_failures = 0;       // probes that ended with a suspicion
  std::uint64_t pings_wrong_target = 0;   // ping for a name that is not ours

  // refused-probe fast path (Config::refused_fast_path)
  std::uint64_t unreachable_reports = 0;    // Node::handle_unreachable calls
  std::uint64_t unreachable_ignored = 0;    // ... about no live member we probe or relay for
  std::uint64_t refused_verifies = 0;       // out-of-turn probes started on a refusal
  std::uint64_t verifies_limited = 0;       // ... not started: one per member per probe_interval, or kMaxVerifies
  std::uint64_t refused_probes = 0;         // our own probes (regular or verify) refused
  std::uint64_t refused_nacks_sent = 0;     // as a relay: our ping was refused (also in nacks_sent)
  std::uint64_t refused_nacks_received = 0; // from a relay we asked, counted once per relay
  std::uint64_t refused_failures = 0;       // members declared failed by the fast path (not in failed_declared)

  // state
  std::uint64_t suspicions_started = 0;
  std::uint64_t suspicion_confirmations = 0;
  std::uint64_t failed_declared = 0;      // suspicion timers that expired here
  std::uint64_t last_words = 0;           // pings to a suspect whose timer expired, before declaring
  std::uint64_t refutes = 0;
  std::uint64_t refute_bursts = 0;        // refutations also sent directly to refute_fanout members
  std::uint64_t stale_accusations_answered = 0;  // our current alive sent to whoever still accused
                                                 // an older incarnation of us
  std::uint64_t accusations_above_known = 0;     // suspect / failed / leave naming an incarnation
                                                 // above the known one (memberlist #358): dropped
  std::uint64_t refutes_above_own = 0;           // accusations about us above our own incarnation
                                                 // by at most 2^32, refuted: we lost our stored
                                                 // incarnation (a wiped host), or a forger
  std::uint64_t refutes_saturated = 0;           // refutations stuck at UINT64_MAX (an impostor's alive)
  std::uint64_t leave_echoes = 0;                // leaves we applied and told the leaver of (forged ones)
  std::uint64_t name_conflicts = 0;
  // signed claims (Config::claims)
  std::uint64_t claims_signed = 0;         // claims of our own we signed
  std::uint64_t claims_verified = 0;       // claims of others whose signature checked out
  std::uint64_t claims_rejected = 0;       // unsigned, badly signed, or no valid credential: dropped
  std::uint64_t claims_unknown_signer = 0; // accusations by someone we hold no credential of: dropped
  std::uint64_t credentials_expelled = 0;  // live members declared failed: credential revoked / expired
  std::uint64_t reaped = 0;
  std::uint64_t stale_messages = 0;       // updates older than what we know

  // dissemination and anti-entropy
  std::uint64_t broadcasts_queued = 0;
  std::uint64_t broadcasts_sent = 0;      // piggybacked copies
  std::uint64_t gossip_rounds = 0;
  std::uint64_t syncs_started = 0;
  std::uint64_t syncs_completed = 0;
  std::uint64_t syncs_in_agreement = 0;   // periodic syncs answered "same digest" (8 bytes, no table)
  std::uint64_t syncs_timed_out = 0;
  std::uint64_t syncs_served = 0;
  std::uint64_t syncs_refused = 0;        // over max_inbound_syncs_per_s
  std::uint64_t joins_sent = 0;          // join requests, catch-up syncs included
  std::uint64_t catchup_syncs = 0;
  std::uint64_t reconnect_syncs = 0;

  // Adds every counter of `o` (sums over nodes in the simulator).
  GossipStats& operator+=(const GossipStats& o);
  friend bool operator==(const GossipStats&, const GossipStats&) = default;
};

}  // namespace weft::gossip
