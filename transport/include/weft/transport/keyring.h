#pragma once
// Cluster keys and the seal that wraps every gossip datagram and every reliable message.
//
// Sealed wire picture (all integers big-endian):
//
//   0        1                5                    17
//   +--------+----------------+--------------------+---------------------------+
//   | ver=1  | key id (4)     | nonce (12, random) | ciphertext || tag (16)    |
//   +--------+----------------+--------------------+---------------------------+
//
// ChaCha20-Poly1305 (IETF) from libsodium; the additional data is the 5 header bytes followed by
// one Purpose byte, so a datagram cannot be replayed as a reliable message or the other way
// round. Nonces are random, as memberlist's AES-GCM ones: with 96 bits, a repeat under one key
// has probability ~n^2 / 2^97 after n seals (2^-33 after 2^32 datagrams cluster-wide); keys are
// rotated long before that (weft keys). The 12 bytes saved against XChaCha20's 24-byte nonce
// are ~10 % of an idle member's gossip traffic (a sealed ping is ~60 bytes). The key id names the key (no trial decryption): the first 4 bytes of
// BLAKE2b-256("weft cluster key id" || key).
//
// Plaintext mode (no key installed; `--insecure-plaintext`): one byte 0x00, then the payload.
// A keyed ring refuses plaintext input and a plaintext ring refuses sealed input.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/result.h"

namespace weft::transport {

inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::uint8_t kSealVersion = 1;
inline constexpr std::uint8_t kPlainVersion = 0;
inline constexpr std::size_t kSealHeaderBytes = 1 + 4 + 12;
inline constexpr std::size_t kSealTagBytes = 16;
inline constexpr std::size_t kSealOverhead = kSealHeaderBytes + kSealTagBytes;  // 33

using Key = std::array<unsigned char, kKeyBytes>;
using KeyId = std::uint32_t;

[[nodiscard]] KeyId key_id(const Key& key);
// Key ids are shown as 8 lowercase hex digits.
[[nodiscard]] std::string format_key_id(KeyId id);
// Keys travel as standard base64 (44 characters), as `serf keygen` prints them.
[[nodiscard]] std::string format_key(const Key& key);
[[nodiscard]] Result<Key> parse_key(std::string_view base64);
[[nodiscard]] Key generate_key();  // libsodium randombytes

// append-only: values are bound into the additional data of every seal
enum class Purpose : std::uint8_t { kDatagram = 1, kStream = 2 };

// append-only: values index stats arrays exported to users
enum class OpenError : std::uint8_t {
  kTooShort = 0,       // shorter than a header plus tag
  kBadVersion = 1,     // first byte is neither 0 nor 1
  kUnknownKey = 2,     // key id not in the ring
  kAuthFailed = 3,     // tag does not verify (wrong key, tampering, wrong purpose)
  kPlaintext = 4,      // plaintext input to a keyed ring
  kSealedNoKey = 5,    // sealed input to a plaintext ring
};
inline constexpr std::size_t kOpenErrorCount = 6;
const char* to_string(OpenError e);

class Keyring {
 public:
  Keyring() = default;  // empty: plaintext mode
  ~Keyring();           // wipes key material
  // Copies and moves wipe the key material they overwrite or leave behind.
  Keyring(const Keyring& o);
  Keyring& operator=(const Keyring& o);
  Keyring(Keyring&& o) noexcept;
  Keyring& operator=(Keyring&& o) noexcept;

  // Adds a key (no-op if present). The first key installed becomes primary.
  void install(const Key& key);
  // Makes an installed key the primary (the one that seals).
  Result<void> use(KeyId id);
  // Removes a key; the primary cannot be removed.
  Result<void> remove(KeyId id);

  [[nodiscard]] bool plaintext() const { return keys_.empty(); }
  [[nodiscard]] std::optional<KeyId> primary() const;
  [[nodiscard]] std::vector<KeyId> ids() const;  // primary first, then in install order
  [[nodiscard]] const Key* find(KeyId id) const;
  [[nodiscard]] std::vector<Key> keys() const;   // primary first (for persisting)
  // Bytes a seal adds to a payload: kSealOverhead, or 1 in plaintext mode.
  [[nodiscard]] std::size_t overhead() const { return plaintext() ? 1 : kSealOverhead; }

  // Appends the sealed form of `plain` to `out` (`plain` must not point into `out`).
  void seal(Purpose purpose, std::span<const std::byte> plain, std::vector<std::byte>& out) const;
  // Opens `sealed` into `out` (replacing its contents). Never throws; nothing is allocated before
  // the header is checked.
  [[nodiscard]] Result<void, OpenError> open(Purpose purpose, std::span<const std::byte> sealed,
                                             std::vector<std::byte>& out) const;

 private:
  struct Entry {
    KeyId id;
    Key key;
  };
  void wipe();  // zeroes every entry (the vector keeps its size)

  std::vector<Entry> keys_;  // keys_[primary_] seals
  std::size_t primary_ = 0;
};

}  // namespace weft::transport
