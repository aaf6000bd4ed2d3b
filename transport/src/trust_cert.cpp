// Node certificates: the body encoding, signing over kCertContext || body, and verification.

#include "sodium_init.h"
#include "trust_codec.h"
#include "weft/transport/trust.h"

namespace weft::transport {

namespace {

constexpr std::uint32_t kBodyFields = 9;

Unexpected<CertFailure> cert_fail(CertError kind, std::string message) {
  return Unexpected<CertFailure>(CertFailure{kind, std::move(message)});
}

Unexpected<CertFailure> malformed(const std::string& message) {
  return cert_fail(CertError::kMalformed, "malformed certificate: " + message);
}

Result<void> check_fields(const NodeCert& c) {
  if (c.version != kTrustFormatV1) return fail("version " + std::to_string(c.version) + " is not supported");
  if (auto r = check_trust_name("node", c.node); !r) return r;
  if (c.services.size() > kMaxCertServices) {
    return fail(std::to_string(c.services.size()) + " services, the limit is " +
                std::to_string(kMaxCertServices));
  }
  for (const std::string& s : c.services) {
    if (auto r = check_trust_name("service", s); !r) return r;
  }
  for (const UnixTime t : {c.not_before, c.not_after}) {
    const auto s = t.time_since_epoch().count();
    if (s < 0 || s > kMaxCertUnixSeconds) return fail("a validity time is outside 1970..9999");
  }
  if (c.not_after <= c.not_before) return fail("not_after is not after not_before");
  return {};
}

Result<NodeCert> decode_body(std::span<const std::byte> body) {
  static constexpr const char* kWhat = "body";
  detail::Unpacked u;
  if (auto r = detail::unpack_exact(body, kWhat, kMaxCertServices, kMaxTrustNameBytes, 32, u); !r) {
    return fail(r.error().message);
  }
  auto f = detail::versioned_array(u.obj, kWhat, kBodyFields, kBodyFields, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  const auto& a = *f;
  NodeCert c;
  c.version = kTrustFormatV1;
  if (auto r = detail::read_u64(a[1], "serial", c.serial); !r) return fail(r.error().message);
  if (auto r = detail::read_fixed_bin(a[2], "issuer", c.issuer); !r) return fail(r.error().message);
  if (a[3].type != msgpack::type::STR) return fail("node is not a string");
  c.node.assign(a[3].via.str.ptr, a[3].via.str.size);
  if (auto r = detail::read_fixed_bin(a[4], "signing key", c.sign_pk); !r) return fail(r.error().message);
  if (auto r = detail::read_fixed_bin(a[5], "key-exchange key", c.kx_pk); !r) return fail(r.error().message);
  if (a[6].type != msgpack::type::ARRAY) return fail("services is not an array");
  c.services.reserve(a[6].via.array.size);  // bounded by the unpack limit
  for (std::uint32_t i = 0; i < a[6].via.array.size; ++i) {
    const msgpack::object& s = a[6].via.array.ptr[i];
    if (s.type != msgpack::type::STR) return fail("service " + std::to_string(i) + " is not a string");
    c.services.emplace_back(s.via.str.ptr, s.via.str.size);
  }
  std::int64_t nb = 0, na = 0;
  if (auto r = detail::read_i64(a[7], "not_before", nb); !r) return fail(r.error().message);
  if (auto r = detail::read_i64(a[8], "not_after", na); !r) return fail(r.error().message);
  c.not_before = UnixTime(std::chrono::seconds(nb));
  c.not_after = UnixTime(std::chrono::seconds(na));
  if (auto r = check_fields(c); !r) return fail(r.error().message);
  return c;
}

}  // namespace

std::uint64_t random_serial() {
  detail::ensure_sodium();
  std::uint64_t s = 0;
  while (s == 0) randombytes_buf(&s, sizeof s);
  return s;
}

Result<std::vector<std::byte>> sign_cert(NodeCert cert, const OperatorKey& key) {
  cert.issuer = key.issuer();
  if (auto r = check_fields(cert); !r) return fail("certificate: " + r.error().message);
  msgpack::sbuffer body;
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_array(kBodyFields);
  pk.pack_uint64(cert.version);
  pk.pack_uint64(cert.serial);
  detail::pack_bin(pk, cert.issuer);
  pk.pack(cert.node);
  detail::pack_bin(pk, cert.sign_pk);
  detail::pack_bin(pk, cert.kx_pk);
  pk.pack_array(static_cast<std::uint32_t>(cert.services.size()));
  for (const std::string& s : cert.services) pk.pack(s);
  pk.pack_int64(cert.not_before.time_since_epoch().count());
  pk.pack_int64(cert.not_after.time_since_epoch().count());

  const std::span<const std::byte> body_bytes(reinterpret_cast<const std::byte*>(body.data()), body.size());
  return detail::seal_envelope(kCertContext, body_bytes, key, kMaxCertBytes, "certificate");
}

std::string armor_cert(std::span<const std::byte> envelope) { return armor(kLabelCert, envelope); }

Result<std::vector<std::byte>> unarmor_cert(std::string_view text) { return unarmor(text, kLabelCert); }

const char* to_string(CertError e) {
  switch (e) {
    case CertError::kMalformed:
      return "malformed";
    case CertError::kUnknownIssuer:
      return "unknown issuer";
    case CertError::kBadSignature:
      return "bad signature";
    case CertError::kNotYetValid:
      return "not yet valid";
    case CertError::kExpired:
      return "expired";
  }
  return "unknown";
}

Result<DecodedCert, CertFailure> decode_cert(std::span<const std::byte> envelope) {
  auto e = detail::open_envelope(envelope, kMaxCertBytes);
  if (!e) return malformed(e.error().message);
  auto c = decode_body(e->body);
  if (!c) return malformed(c.error().message);
  return DecodedCert{std::move(*c), std::move(e->body), e->sig};
}

Result<NodeCert, CertFailure> verify_cert(std::span<const std::byte> envelope,
                                          std::span<const SignPublicKey> trusted, UnixTime now,
                                          std::chrono::seconds skew) {
  auto d = decode_cert(envelope);
  if (!d) return Unexpected<CertFailure>(d.error());
  const NodeCert& c = d->cert;
  if (const auto check = detail::check_operator_signature(kCertContext, d->body, d->sig, c.issuer, trusted);
      check != detail::SignerCheck::kOk) {
    return cert_fail(check == detail::SignerCheck::kUnknownIssuer ? CertError::kUnknownIssuer : CertError::kBadSignature,
                     detail::signer_check_message(check, c.issuer));
  }
  if (now + skew < c.not_before) {
    return cert_fail(CertError::kNotYetValid, "not valid before " + format_rfc3339(c.not_before));
  }
  if (now - skew >= c.not_after)
    return cert_fail(CertError::kExpired, "expired at " + format_rfc3339(c.not_after));
  return std::move(d->cert);
}

bool cert_matches(const NodeCert& cert, const NodePublicKeys& keys) {
  return sodium_memcmp(cert.sign_pk.data(), keys.sign_pk.data(), keys.sign_pk.size()) == 0 &&
         sodium_memcmp(cert.kx_pk.data(), keys.kx_pk.data(), keys.kx_pk.size()) == 0;
}

bool cert_matches(const NodeCert& cert, const NodeIdentity& id) {
  return cert_matches(cert, public_keys(id));
}

void CertStats::count(const Result<NodeCert, CertFailure>& r) {
  if (r) {
    ++verified;
    return;
  }
  switch (r.error().kind) {
    case CertError::kMalformed:
      ++malformed;
      break;
    case CertError::kUnknownIssuer:
      ++unknown_issuer;
      break;
    case CertError::kBadSignature:
      ++bad_signature;
      break;
    case CertError::kNotYetValid:
      ++not_yet_valid;
      break;
    case CertError::kExpired:
      ++expired;
      break;
  }
}

}  // namespace weft::transport
