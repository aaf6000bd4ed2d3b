#include "gossip_claims.h"

#include <sodium.h>

#include <cstring>

namespace weft::agent {

namespace tr = weft::transport;

CertClaimAuthority::CertClaimAuthority(std::vector<tr::SignPublicKey> operators, std::string cluster,
                                       std::vector<std::byte> own_cert, const tr::NodeIdentity& identity,
                                       WallClock clock)
    : operators_(std::move(operators)),
      cluster_(std::move(cluster)),
      own_cert_(std::move(own_cert)),
      sign_sk_(identity.sign_sk),
      clock_(std::move(clock)) {}

CertClaimAuthority::~CertClaimAuthority() { sodium_memzero(sign_sk_.data(), sign_sk_.size()); }

std::vector<std::byte> CertClaimAuthority::signed_message(std::span<const std::byte> claim) const {
  std::vector<std::byte> m(kClaimContext.size() + cluster_.size() + 1 + claim.size());
  std::byte* p = m.data();
  std::memcpy(p, kClaimContext.data(), kClaimContext.size());
  p += kClaimContext.size();
  if (!cluster_.empty()) std::memcpy(p, cluster_.data(), cluster_.size());
  p += cluster_.size();
  *p++ = std::byte{0};
  if (!claim.empty()) std::memcpy(p, claim.data(), claim.size());
  return m;
}

std::vector<std::byte> CertClaimAuthority::sign(std::span<const std::byte> claim) {
  const std::vector<std::byte> m = signed_message(claim);
  std::vector<std::byte> sig(crypto_sign_BYTES);
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(m.data()), m.size(), sign_sk_.data());
  return sig;
}

const tr::NodeCert* CertClaimAuthority::certificate(std::span<const std::byte> envelope, tr::UnixTime now) {
  std::string key(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(key.data()), key.size(),
                     reinterpret_cast<const unsigned char*>(envelope.data()), envelope.size(), nullptr, 0);
  if (auto it = certs_.find(key); it != certs_.end()) {
    ++stats_.cert_cache_hits;
    return &it->second;
  }
  auto cert = tr::verify_cert(envelope, operators_, now, tr::kDefaultCertSkew);
  if (!cert) {
    if (cert.error().kind == tr::CertError::kExpired || cert.error().kind == tr::CertError::kNotYetValid) {
      ++stats_.expired;
    } else {
      ++stats_.bad_certificate;
    }
    return nullptr;
  }
  if (certs_.size() >= kMaxCachedCerts) certs_.clear();  // rare: a cluster this large re-verifies once
  return &certs_.emplace(std::move(key), std::move(*cert)).first->second;
}

const tr::NodeCert* CertClaimAuthority::valid_for(std::string_view signer, std::span<const std::byte> credential) {
  const tr::UnixTime now = clock_();
  const tr::NodeCert* cert = certificate(credential, now);
  if (!cert) return nullptr;
  // The cache skips the operator signature, never the validity window.
  if (now + tr::kDefaultCertSkew < cert->not_before || now >= cert->not_after + tr::kDefaultCertSkew) {
    ++stats_.expired;
    return nullptr;
  }
  if (cert->node != signer) {
    ++stats_.wrong_node;
    return nullptr;
  }
  if (revoked_.contains({cert->issuer, cert->serial})) {
    ++stats_.revoked;
    return nullptr;
  }
  return cert;
}

bool CertClaimAuthority::credential_valid(std::string_view signer, std::span<const std::byte> credential) {
  return valid_for(signer, credential) != nullptr;
}

bool CertClaimAuthority::verify(std::string_view signer, std::span<const std::byte> credential,
                                std::span<const std::byte> claim, std::span<const std::byte> sig) {
  const tr::NodeCert* cert = valid_for(signer, credential);
  if (!cert) return false;
  const std::vector<std::byte> m = signed_message(claim);
  if (sig.size() != crypto_sign_BYTES ||
      crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig.data()),
                                  reinterpret_cast<const unsigned char*>(m.data()), m.size(),
                                  cert->sign_pk.data()) != 0) {
    ++stats_.bad_signature;
    return false;
  }
  ++stats_.verified;
  return true;
}

}  // namespace weft::agent
