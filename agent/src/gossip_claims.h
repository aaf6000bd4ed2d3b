#pragma once
// The agent's authority for signed gossip claims (gossip/claims.h) over node certificates: with a
// trust root configured, a member is whoever holds a valid certificate for its name, and only
// that certificate's signing key can speak for it.
//
//   credential  the node certificate envelope (transport/trust.h), as issued
//   signature   Ed25519 by the node's signing key over
//               kClaimContext || cluster || 0x00 || claim bytes
//               so that no other signature the node makes (proxy handshakes, ...) and no claim
//               from another cluster (same operator, other --cluster) passes as a claim here.
//
// verify() accepts a claim iff the certificate verifies against a trusted operator key, is
// within its validity (with kDefaultCertSkew), names `signer`, is not revoked, and the signature
// checks out with the certificate's signing key. A certificate's operator signature is checked
// once and cached (bounded); validity and revocation are checked on every call. Called from the
// event loop thread only.

#include <array>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "weft/gossip/claims.h"
#include "weft/transport/identity.h"
#include "weft/transport/trust.h"

namespace weft::agent {

inline constexpr std::string_view kClaimContext{"weft gossip claim v1\0", 21};

struct ClaimStats {
  std::uint64_t verified = 0;
  std::uint64_t bad_certificate = 0;  // malformed, unknown issuer, bad operator signature
  std::uint64_t expired = 0;          // outside its validity (either side)
  std::uint64_t wrong_node = 0;       // a valid certificate for another name
  std::uint64_t revoked = 0;
  std::uint64_t bad_signature = 0;
  std::uint64_t cert_cache_hits = 0;
};

class CertClaimAuthority final : public gossip::ClaimAuthority {
 public:
  using WallClock = std::function<transport::UnixTime()>;
  using Revoked = std::set<std::pair<transport::IssuerId, std::uint64_t>>;

  CertClaimAuthority(std::vector<transport::SignPublicKey> operators, std::string cluster,
                     std::vector<std::byte> own_cert, const transport::NodeIdentity& identity, WallClock clock);
  ~CertClaimAuthority() override;
  CertClaimAuthority(const CertClaimAuthority&) = delete;
  CertClaimAuthority& operator=(const CertClaimAuthority&) = delete;

  void set_revoked(Revoked revoked) { revoked_ = std::move(revoked); }
  [[nodiscard]] const ClaimStats& stats() const { return stats_; }

  [[nodiscard]] const std::vector<std::byte>& credential() const override { return own_cert_; }
  [[nodiscard]] std::vector<std::byte> sign(std::span<const std::byte> claim) override;
  [[nodiscard]] bool verify(std::string_view signer, std::span<const std::byte> credential,
                            std::span<const std::byte> claim, std::span<const std::byte> sig) override;
  [[nodiscard]] bool credential_valid(std::string_view signer, std::span<const std::byte> credential) override;

 private:
  static constexpr std::size_t kMaxCachedCerts = 4096;
  [[nodiscard]] std::vector<std::byte> signed_message(std::span<const std::byte> claim) const;
  // The certificate, operator signature checked (cached by the envelope's hash); nullptr if bad.
  const transport::NodeCert* certificate(std::span<const std::byte> envelope, transport::UnixTime now);
  // The certificate if valid now for `signer` (validity, name, not revoked); counted otherwise.
  const transport::NodeCert* valid_for(std::string_view signer, std::span<const std::byte> credential);

  std::vector<transport::SignPublicKey> operators_;
  std::string cluster_;
  std::vector<std::byte> own_cert_;
  std::array<unsigned char, 64> sign_sk_{};
  WallClock clock_;
  Revoked revoked_;
  std::unordered_map<std::string, transport::NodeCert> certs_;  // by BLAKE2b-256 of the envelope
  ClaimStats stats_;
};

}  // namespace weft::agent
