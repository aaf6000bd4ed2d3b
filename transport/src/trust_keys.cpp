// The operator key (generation, signing, the secret and public key files) and node.pub.

#include "sodium_init.h"
#include "trust_codec.h"
#include "weft/transport/trust.h"

namespace weft::transport {

namespace {

constexpr std::uint64_t kPlain = 0;
constexpr std::uint64_t kArgon2idSecretbox = 1;
constexpr std::size_t kSaltBytes = crypto_pwhash_SALTBYTES;
constexpr std::size_t kNonceBytes = crypto_secretbox_NONCEBYTES;
constexpr std::size_t kSeedBytes = crypto_sign_SEEDBYTES;
constexpr std::size_t kSealedBytes = kSeedBytes + crypto_secretbox_MACBYTES;
// A file chooses its own KDF cost; bound it so that a crafted file cannot ask for more than the
// SENSITIVE preset's memory (1 GiB) or an absurd number of passes.
constexpr std::uint64_t kMaxOpslimit = 16;
constexpr std::uint64_t kMaxMemlimit = crypto_pwhash_MEMLIMIT_SENSITIVE;

static_assert(kSaltBytes == 16 && kNonceBytes == 24 && kSeedBytes == 32);

using detail::pack_bin;

std::span<const std::byte> as_bytes(const msgpack::sbuffer& b) {
  return {reinterpret_cast<const std::byte*>(b.data()), b.size()};
}

std::string encode_with(std::string_view label, const msgpack::sbuffer& buf) {
  return armor(label, as_bytes(buf));
}

Result<void> prefix(Result<void> r, const char* what) {
  if (r) return r;
  return fail(std::string(what) + ": " + r.error().message);
}

}  // namespace

IssuerId issuer_id(const SignPublicKey& operator_pk) {
  detail::ensure_sodium();
  std::array<unsigned char, 32> h{};
  crypto_generichash(h.data(), h.size(), operator_pk.data(), operator_pk.size(), nullptr, 0);
  IssuerId id{};
  std::memcpy(id.data(), h.data(), id.size());
  return id;
}

KdfLimits KdfLimits::moderate() { return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE}; }
KdfLimits KdfLimits::interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

OperatorKey OperatorKey::generate() {
  detail::ensure_sodium();
  OperatorKey k;
  crypto_sign_keypair(k.pk_.data(), k.sk_.data());
  return k;
}

OperatorKey OperatorKey::from_seed(const std::array<unsigned char, 32>& seed) {
  detail::ensure_sodium();
  OperatorKey k;
  crypto_sign_seed_keypair(k.pk_.data(), k.sk_.data(), seed.data());
  return k;
}

OperatorKey::OperatorKey(const OperatorKey&) = default;
OperatorKey& OperatorKey::operator=(const OperatorKey&) = default;
OperatorKey::~OperatorKey() { sodium_memzero(sk_.data(), sk_.size()); }

Signature OperatorKey::sign(std::span<const std::byte> message) const {
  Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), sk_.data());
  return sig;
}

std::string OperatorKey::encode_secret(std::optional<std::string_view> passphrase, KdfLimits limits) const {
  detail::ensure_sodium();
  std::array<unsigned char, kSeedBytes> seed{};
  crypto_sign_ed25519_sk_to_seed(seed.data(), sk_.data());
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  if (!passphrase) {
    pk.pack_array(4);
    pk.pack_uint64(kTrustFormatV1);
    pk.pack_uint64(kPlain);
    pack_bin(pk, pk_);
    pack_bin(pk, seed);
  } else {
    std::array<unsigned char, kSaltBytes> salt{};
    std::array<unsigned char, kNonceBytes> nonce{};
    std::array<unsigned char, crypto_secretbox_KEYBYTES> key{};
    std::array<unsigned char, kSealedBytes> sealed{};
    randombytes_buf(salt.data(), salt.size());
    randombytes_buf(nonce.data(), nonce.size());
    const int rc = crypto_pwhash(key.data(), key.size(), passphrase->data(), passphrase->size(), salt.data(),
                                 limits.opslimit, limits.memlimit, crypto_pwhash_ALG_ARGON2ID13);
    WEFT_CHECK(rc == 0);  // only fails when out of memory for the chosen limits
    crypto_secretbox_easy(sealed.data(), seed.data(), seed.size(), nonce.data(), key.data());
    sodium_memzero(key.data(), key.size());
    pk.pack_array(8);
    pk.pack_uint64(kTrustFormatV1);
    pk.pack_uint64(kArgon2idSecretbox);
    pack_bin(pk, pk_);
    pack_bin(pk, salt);
    pk.pack_uint64(limits.opslimit);
    pk.pack_uint64(limits.memlimit);
    pack_bin(pk, nonce);
    pack_bin(pk, sealed);
  }
  sodium_memzero(seed.data(), seed.size());
  std::string out = encode_with(kLabelOperatorSecret, buf);
  sodium_memzero(buf.data(), buf.size());
  return out;
}

std::string OperatorKey::encode_public() const {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(2);
  pk.pack_uint64(kTrustFormatV1);
  pack_bin(pk, pk_);
  return encode_with(kLabelOperatorPublic, buf);
}

OperatorSecretFile::~OperatorSecretFile() { sodium_memzero(seed.data(), seed.size()); }

Result<OperatorSecretFile> parse_operator_secret(std::string_view text) {
  static constexpr const char* kWhat = "operator secret key";
  auto bytes = unarmor(text, kLabelOperatorSecret);
  if (!bytes) return fail(bytes.error().message);
  detail::Unpacked u;
  Result<OperatorSecretFile> out = [&]() -> Result<OperatorSecretFile> {
    if (auto r = detail::unpack_exact(*bytes, kWhat, 8, 0, 64, u); !r) return fail(r.error().message);
    auto f = detail::versioned_array(u.obj, kWhat, 4, 8, kTrustFormatV1);
    if (!f) return fail(f.error().message);
    const auto& a = *f;
    OperatorSecretFile s;
    std::uint64_t protection = 0;
    if (auto r = prefix(detail::read_u64(a[1], "protection", protection), kWhat); !r)
      return fail(r.error().message);
    if (auto r = prefix(detail::read_fixed_bin(a[2], "public key", s.pk), kWhat); !r)
      return fail(r.error().message);
    if (protection == kPlain) {
      if (a.size() != 4)
        return fail(std::string(kWhat) + ": a plain key has 4 fields, not " + std::to_string(a.size()));
      if (auto r = prefix(detail::read_fixed_bin(a[3], "seed", s.seed), kWhat); !r)
        return fail(r.error().message);
      return s;
    }
    if (protection != kArgon2idSecretbox) {
      return fail(std::string(kWhat) + ": protection " + std::to_string(protection) + " is unknown");
    }
    if (a.size() != 8) {
      return fail(std::string(kWhat) + ": a passphrase-protected key has 8 fields, not " +
                  std::to_string(a.size()));
    }
    s.passphrase_protected = true;
    if (auto r = prefix(detail::read_bin(a[3], "salt", kSaltBytes, s.salt), kWhat); !r)
      return fail(r.error().message);
    if (auto r = prefix(detail::read_u64(a[4], "opslimit", s.opslimit), kWhat); !r)
      return fail(r.error().message);
    if (auto r = prefix(detail::read_u64(a[5], "memlimit", s.memlimit), kWhat); !r)
      return fail(r.error().message);
    if (auto r = prefix(detail::read_bin(a[6], "nonce", kNonceBytes, s.nonce), kWhat); !r)
      return fail(r.error().message);
    if (auto r = prefix(detail::read_bin(a[7], "sealed seed", kSealedBytes, s.sealed), kWhat); !r) {
      return fail(r.error().message);
    }
    if (s.opslimit < crypto_pwhash_OPSLIMIT_MIN || s.opslimit > kMaxOpslimit) {
      return fail(std::string(kWhat) + ": opslimit " + std::to_string(s.opslimit) + " is out of range");
    }
    if (s.memlimit < crypto_pwhash_MEMLIMIT_MIN || s.memlimit > kMaxMemlimit) {
      return fail(std::string(kWhat) + ": memlimit " + std::to_string(s.memlimit) + " is out of range");
    }
    return s;
  }();
  sodium_memzero(bytes->data(), bytes->size());
  return out;
}

Result<OperatorKey> unlock_operator_secret(const OperatorSecretFile& file,
                                           std::optional<std::string_view> passphrase) {
  detail::ensure_sodium();
  std::array<unsigned char, kSeedBytes> seed{};
  if (!file.passphrase_protected) {
    seed = file.seed;
  } else {
    if (!passphrase) return fail("the operator secret key is passphrase-protected: give --passphrase-file");
    // The struct is public: check what parse_operator_secret guarantees before libsodium reads it.
    if (file.salt.size() != kSaltBytes || file.nonce.size() != kNonceBytes ||
        file.sealed.size() != kSealedBytes || file.opslimit < crypto_pwhash_OPSLIMIT_MIN ||
        file.opslimit > kMaxOpslimit || file.memlimit < crypto_pwhash_MEMLIMIT_MIN ||
        file.memlimit > kMaxMemlimit) {
      return fail("operator secret key: the passphrase parameters are damaged");
    }
    std::array<unsigned char, crypto_secretbox_KEYBYTES> key{};
    if (crypto_pwhash(key.data(), key.size(), passphrase->data(), passphrase->size(),
                      reinterpret_cast<const unsigned char*>(file.salt.data()), file.opslimit,
                      static_cast<std::size_t>(file.memlimit), crypto_pwhash_ALG_ARGON2ID13) != 0) {
      return fail("operator secret key: cannot derive the key (out of memory?)");
    }
    const int rc = crypto_secretbox_open_easy(
        seed.data(), reinterpret_cast<const unsigned char*>(file.sealed.data()), file.sealed.size(),
        reinterpret_cast<const unsigned char*>(file.nonce.data()), key.data());
    sodium_memzero(key.data(), key.size());
    if (rc != 0) return fail("wrong passphrase for the operator secret key (or the file is damaged)");
  }
  OperatorKey k = OperatorKey::from_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  if (sodium_memcmp(k.public_key().data(), file.pk.data(), file.pk.size()) != 0) {
    return fail("operator secret key: the secret key does not match the public key in the file (damaged)");
  }
  return k;
}

Result<SignPublicKey> decode_operator_public(std::string_view text) {
  static constexpr const char* kWhat = "operator public key";
  auto bytes = unarmor(text, kLabelOperatorPublic);
  if (!bytes) return fail(bytes.error().message);
  detail::Unpacked u;
  if (auto r = detail::unpack_exact(*bytes, kWhat, 2, 0, 32, u); !r) return fail(r.error().message);
  auto f = detail::versioned_array(u.obj, kWhat, 2, 2, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  SignPublicKey pk{};
  if (auto r = prefix(detail::read_fixed_bin((*f)[1], "key", pk), kWhat); !r) return fail(r.error().message);
  return pk;
}

NodePublicKeys public_keys(const NodeIdentity& id) { return {id.sign_pk, id.kx_pk}; }

std::string encode_node_public(const NodePublicKeys& keys) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack_uint64(kTrustFormatV1);
  pack_bin(pk, keys.sign_pk);
  pack_bin(pk, keys.kx_pk);
  return encode_with(kLabelNodePublic, buf);
}

Result<NodePublicKeys> decode_node_public(std::string_view text) {
  static constexpr const char* kWhat = "node public keys";
  auto bytes = unarmor(text, kLabelNodePublic);
  if (!bytes) return fail(bytes.error().message);
  detail::Unpacked u;
  if (auto r = detail::unpack_exact(*bytes, kWhat, 3, 0, 32, u); !r) return fail(r.error().message);
  auto f = detail::versioned_array(u.obj, kWhat, 3, 3, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  NodePublicKeys k;
  if (auto r = prefix(detail::read_fixed_bin((*f)[1], "signing key", k.sign_pk), kWhat); !r) {
    return fail(r.error().message);
  }
  if (auto r = prefix(detail::read_fixed_bin((*f)[2], "key-exchange key", k.kx_pk), kWhat); !r) {
    return fail(r.error().message);
  }
  return k;
}

namespace detail {

std::vector<std::byte> signed_message(std::string_view context, std::span<const std::byte> body) {
  std::vector<std::byte> m(context.size() + body.size());
  std::memcpy(m.data(), context.data(), context.size());
  if (!body.empty()) std::memcpy(m.data() + context.size(), body.data(), body.size());
  return m;
}

SignerCheck check_operator_signature(std::string_view context, std::span<const std::byte> body,
                                     const Signature& sig, const IssuerId& issuer,
                                     std::span<const SignPublicKey> trusted) {
  const std::vector<std::byte> msg = signed_message(context, body);
  SignerCheck result = SignerCheck::kUnknownIssuer;
  for (const SignPublicKey& pk : trusted) {
    if (issuer_id(pk) != issuer) continue;
    if (crypto_sign_verify_detached(sig.data(), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                                    pk.data()) == 0) {
      return SignerCheck::kOk;
    }
    result = SignerCheck::kBadSignature;
  }
  return result;
}

std::string signer_check_message(SignerCheck check, const IssuerId& issuer) {
  if (check == SignerCheck::kUnknownIssuer) return "issuer " + to_hex(issuer) + " is not a trusted operator key";
  return "the signature does not verify with issuer " + to_hex(issuer);
}

Result<std::vector<std::byte>> seal_envelope(std::string_view context, std::span<const std::byte> body,
                                             const OperatorKey& key, std::size_t max_bytes, const char* what) {
  const Signature sig = key.sign(signed_message(context, body));
  msgpack::sbuffer env;
  msgpack::packer<msgpack::sbuffer> ep(env);
  ep.pack_array(2);
  pack_bin(ep, body);
  pack_bin(ep, sig);
  if (env.size() > max_bytes) return fail(std::string(what) + ": larger than " + std::to_string(max_bytes) + " bytes");
  return to_byte_vector(env);
}

Result<Envelope> open_envelope(std::span<const std::byte> envelope, std::size_t max_bytes) {
  if (envelope.size() > max_bytes) return fail("larger than " + std::to_string(max_bytes) + " bytes");
  Unpacked u;
  if (auto r = unpack_exact(envelope, "envelope", 2, 0, max_bytes, u); !r) return fail(r.error().message);
  if (u.obj.type != msgpack::type::ARRAY || u.obj.via.array.size != 2) {
    return fail("the envelope is not [body, signature]");
  }
  const msgpack::object& body = u.obj.via.array.ptr[0];
  if (body.type != msgpack::type::BIN) return fail("the body is not bytes");
  Envelope e;
  if (auto r = read_fixed_bin(u.obj.via.array.ptr[1], "signature", e.sig); !r) return fail(r.error().message);
  const auto* p = reinterpret_cast<const std::byte*>(body.via.bin.ptr);
  e.body.assign(p, p + body.via.bin.size);
  return e;
}

}  // namespace detail

}  // namespace weft::transport
