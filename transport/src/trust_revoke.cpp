// Certificate revocation lists: field checks, the body encoding, signing over
// kRevocationContext || body, and verification (transport/revocation.h has the wire picture).

#include <algorithm>

#include "trust_codec.h"
#include "weft/transport/revocation.h"

namespace weft::transport {

namespace {

constexpr std::uint32_t kBodyFields = 5;

Unexpected<PolicyFailure> doc_fail(PolicyError kind, std::string message) {
  return Unexpected<PolicyFailure>(PolicyFailure{kind, std::move(message)});
}

Unexpected<PolicyFailure> malformed(const std::string& message) {
  return doc_fail(PolicyError::kMalformed, "malformed revocation list: " + message);
}

Result<RevocationList> decode_body(std::span<const std::byte> body) {
  static constexpr const char* kWhat = "body";
  detail::Unpacked u;
  // depth: body -> revoked -> entry
  if (auto r = detail::unpack_exact(body, kWhat, kMaxRevokedCerts, kMaxTrustNameBytes, 8, u, 3); !r) {
    return fail(r.error().message);
  }
  auto f = detail::versioned_array(u.obj, kWhat, kBodyFields, kBodyFields, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  const auto& a = *f;
  RevocationList l;
  if (auto r = detail::read_fixed_bin(a[1], "issuer", l.issuer); !r) return fail(r.error().message);
  if (a[2].type != msgpack::type::STR) return fail("cluster is not a string");
  l.cluster.assign(a[2].via.str.ptr, a[2].via.str.size);
  if (auto r = detail::read_u64(a[3], "version", l.version); !r) return fail(r.error().message);
  if (a[4].type != msgpack::type::ARRAY) return fail("revoked is not an array");
  l.revoked.reserve(a[4].via.array.size);  // bounded by the unpack limit
  for (std::uint32_t i = 0; i < a[4].via.array.size; ++i) {
    const msgpack::object& e = a[4].via.array.ptr[i];
    const std::string w = "entry " + std::to_string(i + 1);
    if (e.type != msgpack::type::ARRAY || e.via.array.size != 2) return fail(w + " is not [issuer, serial]");
    RevokedCert c;
    if (auto r = detail::read_fixed_bin(e.via.array.ptr[0], (w + " issuer").c_str(), c.issuer); !r)
      return fail(r.error().message);
    if (auto r = detail::read_u64(e.via.array.ptr[1], (w + " serial").c_str(), c.serial); !r)
      return fail(r.error().message);
    l.revoked.push_back(c);
  }
  if (auto r = check_revocations(l); !r) return fail(r.error().message);
  return l;
}

}  // namespace

bool RevocationList::contains(const IssuerId& iss, std::uint64_t serial) const {
  return std::binary_search(revoked.begin(), revoked.end(), RevokedCert{iss, serial});
}

Result<void> check_revocations(const RevocationList& l) {
  if (auto r = check_trust_name("cluster", l.cluster); !r) return r;
  if (l.revoked.size() > kMaxRevokedCerts) {
    return fail(std::to_string(l.revoked.size()) + " revoked certificates, the limit is " +
                std::to_string(kMaxRevokedCerts));
  }
  for (std::size_t i = 0; i < l.revoked.size(); ++i) {
    if (l.revoked[i].serial == 0) return fail("entry " + std::to_string(i + 1) + ": serial 0 names no certificate");
    if (i > 0 && !(l.revoked[i - 1] < l.revoked[i])) return fail("entries are not sorted and unique");
  }
  return {};
}

Result<std::vector<std::byte>> sign_revocations(RevocationList l, const OperatorKey& key) {
  l.issuer = key.issuer();
  std::sort(l.revoked.begin(), l.revoked.end());
  l.revoked.erase(std::unique(l.revoked.begin(), l.revoked.end()), l.revoked.end());
  if (auto r = check_revocations(l); !r) return fail("revocation list: " + r.error().message);
  msgpack::sbuffer body;
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_array(kBodyFields);
  pk.pack_uint64(kTrustFormatV1);
  detail::pack_bin(pk, l.issuer);
  pk.pack(l.cluster);
  pk.pack_uint64(l.version);
  pk.pack_array(static_cast<std::uint32_t>(l.revoked.size()));
  for (const RevokedCert& c : l.revoked) {
    pk.pack_array(2);
    detail::pack_bin(pk, c.issuer);
    pk.pack_uint64(c.serial);
  }
  const std::span<const std::byte> body_bytes(reinterpret_cast<const std::byte*>(body.data()), body.size());
  return detail::seal_envelope(kRevocationContext, body_bytes, key, kMaxRevocationBytes, "revocation list");
}

std::string armor_revocations(std::span<const std::byte> envelope) { return armor(kLabelRevocations, envelope); }

Result<std::vector<std::byte>> unarmor_revocations(std::string_view text) {
  return unarmor(text, kLabelRevocations);
}

Result<DecodedRevocations, PolicyFailure> decode_revocations(std::span<const std::byte> envelope) {
  auto e = detail::open_envelope(envelope, kMaxRevocationBytes);
  if (!e) return malformed(e.error().message);
  auto l = decode_body(e->body);
  if (!l) return malformed(l.error().message);
  return DecodedRevocations{std::move(*l), std::move(e->body), e->sig};
}

Result<RevocationList, PolicyFailure> verify_revocations(std::span<const std::byte> envelope,
                                                         std::span<const SignPublicKey> trusted,
                                                         std::string_view cluster,
                                                         std::optional<std::uint64_t> stored_version) {
  auto d = decode_revocations(envelope);
  if (!d) return Unexpected<PolicyFailure>(d.error());
  const RevocationList& l = d->list;
  if (const auto check = detail::check_operator_signature(kRevocationContext, d->body, d->sig, l.issuer, trusted);
      check != detail::SignerCheck::kOk) {
    return doc_fail(check == detail::SignerCheck::kUnknownIssuer ? PolicyError::kUnknownIssuer : PolicyError::kBadSignature,
                    detail::signer_check_message(check, l.issuer));
  }
  if (l.cluster != cluster)
    return doc_fail(PolicyError::kWrongCluster,
                    "revocation list for cluster '" + l.cluster + "', this is '" + std::string(cluster) + "'");
  if (stored_version && l.version <= *stored_version) {
    return doc_fail(PolicyError::kNotNewer, "version " + std::to_string(l.version) + " is not newer than the stored " +
                                                std::to_string(*stored_version));
  }
  return std::move(d->list);
}

}  // namespace weft::transport
