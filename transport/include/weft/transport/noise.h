#pragma once
// The handshake that opens every data-plane connection: Noise_IK_25519_ChaChaPoly_SHA256
// (Noise Protocol Framework, revision 34), built on libsodium. Pure computation: no sockets, no
// clock; the caller carries the two messages and then hands split()'s keys to the record layer
// (record.h).
//
//   <- s                  the initiator knows the responder's static key beforehand (gossip)
//   ...
//   -> e, es, s, ss       message 1
//   <- e, ee, se          message 2
//
// Message 1 (initiator -> responder), kMessage1Overhead = 96 bytes plus the payload:
//
//   0              32                             80
//   +--------------+------------------------------+----------------------------------+
//   | e (32)       | enc(s) (32) || tag (16)      | enc(payload) || tag (16)         |
//   +--------------+------------------------------+----------------------------------+
//
// Message 2 (responder -> initiator), kMessage2Overhead = 48 bytes plus the payload:
//
//   0              32
//   +--------------+----------------------------------+
//   | e (32)       | enc(payload) || tag (16)         |
//   +--------------+----------------------------------+
//
// What the payloads get (spec §7.7): message 1's payload is readable only by the responder's
// static key, but it has no forward secrecy against that key's later theft and can be replayed
// to the responder; message 2's payload and all traffic after split() have forward secrecy and
// are bound to both static keys. So the layer above negotiates in message 2 (the responder picks)
// and treats message 1's payload as an offer only. The responder learns who is calling
// (remote_static()) after reading message 1 and must decide whether to answer.
//
// Every malformed input (wrong length, bad tag, a low-order key that makes a DH output all zero)
// and every call out of order gives a Result error; after the first error the handshake refuses
// everything (no second try with the same keys: a decryption oracle is what that would offer).

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "weft/base/result.h"

namespace weft::transport {

inline constexpr std::string_view kNoiseProtocolName = "Noise_IK_25519_ChaChaPoly_SHA256";
inline constexpr std::size_t kNoiseKeyBytes = 32;    // X25519 keys, ChaChaPoly keys, DH outputs
inline constexpr std::size_t kNoiseHashBytes = 32;   // SHA-256
inline constexpr std::size_t kNoiseTagBytes = 16;    // Poly1305
inline constexpr std::size_t kNoiseMaxMessage = 65535;  // spec §3: every Noise message
inline constexpr std::size_t kMessage1Overhead = kNoiseKeyBytes + kNoiseKeyBytes + 2 * kNoiseTagBytes;  // 96
inline constexpr std::size_t kMessage2Overhead = kNoiseKeyBytes + kNoiseTagBytes;                       // 48

using NoisePublicKey = std::array<unsigned char, kNoiseKeyBytes>;
using NoiseKey = std::array<unsigned char, kNoiseKeyBytes>;  // a symmetric key
using HandshakeHash = std::array<unsigned char, kNoiseHashBytes>;

// An X25519 key pair. NodeIdentity's kx_pk / kx_sk are one: NoiseKeyPair{id.kx_pk, id.kx_sk}.
// A plain aggregate: whoever holds a copy wipes it (wipe()) when done.
struct NoiseKeyPair {
  NoisePublicKey public_key{};
  std::array<unsigned char, kNoiseKeyBytes> secret_key{};

  static NoiseKeyPair generate();
  // The public key computed from `secret` (X25519 clamps the scalar itself).
  static NoiseKeyPair from_secret(const std::array<unsigned char, kNoiseKeyBytes>& secret);
  void wipe();
};

enum class HandshakeRole : std::uint8_t { kInitiator = 0, kResponder = 1 };

// The two transport keys from split(): one per direction, wiped on destruction.
struct SessionKeys {
  NoiseKey initiator_to_responder{};
  NoiseKey responder_to_initiator{};

  ~SessionKeys();
  [[nodiscard]] const NoiseKey& send_key(HandshakeRole self) const {
    return self == HandshakeRole::kInitiator ? initiator_to_responder : responder_to_initiator;
  }
  [[nodiscard]] const NoiseKey& receive_key(HandshakeRole self) const {
    return self == HandshakeRole::kInitiator ? responder_to_initiator : initiator_to_responder;
  }
};

class Handshake {
 public:
  // `prologue` is hashed in by both sides (spec §6): a mismatch fails message 1's tags. The layer
  // above puts its version and the cipher list it offers there, so neither can be downgraded.
  static Handshake initiator(const NoiseKeyPair& self, const NoisePublicKey& responder_static,
                             std::span<const std::byte> prologue);
  static Handshake responder(const NoiseKeyPair& self, std::span<const std::byte> prologue);

  ~Handshake();  // wipes every secret (keys, chaining key)
  Handshake(const Handshake&) = delete;
  Handshake& operator=(const Handshake&) = delete;
  // A moved-from handshake is wiped and refuses everything.
  Handshake(Handshake&& o) noexcept;
  Handshake& operator=(Handshake&& o) noexcept;

  // Initiator: message 1, then (after read_message) nothing. Responder: message 2 after reading
  // message 1. The payload may be empty; at most kNoiseMaxMessage minus the overhead.
  [[nodiscard]] Result<std::vector<std::byte>> write_message(std::span<const std::byte> payload);
  // Responder: message 1 first. Initiator: message 2 after writing message 1. Returns the payload.
  [[nodiscard]] Result<std::vector<std::byte>> read_message(std::span<const std::byte> message);

  [[nodiscard]] HandshakeRole role() const { return role_; }
  [[nodiscard]] bool complete() const { return step_ == Step::kDone; }
  [[nodiscard]] bool failed() const { return step_ == Step::kFailed; }
  // Initiator: the key it was given. Responder: the caller's key, once message 1 was read.
  [[nodiscard]] std::optional<NoisePublicKey> remote_static() const;
  // Identifies this session (spec §11.2: channel binding); available once complete.
  [[nodiscard]] std::optional<HandshakeHash> handshake_hash() const;
  // The transport keys, once complete. Once only: afterwards the chaining key is wiped.
  [[nodiscard]] Result<SessionKeys> split();

  // TEST ONLY (published test vectors fix the ephemeral key): replaces the random ephemeral key
  // this side will send. Refused once the ephemeral key has been used. Never call it in
  // production: a repeated ephemeral key destroys the forward secrecy of message 2 onwards.
  [[nodiscard]] Result<void> set_ephemeral_for_testing(const NoiseKeyPair& ephemeral);

 private:
  enum class Step : std::uint8_t { kFirst, kSecond, kDone, kFailed };

  // All secret state in one trivially copyable block, so that one sodium_memzero wipes it.
  struct State {
    NoiseKeyPair s;               // own static
    NoiseKeyPair e;               // own ephemeral
    NoisePublicKey rs{};          // remote static
    NoisePublicKey re{};          // remote ephemeral
    std::array<unsigned char, kNoiseHashBytes> ck{};  // chaining key
    HandshakeHash h{};
    NoiseKey k{};                 // CipherState key
    std::uint64_t n = 0;          // CipherState nonce
    bool has_k = false;
    bool has_rs = false;
  };

  Handshake(HandshakeRole role, const NoiseKeyPair& self, std::span<const std::byte> prologue);
  void wipe();
  Unexpected<Error> fail_with(const char* what);

  // SymmetricState (spec §5.2).
  void mix_hash(std::span<const unsigned char> data);
  [[nodiscard]] bool mix_key_dh(const std::array<unsigned char, kNoiseKeyBytes>& secret,
                                const NoisePublicKey& remote);
  void encrypt_and_hash(std::span<const unsigned char> plain, std::vector<std::byte>& out);
  [[nodiscard]] bool decrypt_and_hash(std::span<const unsigned char> cipher, unsigned char* plain_out);

  Result<std::vector<std::byte>> write_first(std::span<const std::byte> payload);
  Result<std::vector<std::byte>> write_second(std::span<const std::byte> payload);
  Result<std::vector<std::byte>> read_first(std::span<const std::byte> message);
  Result<std::vector<std::byte>> read_second(std::span<const std::byte> message);

  State st_{};
  HandshakeRole role_;
  Step step_ = Step::kFirst;
  bool split_done_ = false;
};

}  // namespace weft::transport
