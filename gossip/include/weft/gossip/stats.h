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
  std::uint64_t relayed_pings = 0;        // ping-req we served for others
  std::uint64_t relays_refused = 0;       // ping-req dropped: kMaxRelays already in flight
  std::uint64_t nacks_sent = 0;
  std::uint64_t nacks_received = 0;
  std::uint64_t probe_failures = 0;       // probes that ended with a suspicion
  std::uint64_t pings_wrong_target = 0;   // ping for a name that is not ours

  // state
  std::uint64_t suspicions_started = 0;
  std::uint64_t suspicion_confirmations = 0;
  std::uint64_t failed_declared = 0;      // suspicion timers that expired here
  std::uint64_t refutes = 0;
  std::uint64_t name_conflicts = 0;
  std::uint64_t reaped = 0;
  std::uint64_t stale_messages = 0;       // updates older than what we know

  // dissemination and anti-entropy
  std::uint64_t broadcasts_queued = 0;
  std::uint64_t broadcasts_sent = 0;      // piggybacked copies
  std::uint64_t gossip_rounds = 0;
  std::uint64_t syncs_started = 0;
  std::uint64_t syncs_completed = 0;
  std::uint64_t syncs_timed_out = 0;
  std::uint64_t syncs_served = 0;
  std::uint64_t syncs_refused = 0;        // over max_inbound_syncs_per_s
  std::uint64_t joins_sent = 0;          // join requests, catch-up syncs included
  std::uint64_t catchup_syncs = 0;
  std::uint64_t reconnect_syncs = 0;
};

}  // namespace weft::gossip
