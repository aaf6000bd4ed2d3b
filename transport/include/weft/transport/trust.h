#pragma once
// The trust root (issue 5): an offline Ed25519 operator key signs node certificates that bind a
// node name to the node's signing and key-exchange public keys (transport/identity.h), the
// services it may serve and call, and a validity window. Agents verify certificates against one
// or more trusted operator public keys (two during a root rotation).
//
// Files are text, PEM-like, so operators can copy and paste them:
//
//   -----BEGIN WEFT NODE CERTIFICATE-----
//   <base64 (standard alphabet, padded), wrapped at 64 columns>
//   -----END WEFT NODE CERTIFICATE-----
//
// Inside the armor is msgpack; every structure starts with its format version (kTrustFormatV1):
//
//   operator public key   [1, pk:bin32]
//   operator secret key   [1, 0, pk:bin32, seed:bin32]                                  plain
//                         [1, 1, pk:bin32, salt:bin16, opslimit, memlimit, nonce:bin24,
//                          secretbox(seed):bin48]                         passphrase (Argon2id13)
//   node public keys      [1, sign_pk:bin32, kx_pk:bin32]
//   node certificate      [body:bin, sig:bin64]   (the envelope; what is stored and forwarded)
//     body                [1, serial:uint64, issuer:bin8, node:str, sign_pk:bin32, kx_pk:bin32,
//                          services:[str...], not_before:int (unix s), not_after:int (unix s)]
//     sig                 Ed25519(operator sk, kCertContext || body)  -- detached, over the exact
//                         body bytes, which are never re-encoded before they are verified.
//
// Every decoder takes untrusted bytes: each length and type is checked, limits apply before
// allocating, and a bad input is a Result error naming the problem, never an exception or crash.
// No clock reads: `now` is an argument.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/identity.h"

namespace weft::transport {

using UnixTime = std::chrono::sys_seconds;

inline constexpr std::uint64_t kTrustFormatV1 = 1;
// Signed before the certificate body (the trailing 0 byte is part of it): a signature made for
// any other purpose with the operator key can never pass as a certificate signature.
inline constexpr std::string_view kCertContext{"weft node certificate v1\0", 25};

inline constexpr std::string_view kLabelOperatorSecret = "WEFT OPERATOR SECRET KEY";
inline constexpr std::string_view kLabelOperatorPublic = "WEFT OPERATOR PUBLIC KEY";
inline constexpr std::string_view kLabelNodePublic = "WEFT NODE PUBLIC KEYS";
inline constexpr std::string_view kLabelCert = "WEFT NODE CERTIFICATE";

// Limits, checked before allocating.
inline constexpr std::size_t kMaxArmoredBytes = 64 * 1024;  // a whole armored file
inline constexpr std::size_t kMaxCertBytes = 16 * 1024;     // envelope bytes
inline constexpr std::size_t kMaxCertServices = 256;
inline constexpr std::size_t kMaxTrustNameBytes = 128;  // node and service names
// Certificate times lie in [1970-01-01, 9999-12-31T23:59:59Z]: RFC 3339 can print them and no
// arithmetic on them can overflow.
inline constexpr std::int64_t kMaxCertUnixSeconds = 253'402'300'799;
// Clock difference between the signer and the verifier that verify_cert callers tolerate.
inline constexpr std::chrono::seconds kDefaultCertSkew{300};

using SignPublicKey = std::array<unsigned char, 32>;
using KxPublicKey = std::array<unsigned char, 32>;
using IssuerId = std::array<unsigned char, 8>;
using Signature = std::array<unsigned char, 64>;

// First 8 bytes of BLAKE2b-256 of the operator public key.
[[nodiscard]] IssuerId issuer_id(const SignPublicKey& operator_pk);
[[nodiscard]] std::string to_hex(std::span<const unsigned char> bytes);
[[nodiscard]] std::string to_base64(std::span<const unsigned char> bytes);
// "2026-11-27T04:41:00Z"
[[nodiscard]] std::string format_rfc3339(UnixTime t);

// Node and service names in certificates: 1..128 bytes of [A-Za-z0-9._-], the agent's alphabet
// (agent/config.h check_node_name). `what` names the field in the message.
[[nodiscard]] Result<void> check_trust_name(std::string_view what, std::string_view name);

// ---- armor ----
[[nodiscard]] std::string armor(std::string_view label, std::span<const std::byte> payload);
// The payload of the one block with `label` in `text` (surrounding blank lines allowed). A block
// with another label is an error naming both ("a WEFT OPERATOR PUBLIC KEY, not ...").
[[nodiscard]] Result<std::vector<std::byte>> unarmor(std::string_view text, std::string_view label);

// ---- operator key ----
struct KdfLimits {
  std::uint64_t opslimit;
  std::size_t memlimit;
  static KdfLimits moderate();     // crypto_pwhash_*_MODERATE: ~1 s, 256 MiB (the CLI's)
  static KdfLimits interactive();  // crypto_pwhash_*_INTERACTIVE: for tests
};

class OperatorKey {
 public:
  static OperatorKey generate();
  static OperatorKey from_seed(const std::array<unsigned char, 32>& seed);
  OperatorKey(const OperatorKey&);
  OperatorKey& operator=(const OperatorKey&);
  ~OperatorKey();  // wipes the secret key

  [[nodiscard]] const SignPublicKey& public_key() const { return pk_; }
  [[nodiscard]] IssuerId issuer() const { return issuer_id(pk_); }
  [[nodiscard]] Signature sign(std::span<const std::byte> message) const;

  // The armored secret key file; with a passphrase the seed is sealed by crypto_secretbox under
  // a key that Argon2id13 derives with `limits` and a random salt (both stored in the file).
  [[nodiscard]] std::string encode_secret(std::optional<std::string_view> passphrase,
                                          KdfLimits limits = KdfLimits::moderate()) const;
  [[nodiscard]] std::string encode_public() const;

 private:
  OperatorKey() = default;
  SignPublicKey pk_{};
  std::array<unsigned char, 64> sk_{};
};

// An operator secret key file, parsed but not unlocked.
struct OperatorSecretFile {
  SignPublicKey pk{};
  bool passphrase_protected = false;
  std::vector<std::byte> salt, nonce, sealed;  // protected only
  std::uint64_t opslimit = 0, memlimit = 0;
  std::array<unsigned char, 32> seed{};  // plain only
  OperatorSecretFile() = default;
  OperatorSecretFile(const OperatorSecretFile&) = default;
  OperatorSecretFile& operator=(const OperatorSecretFile&) = default;
  ~OperatorSecretFile();  // wipes the seed
};
[[nodiscard]] Result<OperatorSecretFile> parse_operator_secret(std::string_view text);
// The key; a protected file needs the passphrase ("wrong passphrase" if it does not open it).
// A passphrase given for a plain file is ignored.
[[nodiscard]] Result<OperatorKey> unlock_operator_secret(const OperatorSecretFile& file,
                                                         std::optional<std::string_view> passphrase);
[[nodiscard]] Result<SignPublicKey> decode_operator_public(std::string_view text);

// ---- node public keys (node.pub) ----
struct NodePublicKeys {
  SignPublicKey sign_pk{};
  KxPublicKey kx_pk{};
  friend bool operator==(const NodePublicKeys&, const NodePublicKeys&) = default;
};
[[nodiscard]] NodePublicKeys public_keys(const NodeIdentity& id);
[[nodiscard]] std::string encode_node_public(const NodePublicKeys& keys);
[[nodiscard]] Result<NodePublicKeys> decode_node_public(std::string_view text);

// ---- node certificates ----
struct NodeCert {
  std::uint64_t version = kTrustFormatV1;
  std::uint64_t serial = 0;
  IssuerId issuer{};
  std::string node;
  SignPublicKey sign_pk{};
  KxPublicKey kx_pk{};
  std::vector<std::string> services;  // what the node may serve and call; empty = none
  UnixTime not_before{};
  UnixTime not_after{};
  friend bool operator==(const NodeCert&, const NodeCert&) = default;
};

// A random non-zero serial (libsodium's CSPRNG).
[[nodiscard]] std::uint64_t random_serial();

// Checks the fields, sets cert.issuer from `key`, and returns the envelope bytes [body, sig].
[[nodiscard]] Result<std::vector<std::byte>> sign_cert(NodeCert cert, const OperatorKey& key);
[[nodiscard]] std::string armor_cert(std::span<const std::byte> envelope);
// The envelope bytes inside an armored certificate file (not verified).
[[nodiscard]] Result<std::vector<std::byte>> unarmor_cert(std::string_view text);

// Why a certificate was refused. append-only: values appear in stats and logs.
enum class CertError : std::uint8_t {
  kMalformed = 1,
  kUnknownIssuer = 2,
  kBadSignature = 3,
  kNotYetValid = 4,
  kExpired = 5,
};
[[nodiscard]] const char* to_string(CertError e);

struct CertFailure {
  CertError kind = CertError::kMalformed;
  std::string message;
};

struct DecodedCert {
  NodeCert cert;
  std::vector<std::byte> body;  // the exact signed bytes
  Signature sig{};
};
// Parses the envelope and body without checking the signature (for `weft cert show`).
[[nodiscard]] Result<DecodedCert, CertFailure> decode_cert(std::span<const std::byte> envelope);

// Valid iff it decodes, its issuer is one of `trusted`, the signature over kCertContext || body
// verifies with that key, and not_before - skew <= now < not_after + skew.
[[nodiscard]] Result<NodeCert, CertFailure> verify_cert(std::span<const std::byte> envelope,
                                                        std::span<const SignPublicKey> trusted, UnixTime now,
                                                        std::chrono::seconds skew);

// The certificate names exactly this node's public keys (a peer presenting someone else's
// certificate fails here).
[[nodiscard]] bool cert_matches(const NodeCert& cert, const NodePublicKeys& keys);
[[nodiscard]] bool cert_matches(const NodeCert& cert, const NodeIdentity& id);

// Counters for verify_cert outcomes (the agent will export them with its stats).
struct CertStats {
  std::uint64_t verified = 0;
  std::uint64_t malformed = 0;
  std::uint64_t unknown_issuer = 0;
  std::uint64_t bad_signature = 0;
  std::uint64_t not_yet_valid = 0;
  std::uint64_t expired = 0;
  void count(const Result<NodeCert, CertFailure>& r);
};

// ---- files ----
// Reads a small text file (at most kMaxArmoredBytes).
[[nodiscard]] Result<std::string> read_text_file(const std::string& path);
// Creates `path` with `mode` (O_EXCL: an existing file is an error and is left alone) and writes
// `text`, fsynced.
[[nodiscard]] Result<void> write_new_file(const std::string& path, std::string_view text, unsigned mode);
// Writes `text` to a temporary file with `mode` and renames it over `path`.
[[nodiscard]] Result<void> replace_file(const std::string& path, std::string_view text, unsigned mode);

}  // namespace weft::transport
