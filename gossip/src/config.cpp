#include "weft/gossip/config.h"

#include <cstdint>
#include <string>
#include <vector>

#include "weft/gossip/codec.h"

namespace weft::gossip {

Result<void> Config::validate() const {
  if (probe_interval <= Duration::zero()) return fail("probe_interval must be positive");
  if (probe_timeout <= Duration::zero() || probe_timeout >= probe_interval) {
    return fail("probe_timeout must be positive and shorter than probe_interval");
  }
  if (probe_retries > 8) return fail("probe_retries must be at most 8");
  if (gossip_interval <= Duration::zero()) return fail("gossip_interval must be positive");
  if (push_pull_interval <= Duration::zero()) return fail("push_pull_interval must be positive");
  if (sync_timeout <= Duration::zero()) return fail("sync_timeout must be positive");
  if (reconnect_interval <= Duration::zero()) return fail("reconnect_interval must be positive");
  if (join_catchup_delay <= Duration::zero()) return fail("join_catchup_delay must be positive");
  // A lone refusal may be stale or spoofed: always ask for a second opinion.
  if (refused_confirmations == 0) return fail("refused_confirmations must be at least 1");
  if (refused_fast_path && indirect_checks > 0 && refused_confirmations > indirect_checks) {
    return fail("refused_confirmations must not exceed indirect_checks (it could never be reached)");
  }
  if (suspicion_mult == 0) return fail("suspicion_mult must be at least 1");
  if (suspicion_max_mult < 1) return fail("suspicion_max_mult must be at least 1");
  if (awareness_max == 0) return fail("awareness_max must be at least 1");
  if (retransmit_mult == 0) return fail("retransmit_mult must be at least 1");
  if (max_packet_bytes < 512 || max_packet_bytes > 65000) {
    return fail("max_packet_bytes must be between 512 and 65000");
  }
  if (max_meta_bytes > kMaxMetaBytes) return fail("max_meta_bytes is above the wire limit");
  if (max_name_bytes == 0 || max_name_bytes > kMaxNameBytes) return fail("max_name_bytes is out of range");
  if (reap_after <= Duration::zero()) return fail("reap_after must be positive");
  if (reclaim_after < Duration::zero()) return fail("reclaim_after must not be negative");
  // The largest alive message we accept must fit one datagram, or it could never be
  // piggybacked: its broadcast would stay queued for good (and a leave would never finish).
  std::vector<std::byte> largest;
  encode_message(Alive{std::string(max_name_bytes, 'x'), Endpoint{.family = Endpoint::Family::kV6},
                       UINT64_MAX, std::vector<std::byte>(max_meta_bytes)},
                 largest);
  if (largest.size() + kPacketOverhead > max_packet_bytes) {
    return fail("max_packet_bytes must hold an alive message with max_name_bytes of name and max_meta_bytes "
                "of metadata");
  }
  return {};
}

}  // namespace weft::gossip
