#include "weft/transport/identity.h"

#include "sodium_init.h"

namespace weft::transport {

static_assert(crypto_sign_PUBLICKEYBYTES == 32 && crypto_sign_SECRETKEYBYTES == 64);
static_assert(crypto_sign_SEEDBYTES == 32);
static_assert(crypto_box_PUBLICKEYBYTES == 32 && crypto_box_SECRETKEYBYTES == 32);
static_assert(crypto_scalarmult_BYTES == 32 && crypto_scalarmult_SCALARBYTES == 32);

NodeIdentity NodeIdentity::generate() {
  detail::ensure_sodium();
  NodeIdentity id;
  crypto_sign_keypair(id.sign_pk.data(), id.sign_sk.data());
  crypto_box_keypair(id.kx_pk.data(), id.kx_sk.data());
  return id;
}

Result<void> NodeIdentity::check() const {
  detail::ensure_sodium();
  // An Ed25519 secret key is seed || public key, and crypto_sign_ed25519_sk_to_pk only copies the
  // second half; so the key pair is recomputed from the seed, which catches damage to either half.
  std::array<unsigned char, 32> seed{};
  std::array<unsigned char, 32> pk{};
  std::array<unsigned char, 64> sk{};
  crypto_sign_ed25519_sk_to_seed(seed.data(), sign_sk.data());
  crypto_sign_seed_keypair(pk.data(), sk.data(), seed.data());
  std::array<unsigned char, 32> embedded_pk{};
  crypto_sign_ed25519_sk_to_pk(embedded_pk.data(), sign_sk.data());
  const bool sign_ok = sodium_memcmp(pk.data(), sign_pk.data(), pk.size()) == 0 &&
                       sodium_memcmp(embedded_pk.data(), sign_pk.data(), pk.size()) == 0 &&
                       sodium_memcmp(sk.data(), sign_sk.data(), sk.size()) == 0;
  sodium_memzero(seed.data(), seed.size());
  sodium_memzero(sk.data(), sk.size());

  std::array<unsigned char, 32> kx{};
  const bool kx_computed = crypto_scalarmult_base(kx.data(), kx_sk.data()) == 0;
  const bool kx_ok = kx_computed && sodium_memcmp(kx.data(), kx_pk.data(), kx.size()) == 0;

  if (!sign_ok) return fail("node identity: the signing secret key does not match its public key");
  if (!kx_ok) return fail("node identity: the key-exchange secret key does not match its public key");
  return {};
}

std::string fingerprint(const NodeIdentity& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(16);
  for (std::size_t i = 0; i < 8; ++i) {
    out += kHex[id.sign_pk[i] >> 4];
    out += kHex[id.sign_pk[i] & 0x0f];
  }
  return out;
}

}  // namespace weft::transport
