// Operator-signed cluster-key operations: field checks, the body encoding, signing over
// kKeyOpContext || body, verification and the replay guard (transport/keyop.h has the picture).

#include "sodium_init.h"
#include "trust_codec.h"
#include "weft/transport/keyop.h"

namespace weft::transport {

namespace {

constexpr std::uint32_t kBodyFields = 9;
constexpr char kFingerprintLabel[] = "weft cluster key fingerprint v1";  // hashed without its NUL

Unexpected<KeyOpFailure> op_fail(KeyOpError kind, std::string message) {
  return Unexpected<KeyOpFailure>(KeyOpFailure{kind, std::move(message)});
}

Result<UnixTime> read_time(const msgpack::object& o, const char* what) {
  std::int64_t t = 0;
  if (auto r = detail::read_i64(o, what, t); !r) return fail(r.error().message);
  if (t < 0 || t > kMaxCertUnixSeconds) return fail(std::string(what) + " is outside 1970..9999");
  return UnixTime(std::chrono::seconds(t));
}

Result<KeyOperation> decode_body(std::span<const std::byte> body) {
  static constexpr const char* kWhat = "body";
  detail::Unpacked u;
  if (auto r = detail::unpack_exact(body, kWhat, kBodyFields, kMaxTrustNameBytes, 32, u, 1); !r) {
    return fail(r.error().message);
  }
  auto f = detail::versioned_array(u.obj, kWhat, kBodyFields, kBodyFields, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  const auto& a = *f;
  KeyOperation k;
  if (auto r = detail::read_fixed_bin(a[1], "issuer", k.issuer); !r) return fail(r.error().message);
  if (a[2].type != msgpack::type::STR) return fail("cluster is not a string");
  k.cluster.assign(a[2].via.str.ptr, a[2].via.str.size);
  std::uint64_t op = 0;
  if (auto r = detail::read_u64(a[3], "op", op); !r) return fail(r.error().message);
  if (op < 1 || op > 3) return fail("op " + std::to_string(op) + " is unknown");
  k.op = static_cast<KeyOpKind>(op);
  std::uint64_t id = 0;
  if (auto r = detail::read_u64(a[4], "key id", id); !r) return fail(r.error().message);
  if (id > UINT32_MAX) return fail("key id is out of range");
  k.key_id = static_cast<KeyId>(id);
  if (a[5].type != msgpack::type::NIL) {
    KeyFingerprint fp{};
    if (auto r = detail::read_fixed_bin(a[5], "fingerprint", fp); !r) return fail(r.error().message);
    k.fingerprint = fp;
  }
  auto issued = read_time(a[6], "issued");
  if (!issued) return fail(issued.error().message);
  k.issued = *issued;
  auto expires = read_time(a[7], "expires");
  if (!expires) return fail(expires.error().message);
  k.expires = *expires;
  if (auto r = detail::read_fixed_bin(a[8], "nonce", k.nonce); !r) return fail(r.error().message);
  if (auto r = check_key_op(k); !r) return fail(r.error().message);
  return k;
}

}  // namespace

const char* to_string(KeyOpKind k) {
  switch (k) {
    case KeyOpKind::kInstall:
      return "install";
    case KeyOpKind::kUse:
      return "use";
    case KeyOpKind::kRemove:
      return "remove";
  }
  return "unknown";
}

std::optional<KeyOpKind> parse_key_op_kind(std::string_view s) {
  if (s == "install") return KeyOpKind::kInstall;
  if (s == "use") return KeyOpKind::kUse;
  if (s == "remove") return KeyOpKind::kRemove;
  return std::nullopt;
}

const char* to_string(KeyOpError e) {
  switch (e) {
    case KeyOpError::kUnsigned:
      return "unsigned";
    case KeyOpError::kMalformed:
      return "malformed";
    case KeyOpError::kUnknownIssuer:
      return "unknown issuer";
    case KeyOpError::kBadSignature:
      return "bad signature";
    case KeyOpError::kWrongCluster:
      return "wrong cluster";
    case KeyOpError::kNotYetValid:
      return "not yet valid";
    case KeyOpError::kExpired:
      return "expired";
    case KeyOpError::kWrongOperation:
      return "wrong operation";
    case KeyOpError::kWrongKey:
      return "wrong key";
    case KeyOpError::kReplayed:
      return "replayed";
  }
  return "unknown";
}

KeyFingerprint key_fingerprint(const Key& key) {
  detail::ensure_sodium();
  KeyFingerprint fp{};
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, fp.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(kFingerprintLabel),
                            sizeof kFingerprintLabel - 1);
  crypto_generichash_update(&state, key.data(), key.size());
  crypto_generichash_final(&state, fp.data(), fp.size());
  return fp;
}

KeyOpNonce random_key_op_nonce() {
  detail::ensure_sodium();
  KeyOpNonce n{};
  randombytes_buf(n.data(), n.size());
  return n;
}

Result<void> check_key_op(const KeyOperation& k) {
  if (auto r = check_trust_name("cluster", k.cluster); !r) return r;
  if (k.op != KeyOpKind::kInstall && k.op != KeyOpKind::kUse && k.op != KeyOpKind::kRemove) {
    return fail("op is unknown");
  }
  if (k.op == KeyOpKind::kInstall && !k.fingerprint) return fail("an install must name the key's fingerprint");
  const auto issued = k.issued.time_since_epoch().count();
  const auto expires = k.expires.time_since_epoch().count();
  if (issued < 0 || issued > kMaxCertUnixSeconds || expires < 0 || expires > kMaxCertUnixSeconds) {
    return fail("issued and expires must be within 1970..9999");
  }
  if (k.expires <= k.issued) return fail("expires is not after issued");
  if (k.expires - k.issued > kMaxKeyOpLifetime) {
    return fail("valid for " + std::to_string((k.expires - k.issued).count()) + " s, the limit is " +
                std::to_string(kMaxKeyOpLifetime.count()) + " s");
  }
  if (k.nonce == KeyOpNonce{}) return fail("the nonce is all zero");
  return {};
}

Result<std::vector<std::byte>> sign_key_op(KeyOperation k, const OperatorKey& key) {
  k.issuer = key.issuer();
  if (auto r = check_key_op(k); !r) return fail("key operation: " + r.error().message);
  msgpack::sbuffer body;
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_array(kBodyFields);
  pk.pack_uint64(kTrustFormatV1);
  detail::pack_bin(pk, k.issuer);
  pk.pack(k.cluster);
  pk.pack_uint64(static_cast<std::uint64_t>(k.op));
  pk.pack_uint64(k.key_id);
  if (k.fingerprint) {
    detail::pack_bin(pk, *k.fingerprint);
  } else {
    pk.pack_nil();
  }
  pk.pack_int64(k.issued.time_since_epoch().count());
  pk.pack_int64(k.expires.time_since_epoch().count());
  detail::pack_bin(pk, k.nonce);
  const std::span<const std::byte> body_bytes(reinterpret_cast<const std::byte*>(body.data()), body.size());
  return detail::seal_envelope(kKeyOpContext, body_bytes, key, kMaxKeyOpBytes, "key operation");
}

std::string armor_key_op(std::span<const std::byte> envelope) { return armor(kLabelKeyOp, envelope); }

Result<std::vector<std::byte>> unarmor_key_op(std::string_view text) { return unarmor(text, kLabelKeyOp); }

Result<DecodedKeyOp, KeyOpFailure> decode_key_op(std::span<const std::byte> envelope) {
  auto e = detail::open_envelope(envelope, kMaxKeyOpBytes);
  if (!e) return op_fail(KeyOpError::kMalformed, "malformed key operation: " + e.error().message);
  auto k = decode_body(e->body);
  if (!k) return op_fail(KeyOpError::kMalformed, "malformed key operation: " + k.error().message);
  return DecodedKeyOp{std::move(*k), std::move(e->body), e->sig};
}

Result<KeyOperation, KeyOpFailure> verify_key_op(std::span<const std::byte> envelope,
                                                 std::span<const SignPublicKey> trusted, std::string_view cluster,
                                                 const KeyOpTarget& target, UnixTime now) {
  auto d = decode_key_op(envelope);
  if (!d) return Unexpected<KeyOpFailure>(d.error());
  const KeyOperation& k = d->op;
  if (const auto check = detail::check_operator_signature(kKeyOpContext, d->body, d->sig, k.issuer, trusted);
      check != detail::SignerCheck::kOk) {
    return op_fail(check == detail::SignerCheck::kUnknownIssuer ? KeyOpError::kUnknownIssuer
                                                                : KeyOpError::kBadSignature,
                   detail::signer_check_message(check, k.issuer));
  }
  if (k.cluster != cluster) {
    return op_fail(KeyOpError::kWrongCluster,
                   "signed for cluster '" + k.cluster + "', this is '" + std::string(cluster) + "'");
  }
  if (now + kKeyOpSkew < k.issued) {
    return op_fail(KeyOpError::kNotYetValid, "issued at " + format_rfc3339(k.issued) + ", in the future");
  }
  if (now >= k.expires) return op_fail(KeyOpError::kExpired, "expired at " + format_rfc3339(k.expires));
  if (k.op != target.op) {
    return op_fail(KeyOpError::kWrongOperation,
                   std::string("signed for '") + to_string(k.op) + "', not '" + to_string(target.op) + "'");
  }
  if (k.key_id != target.key_id) {
    return op_fail(KeyOpError::kWrongKey,
                   "signed for key " + format_key_id(k.key_id) + ", not " + format_key_id(target.key_id));
  }
  if (k.fingerprint && *k.fingerprint != target.fingerprint) {
    return op_fail(KeyOpError::kWrongKey, "signed for another key with id " + format_key_id(k.key_id) +
                                              " (the fingerprints differ)");
  }
  return std::move(d->op);
}

void KeyOpReplayGuard::prune(UnixTime now) {
  std::erase_if(nonces_, [&](const auto& e) { return e.second <= now; });
}

bool KeyOpReplayGuard::seen(const KeyOpNonce& nonce, UnixTime now) {
  prune(now);
  return nonces_.count(nonce) != 0;
}

bool KeyOpReplayGuard::record(const KeyOpNonce& nonce, UnixTime expires, UnixTime now) {
  prune(now);
  if (nonces_.count(nonce) != 0 || nonces_.size() >= capacity_) return false;
  nonces_.emplace(nonce, expires);
  return true;
}

}  // namespace weft::transport
