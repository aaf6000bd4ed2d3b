#pragma once
// Operator-signed cluster-key operations (issue 5): with a trust root configured, an agent
// applies `weft keys install / use / remove` only when the step carries a document signed by a
// trusted operator key, from its local CLI and from other agents alike. A cluster-key holder
// without an operator key can then no longer change the members' keyrings.
//
// Wire format (msgpack), like policies and revocation lists (shared envelope, trust_codec.h):
//
//   envelope  [body:bin, sig:bin64]
//   body      [1, issuer:bin8, cluster:str, op:uint8, key_id:uint32, fingerprint:bin32 | nil,
//              issued:int (unix s), expires:int (unix s), nonce:bin16]
//   sig       Ed25519(operator sk, kKeyOpContext || body) over the exact body bytes.
//
// The document names the key, never carries it: `key_id` is the keyring's 32-bit id (what
// `weft keys list` prints) and `fingerprint` a 256-bit hash of the key (key_fingerprint), which a
// key holder cannot match with another key of its choosing. `install` must carry the
// fingerprint (the key itself travels beside the document, sealed by the cluster transport as
// before); `use` and `remove` may name the key by id only (the key must already be installed,
// which for a signed cluster took a signed install).
//
// Freshness: a document is valid from `issued` (minus kKeyOpSkew of clock skew) until
// `expires`, at most kMaxKeyOpLifetime later. The random nonce makes each document single-use:
// an agent remembers the nonces it accepted until their expiry (KeyOpReplayGuard), so a captured
// document cannot be applied again, on that agent, while it is valid.
//
// No clock reads: `now` is an argument everywhere.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/keyring.h"
#include "weft/transport/trust.h"

namespace weft::transport {

// Signed before the body (the trailing 0 byte is part of it); differs from every other context.
inline constexpr std::string_view kKeyOpContext{"weft key operation v1\0", 22};
inline constexpr std::string_view kLabelKeyOp = "WEFT KEY OPERATION";
inline constexpr std::size_t kMaxKeyOpBytes = 1024;  // envelope
inline constexpr std::chrono::seconds kMaxKeyOpLifetime{600};
inline constexpr std::chrono::seconds kDefaultKeyOpLifetime{600};
inline constexpr std::chrono::seconds kKeyOpSkew{300};  // an `issued` this far ahead is accepted
inline constexpr std::size_t kKeyOpNonceBytes = 16;

// append-only: values are on the wire
enum class KeyOpKind : std::uint8_t { kInstall = 1, kUse = 2, kRemove = 3 };
[[nodiscard]] const char* to_string(KeyOpKind k);  // "install" | "use" | "remove"
[[nodiscard]] std::optional<KeyOpKind> parse_key_op_kind(std::string_view s);

using KeyFingerprint = std::array<unsigned char, 32>;
using KeyOpNonce = std::array<unsigned char, kKeyOpNonceBytes>;
// BLAKE2b-256 of a domain label and the key: names a key in documents and logs without revealing it.
[[nodiscard]] KeyFingerprint key_fingerprint(const Key& key);
[[nodiscard]] KeyOpNonce random_key_op_nonce();

struct KeyOperation {
  IssuerId issuer{};  // set by sign_key_op
  std::string cluster;
  KeyOpKind op = KeyOpKind::kInstall;
  KeyId key_id = 0;
  std::optional<KeyFingerprint> fingerprint;  // required for install
  UnixTime issued{};
  UnixTime expires{};
  KeyOpNonce nonce{};  // not all zero
  friend bool operator==(const KeyOperation&, const KeyOperation&) = default;
};

// Field checks shared by sign and decode: cluster name, op, fingerprint for install, times
// (issued < expires <= issued + kMaxKeyOpLifetime), a non-zero nonce.
[[nodiscard]] Result<void> check_key_op(const KeyOperation& k);
// Checks the fields, sets k.issuer from `key`, returns the envelope bytes.
[[nodiscard]] Result<std::vector<std::byte>> sign_key_op(KeyOperation k, const OperatorKey& key);
[[nodiscard]] std::string armor_key_op(std::span<const std::byte> envelope);
[[nodiscard]] Result<std::vector<std::byte>> unarmor_key_op(std::string_view text);

// Why a key operation was refused. append-only: values appear in stats and logs.
enum class KeyOpError : std::uint8_t {
  kUnsigned = 1,      // no document, and the agent has a trust root
  kMalformed = 2,
  kUnknownIssuer = 3,
  kBadSignature = 4,
  kWrongCluster = 5,
  kNotYetValid = 6,   // issued more than kKeyOpSkew ahead of now
  kExpired = 7,
  kWrongOperation = 8,  // signed for another op (install / use / remove)
  kWrongKey = 9,        // signed for another key (id or fingerprint)
  kReplayed = 10,       // its nonce was accepted before
};
inline constexpr std::size_t kKeyOpErrorCount = 11;  // index 0 unused
[[nodiscard]] const char* to_string(KeyOpError e);  // "unsigned", "bad signature", ...

struct KeyOpFailure {
  KeyOpError kind = KeyOpError::kMalformed;
  std::string message;
};

struct DecodedKeyOp {
  KeyOperation op;
  std::vector<std::byte> body;  // the exact signed bytes
  Signature sig{};
};
[[nodiscard]] Result<DecodedKeyOp, KeyOpFailure> decode_key_op(std::span<const std::byte> envelope);

// The step an agent is asked to apply, as it knows it: the op and the key's id and fingerprint
// (for use/remove, of the installed key with that id).
struct KeyOpTarget {
  KeyOpKind op = KeyOpKind::kInstall;
  KeyId key_id = 0;
  KeyFingerprint fingerprint{};
};
// Valid iff it decodes, its issuer is trusted and the signature verifies, its cluster is
// `cluster`, issued - kKeyOpSkew <= now < expires, and it names `target`'s op, key id and (when
// it carries one) fingerprint. In that order. Replays are the caller's (KeyOpReplayGuard).
[[nodiscard]] Result<KeyOperation, KeyOpFailure> verify_key_op(std::span<const std::byte> envelope,
                                                               std::span<const SignPublicKey> trusted,
                                                               std::string_view cluster,
                                                               const KeyOpTarget& target, UnixTime now);

// The nonces of accepted key operations, each until its document expires. Bounded: only
// operator-signed documents are recorded, and when `capacity` unexpired ones are held a new one
// is refused (as a replay would be) rather than forgetting one that could then be replayed.
class KeyOpReplayGuard {
 public:
  explicit KeyOpReplayGuard(std::size_t capacity = 4096) : capacity_(capacity) {}
  // True if `nonce` was accepted before and has not expired at `now`.
  [[nodiscard]] bool seen(const KeyOpNonce& nonce, UnixTime now);
  // Records an accepted document; false (nothing recorded) if seen or full.
  [[nodiscard]] bool record(const KeyOpNonce& nonce, UnixTime expires, UnixTime now);
  [[nodiscard]] std::size_t size() const { return nonces_.size(); }

 private:
  void prune(UnixTime now);
  std::size_t capacity_;
  std::map<KeyOpNonce, UnixTime> nonces_;
};

}  // namespace weft::transport
