#include "weft/transport/noise.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "sodium_init.h"

namespace weft::transport {

namespace {

using detail::ensure_sodium;

static_assert(crypto_scalarmult_BYTES == kNoiseKeyBytes && crypto_scalarmult_SCALARBYTES == kNoiseKeyBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kNoiseKeyBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kNoiseTagBytes);
static_assert(crypto_hash_sha256_BYTES == kNoiseHashBytes && crypto_auth_hmacsha256_BYTES == kNoiseHashBytes);
// The protocol name is exactly HASHLEN bytes, so InitializeSymmetric uses it as h unhashed (§5.2).
static_assert(kNoiseProtocolName.size() == kNoiseHashBytes);

using Bytes32 = std::array<unsigned char, 32>;

const unsigned char* as_uchar(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }
std::span<const unsigned char> as_uchar(std::span<const std::byte> s) { return {as_uchar(s.data()), s.size()}; }

// ChaChaPoly's nonce (§12.3): 32 bits of zeros, then the 64-bit counter little-endian.
std::array<unsigned char, 12> chachapoly_nonce(std::uint64_t n) {
  std::array<unsigned char, 12> nonce{};
  for (std::size_t i = 0; i < 8; ++i) nonce[4 + i] = static_cast<unsigned char>(n >> (8 * i));
  return nonce;
}

void hmac_sha256(const Bytes32& key, std::span<const unsigned char> a, std::span<const unsigned char> b,
                 Bytes32& out) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&st, a.data(), a.size());
  crypto_auth_hmacsha256_update(&st, b.data(), b.size());
  crypto_auth_hmacsha256_final(&st, out.data());
  sodium_memzero(&st, sizeof st);
}

// HKDF(chaining_key, input_key_material, 2) of §4.3: HKDF (RFC 5869) with the chaining key as salt
// and an empty info string, two outputs.
void hkdf2(const Bytes32& ck, std::span<const unsigned char> ikm, Bytes32& out1, Bytes32& out2) {
  Bytes32 temp_key{};
  hmac_sha256(ck, ikm, {}, temp_key);
  const unsigned char one = 0x01;
  const unsigned char two = 0x02;
  hmac_sha256(temp_key, {&one, 1}, {}, out1);
  hmac_sha256(temp_key, out1, {&two, 1}, out2);
  sodium_memzero(temp_key.data(), temp_key.size());
}

}  // namespace

NoiseKeyPair NoiseKeyPair::generate() {
  ensure_sodium();
  NoiseKeyPair kp;
  crypto_box_keypair(kp.public_key.data(), kp.secret_key.data());  // X25519, random scalar
  return kp;
}

NoiseKeyPair NoiseKeyPair::from_secret(const std::array<unsigned char, kNoiseKeyBytes>& secret) {
  ensure_sodium();
  NoiseKeyPair kp;
  kp.secret_key = secret;
  // Fails only for a scalar that clamps to 0, which clamping rules out; the key stays all-zero
  // then, and the first DH with it fails.
  if (crypto_scalarmult_base(kp.public_key.data(), kp.secret_key.data()) != 0) kp.public_key.fill(0);
  return kp;
}

void NoiseKeyPair::wipe() {
  sodium_memzero(secret_key.data(), secret_key.size());
  sodium_memzero(public_key.data(), public_key.size());
}

SessionKeys::~SessionKeys() {
  sodium_memzero(initiator_to_responder.data(), initiator_to_responder.size());
  sodium_memzero(responder_to_initiator.data(), responder_to_initiator.size());
}

Handshake::Handshake(HandshakeRole role, const NoiseKeyPair& self, std::span<const std::byte> prologue)
    : role_(role) {
  ensure_sodium();
  // InitializeSymmetric: h = protocol name (exactly HASHLEN bytes), ck = h, no key.
  std::memcpy(st_.h.data(), kNoiseProtocolName.data(), kNoiseHashBytes);
  st_.ck = st_.h;
  mix_hash(as_uchar(prologue));
  st_.s = self;
  st_.e = NoiseKeyPair::generate();
}

Handshake Handshake::initiator(const NoiseKeyPair& self, const NoisePublicKey& responder_static,
                               std::span<const std::byte> prologue) {
  Handshake hs(HandshakeRole::kInitiator, self, prologue);
  hs.st_.rs = responder_static;
  hs.st_.has_rs = true;
  hs.mix_hash(hs.st_.rs);  // pre-message "<- s"
  return hs;
}

Handshake Handshake::responder(const NoiseKeyPair& self, std::span<const std::byte> prologue) {
  Handshake hs(HandshakeRole::kResponder, self, prologue);
  hs.mix_hash(hs.st_.s.public_key);  // pre-message "<- s": our own key
  return hs;
}

Handshake::~Handshake() { wipe(); }

Handshake::Handshake(Handshake&& o) noexcept
    : st_(o.st_), role_(o.role_), step_(o.step_), split_done_(o.split_done_) {
  o.wipe();
  o.step_ = Step::kFailed;
}

Handshake& Handshake::operator=(Handshake&& o) noexcept {
  if (this != &o) {
    wipe();
    st_ = o.st_;
    role_ = o.role_;
    step_ = o.step_;
    split_done_ = o.split_done_;
    o.wipe();
    o.step_ = Step::kFailed;
  }
  return *this;
}

void Handshake::wipe() { sodium_memzero(&st_, sizeof st_); }

Unexpected<Error> Handshake::fail_with(const char* what) {
  // A failed handshake keeps nothing: its keys must not serve a second attempt.
  const bool was_failed = step_ == Step::kFailed;
  step_ = Step::kFailed;
  wipe();
  return fail(std::string("noise: ") + (was_failed ? "handshake already failed" : what));
}

void Handshake::mix_hash(std::span<const unsigned char> data) {
  crypto_hash_sha256_state sha;
  crypto_hash_sha256_init(&sha);
  crypto_hash_sha256_update(&sha, st_.h.data(), st_.h.size());
  crypto_hash_sha256_update(&sha, data.data(), data.size());
  crypto_hash_sha256_final(&sha, st_.h.data());
}

bool Handshake::mix_key_dh(const std::array<unsigned char, kNoiseKeyBytes>& secret, const NoisePublicKey& remote) {
  Bytes32 shared{};
  // libsodium refuses some low-order points itself (rc -1); the all-zero check (§12.1 allows
  // it, and it is what rules out every low-order key) does not depend on that.
  const bool ok = crypto_scalarmult(shared.data(), secret.data(), remote.data()) == 0 &&
                  sodium_is_zero(shared.data(), shared.size()) == 0;
  if (ok) {
    Bytes32 ck{};
    hkdf2(st_.ck, shared, ck, st_.k);  // MixKey: ck, temp_k = HKDF(ck, ikm, 2)
    st_.ck = ck;
    st_.n = 0;
    st_.has_k = true;
    sodium_memzero(ck.data(), ck.size());
  }
  sodium_memzero(shared.data(), shared.size());
  return ok;
}

void Handshake::encrypt_and_hash(std::span<const unsigned char> plain, std::vector<std::byte>& out) {
  // In IK every EncryptAndHash comes after a MixKey, so there is always a key.
  WEFT_CHECK(st_.has_k);
  const std::size_t at = out.size();
  out.resize(at + plain.size() + kNoiseTagBytes);
  auto* c = reinterpret_cast<unsigned char*>(out.data() + at);
  const auto nonce = chachapoly_nonce(st_.n++);
  unsigned long long clen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(c, &clen, plain.data(), plain.size(), st_.h.data(), st_.h.size(),
                                            nullptr, nonce.data(), st_.k.data());
  mix_hash({c, static_cast<std::size_t>(clen)});
}

bool Handshake::decrypt_and_hash(std::span<const unsigned char> cipher, unsigned char* plain_out) {
  WEFT_CHECK(st_.has_k && cipher.size() >= kNoiseTagBytes);
  const auto nonce = chachapoly_nonce(st_.n);
  unsigned long long plen = 0;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(plain_out, &plen, nullptr, cipher.data(), cipher.size(),
                                                st_.h.data(), st_.h.size(), nonce.data(), st_.k.data()) != 0) {
    return false;
  }
  ++st_.n;
  mix_hash(cipher);
  return true;
}

Result<std::vector<std::byte>> Handshake::write_message(std::span<const std::byte> payload) {
  if (step_ == Step::kFailed) return fail_with("");
  const bool initiator = role_ == HandshakeRole::kInitiator;
  if (step_ == Step::kFirst && initiator) return write_first(payload);
  if (step_ == Step::kSecond && !initiator) return write_second(payload);
  return fail_with(step_ == Step::kDone ? "write_message after the handshake completed"
                                        : "write_message out of turn");
}

Result<std::vector<std::byte>> Handshake::read_message(std::span<const std::byte> message) {
  if (step_ == Step::kFailed) return fail_with("");
  const bool initiator = role_ == HandshakeRole::kInitiator;
  if (step_ == Step::kFirst && !initiator) return read_first(message);
  if (step_ == Step::kSecond && initiator) return read_second(message);
  return fail_with(step_ == Step::kDone ? "read_message after the handshake completed"
                                        : "read_message out of turn");
}

// -> e, es, s, ss
Result<std::vector<std::byte>> Handshake::write_first(std::span<const std::byte> payload) {
  if (payload.size() > kNoiseMaxMessage - kMessage1Overhead) return fail_with("message 1 payload too large");
  std::vector<std::byte> out;
  out.reserve(kMessage1Overhead + payload.size());
  const auto* e_pub = reinterpret_cast<const std::byte*>(st_.e.public_key.data());
  out.insert(out.end(), e_pub, e_pub + kNoiseKeyBytes);
  mix_hash(st_.e.public_key);
  if (!mix_key_dh(st_.e.secret_key, st_.rs)) return fail_with("es: the responder's static key is invalid");
  encrypt_and_hash(st_.s.public_key, out);
  if (!mix_key_dh(st_.s.secret_key, st_.rs)) return fail_with("ss: the responder's static key is invalid");
  encrypt_and_hash(as_uchar(payload), out);
  step_ = Step::kSecond;
  return out;
}

// <- e, ee, se
Result<std::vector<std::byte>> Handshake::write_second(std::span<const std::byte> payload) {
  if (payload.size() > kNoiseMaxMessage - kMessage2Overhead) return fail_with("message 2 payload too large");
  std::vector<std::byte> out;
  out.reserve(kMessage2Overhead + payload.size());
  const auto* e_pub = reinterpret_cast<const std::byte*>(st_.e.public_key.data());
  out.insert(out.end(), e_pub, e_pub + kNoiseKeyBytes);
  mix_hash(st_.e.public_key);
  if (!mix_key_dh(st_.e.secret_key, st_.re)) return fail_with("ee: invalid ephemeral key");
  if (!mix_key_dh(st_.e.secret_key, st_.rs)) return fail_with("se: invalid static key");
  encrypt_and_hash(as_uchar(payload), out);
  step_ = Step::kDone;
  return out;
}

Result<std::vector<std::byte>> Handshake::read_first(std::span<const std::byte> message) {
  if (message.size() < kMessage1Overhead) return fail_with("message 1 too short");
  if (message.size() > kNoiseMaxMessage) return fail_with("message 1 too long");
  const auto* in = as_uchar(message.data());
  std::copy_n(in, kNoiseKeyBytes, st_.re.begin());
  mix_hash(st_.re);
  if (!mix_key_dh(st_.s.secret_key, st_.re)) return fail_with("es: invalid ephemeral key");
  if (!decrypt_and_hash({in + kNoiseKeyBytes, kNoiseKeyBytes + kNoiseTagBytes}, st_.rs.data())) {
    return fail_with("message 1: the static key does not authenticate");
  }
  st_.has_rs = true;
  if (!mix_key_dh(st_.s.secret_key, st_.rs)) return fail_with("ss: invalid static key");
  const std::size_t payload_at = 2 * kNoiseKeyBytes + kNoiseTagBytes;
  std::vector<std::byte> payload(message.size() - kMessage1Overhead);
  if (!decrypt_and_hash({in + payload_at, message.size() - payload_at},
                        reinterpret_cast<unsigned char*>(payload.data()))) {
    return fail_with("message 1: the payload does not authenticate");
  }
  step_ = Step::kSecond;
  return payload;
}

Result<std::vector<std::byte>> Handshake::read_second(std::span<const std::byte> message) {
  if (message.size() < kMessage2Overhead) return fail_with("message 2 too short");
  if (message.size() > kNoiseMaxMessage) return fail_with("message 2 too long");
  const auto* in = as_uchar(message.data());
  std::copy_n(in, kNoiseKeyBytes, st_.re.begin());
  mix_hash(st_.re);
  if (!mix_key_dh(st_.e.secret_key, st_.re)) return fail_with("ee: invalid ephemeral key");
  if (!mix_key_dh(st_.s.secret_key, st_.re)) return fail_with("se: invalid ephemeral key");
  std::vector<std::byte> payload(message.size() - kMessage2Overhead);
  if (!decrypt_and_hash({in + kNoiseKeyBytes, message.size() - kNoiseKeyBytes},
                        reinterpret_cast<unsigned char*>(payload.data()))) {
    return fail_with("message 2: the payload does not authenticate");
  }
  step_ = Step::kDone;
  return payload;
}

std::optional<NoisePublicKey> Handshake::remote_static() const {
  if (step_ == Step::kFailed || !st_.has_rs) return std::nullopt;
  return st_.rs;
}

std::optional<HandshakeHash> Handshake::handshake_hash() const {
  if (step_ != Step::kDone) return std::nullopt;
  return st_.h;
}

Result<SessionKeys> Handshake::split() {
  if (step_ != Step::kDone) return fail("noise: split before the handshake completed");
  if (split_done_) return fail("noise: split called twice");
  SessionKeys keys;
  hkdf2(st_.ck, {}, keys.initiator_to_responder, keys.responder_to_initiator);
  split_done_ = true;
  // The handshake's own secrets are no longer needed; h stays for handshake_hash().
  sodium_memzero(st_.ck.data(), st_.ck.size());
  sodium_memzero(st_.k.data(), st_.k.size());
  st_.e.wipe();
  sodium_memzero(st_.s.secret_key.data(), st_.s.secret_key.size());
  return keys;
}

Result<void> Handshake::set_ephemeral_for_testing(const NoiseKeyPair& ephemeral) {
  // The ephemeral key is first used by the first message this side writes.
  const bool unused = (role_ == HandshakeRole::kInitiator && step_ == Step::kFirst) ||
                      (role_ == HandshakeRole::kResponder && (step_ == Step::kFirst || step_ == Step::kSecond));
  if (!unused) return fail("noise: the ephemeral key is already in use");
  st_.e = ephemeral;
  return {};
}

}  // namespace weft::transport
