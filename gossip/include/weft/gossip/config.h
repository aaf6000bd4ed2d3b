#pragma once
// Tunables of the membership protocol. Defaults follow memberlist's LAN profile except where
// the simulator showed a better choice (see docs/benchmarks.md); every value can be overridden.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/gossip/claims.h"

namespace weft::gossip {

using namespace std::chrono_literals;

struct Config {
  // --- failure detection (SWIM) ---
  Duration probe_interval = 1s;          // one probe per period (scaled by the health score)
  Duration probe_timeout = 500ms;        // wait for a direct ack before asking relays (scaled)
  unsigned indirect_checks = 3;          // k relays for ping-req
  // Ping again directly while no ack came, probe_retries times, evenly spaced before
  // probe_timeout (at 1/3 and 2/3 of it by default; not in memberlist). Under loss most failed
  // probes are one lost datagram: a retry costs 2 datagrams where asking the relays costs ~4 per
  // relay, and every probe that ends in a suspicion costs a cluster-wide suspect and refute
  // broadcast. At 10 % loss a probe needs the relays after 1 retry ~3.6 % of the time, after 2
  // retries ~0.7 % (docs/benchmarks.md). 0 = relays at the timeout, as memberlist.
  unsigned probe_retries = 2;

  // --- refused-probe fast path ---
  // A datagram to a crashed process's port draws an ICMP "port unreachable", which the transport
  // reports through Node::handle_unreachable. Such a refusal is strong evidence but may be stale
  // (from before a restart) or spoofed, so on its own it only makes us probe the member at once
  // (a "verify" probe, at most one per member per probe_interval). When that probe (or the
  // regular one) is refused too, the relays are asked at once; a relay whose ping is refused
  // answers at once with a nack flagged `refused`. Our own refusal plus refused nacks from
  // refused_confirmations distinct relays declare the member failed at once, without the
  // suspicion timeout; any ack (direct or relayed) keeps it alive. Anything less falls back to
  // the ordinary suspicion path. A stalled process (its socket still open) or packet loss never
  // draws an ICMP, so neither can take this path. Needs indirect_checks >= refused_confirmations
  // (indirect_checks = 0 turns indirect probing off, and with it this path).
  bool refused_fast_path = true;
  unsigned refused_confirmations = 1;    // refused nacks from distinct relays, at least 1

  // --- suspicion (Lifeguard) ---
  // min = suspicion_mult * max(1, log10(n)) * probe_interval, never below suspicion_min_floor;
  // max = suspicion_max_mult * min. The timeout shrinks from max to min as
  // suspicion_confirmations independent suspicions arrive.
  //
  // memberlist uses mult 4 and k = mult - 2 = 2 (min 12 s at n = 1000: ~14-15 s to detect). The
  // simulator showed mult 2 with k = 3 and a 6 s floor detects in ~8-9 s at n = 1000 with the
  // same zero false positives under 5 % loss and 5 s stalls: the floor keeps a paused process
  // from being declared failed before it can refute, the extra confirmation keeps a lone
  // accuser at `max` (docs/benchmarks.md has the figures).
  unsigned suspicion_mult = 2;
  unsigned suspicion_max_mult = 6;
  unsigned suspicion_confirmations = 3;
  Duration suspicion_min_floor = 6s;

  // --- local health awareness (Lifeguard) ---
  unsigned awareness_max = 8;            // probe interval and timeouts scale by (score + 1)

  // --- dissemination ---
  Duration gossip_interval = 200ms;
  unsigned gossip_nodes = 3;
  Duration gossip_to_the_dead = 30s;     // failed members still receive gossip for this long
  unsigned retransmit_mult = 4;          // limit = mult * ceil(log10(n + 1))
  std::size_t max_packet_bytes = 1400;   // whole datagram payload handed to the transport

  // --- anti-entropy ---
  Duration push_pull_interval = 30s;     // scaled up with cluster size above 32 members
  Duration sync_timeout = 5s;            // an unanswered sync (or join) request is given up
  unsigned max_concurrent_syncs = 2;     // outstanding periodic syncs we start
  unsigned max_inbound_syncs_per_s = 64; // periodic syncs we answer per second (joins always)
  // After a join is answered, catch up join_catchups more times, join_catchup_delay * 4^i later
  // (0.5 s, 2 s, 8 s, 32 s, 128 s)
  // (first with the seed that answered, then with random members): members that joined at the
  // same moment learn of each other without waiting for gossip or the next push-pull.
  unsigned join_catchups = 5;
  Duration join_catchup_delay = 500ms;
  // Every reconnect_interval, sync with one random failed member: if it is alive after all (a
  // healed partition), both sides learn the other's state and refute, and the cluster merges.
  Duration reconnect_interval = 30s;

  // --- membership ---
  Duration reap_after = 24h;             // failed and left members are forgotten after this
  // A failed or left member may come back from ANOTHER address only this long after it was
  // declared failed or left (0 = at once, as memberlist's DeadNodeReclaimTime). Until then a live
  // owner hears the verdict and refutes from its own address, so a forged failure or leave
  // followed by an alive from the forger's address cannot take the name over (memberlist #370;
  // signed claims will close it for good). Costs an honest member that really moved up to
  // reclaim_after plus a push-pull interval before it is seen at its new address.
  Duration reclaim_after = 0s;
  std::size_t max_meta_bytes = 512;
  std::size_t max_name_bytes = 128;
  // Members told directly of a graceful leave, and of a failure the refused fast path declared
  // (certain departures: told at once rather than left to gossip alone).
  unsigned leave_fanout = 64;
  // Members told directly when we refute an accusation (at most once per probe interval), on top
  // of the gossip broadcast; 0 = gossip only, as memberlist.
  unsigned refute_fanout = 64;

  // --- signed claims (claims.h) ---
  // Null: claims are not signed (anyone with the cluster key speaks for anyone). Set: every
  // alive, suspect, dead and leave must carry a signature this authority verifies, and ours are
  // signed by it. All members of a cluster must agree on this.
  std::shared_ptr<ClaimAuthority> claims;

  // Checks relations between fields (for config files and flags).
  [[nodiscard]] Result<void> validate() const;
};

}  // namespace weft::gossip
