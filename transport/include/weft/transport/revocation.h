#pragma once
// Certificate revocation lists (issue 5): the operator signs, offline, the list of node
// certificates that no agent may accept any more. Agents spread the newest list like the signed
// policy (gossip carries its version, peers fetch it), verify it themselves against their
// trusted operator keys, and refuse the listed certificates in every handshake.
//
// One list per cluster, cumulative: each new list names every certificate still revoked (the
// CLI builds the next list from the previous one), so an agent needs only the newest.
//
// Wire format (msgpack, inside the armor "WEFT REVOCATION LIST"), like policies:
//
//   envelope  [body:bin, sig:bin64]          what is stored and forwarded, byte for byte
//   body      [1, issuer:bin8, cluster:str, version:uint64, revoked:[[issuer:bin8, serial:uint64]...]]
//   sig       Ed25519(operator sk, kRevocationContext || body) over the exact body bytes.
//
// An entry names a certificate by its issuer id and serial (trust.h NodeCert), so a list signed
// by one trusted operator key can revoke certificates of another (during a root rotation both
// are trusted, and either may sign). Entries are sorted and unique. Verification shares the
// failure kinds of policies (policy.h PolicyError; kExpired does not occur: lists do not expire,
// a newer version replaces them).
//
// No clock reads.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/policy.h"
#include "weft/transport/trust.h"

namespace weft::transport {

// Signed before the body (the trailing 0 byte is part of it); differs from the certificate
// and policy contexts, so no signature passes for another kind of document.
inline constexpr std::string_view kRevocationContext{"weft revocation list v1\0", 24};
inline constexpr std::string_view kLabelRevocations = "WEFT REVOCATION LIST";
inline constexpr std::size_t kMaxRevokedCerts = 1024;
inline constexpr std::size_t kMaxRevocationBytes = 40 * 1024;  // envelope

struct RevokedCert {
  IssuerId issuer{};
  std::uint64_t serial = 0;
  friend auto operator<=>(const RevokedCert&, const RevokedCert&) = default;
};

struct RevocationList {
  IssuerId issuer{};          // the signer; set by sign_revocations
  std::string cluster;        // the agent's --cluster name
  std::uint64_t version = 0;  // monotonic: agents accept only a higher one
  std::vector<RevokedCert> revoked;  // sorted, unique
  friend bool operator==(const RevocationList&, const RevocationList&) = default;
  [[nodiscard]] bool contains(const IssuerId& issuer, std::uint64_t serial) const;
};

// Field checks shared by sign and decode: cluster name, count, order, non-zero serials.
[[nodiscard]] Result<void> check_revocations(const RevocationList& l);
// Sorts and de-duplicates l.revoked, checks, sets l.issuer from `key`; the envelope bytes.
[[nodiscard]] Result<std::vector<std::byte>> sign_revocations(RevocationList l, const OperatorKey& key);
[[nodiscard]] std::string armor_revocations(std::span<const std::byte> envelope);
[[nodiscard]] Result<std::vector<std::byte>> unarmor_revocations(std::string_view text);

struct DecodedRevocations {
  RevocationList list;
  std::vector<std::byte> body;  // the exact signed bytes
  Signature sig{};
};
// Parses the envelope and body without checking the signature (for `weft cert revocations`).
[[nodiscard]] Result<DecodedRevocations, PolicyFailure> decode_revocations(std::span<const std::byte> envelope);
// Valid iff it decodes, its issuer is one of `trusted` and the signature verifies, its cluster
// is `cluster`, and version > stored_version (when one is stored). In that order.
[[nodiscard]] Result<RevocationList, PolicyFailure> verify_revocations(std::span<const std::byte> envelope,
                                                                       std::span<const SignPublicKey> trusted,
                                                                       std::string_view cluster,
                                                                       std::optional<std::uint64_t> stored_version);

}  // namespace weft::transport
