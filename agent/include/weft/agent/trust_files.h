#pragma once
// The offline trust commands behind `weft operator init`, `weft identity init`, `weft cert sign`
// and `weft cert show` (issue 5): file handling around weft::transport's trust root, so that the
// CLI needs neither transport nor store. No clock reads: `now` comes from the caller.
// Errors are one line naming the file or field.

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "weft/base/result.h"
#include "weft/base/time.h"

namespace weft::agent {

using UnixSeconds = std::chrono::sys_seconds;

struct OperatorInitResult {
  std::string key_path;  // DIR/operator.key, 0600
  std::string pub_path;  // DIR/operator.pub
  std::string issuer;    // hex issuer id
};
// Creates DIR (0700) if missing and a new operator key pair in it; refuses to replace an existing
// DIR/operator.key. `passphrase_file` empty: the secret key is stored unencrypted.
[[nodiscard]] Result<OperatorInitResult> operator_init(const std::string& dir,
                                                       const std::string& passphrase_file);

struct IdentityInitResult {
  std::string pub_path;     // DATA_DIR/node.pub
  std::string fingerprint;  // as `weft info` shows it
  bool created = false;     // false: the keys already existed and were kept
};
// What `weft agent` does to its identity at start: the keys in DATA_DIR's store are created if
// absent, then DATA_DIR/node.pub is (re)written.
[[nodiscard]] Result<IdentityInitResult> identity_init(const std::string& data_dir);

struct CertSignRequest {
  std::string operator_key;     // operator.key
  std::string passphrase_file;  // empty: none
  std::string node;
  std::string node_key;  // node.pub
  std::vector<std::string> services;
  Duration ttl{};
  UnixSeconds now{};
  std::string out;
};
// Signs and writes the certificate; returns what cert_show would print for it (without
// verification).
[[nodiscard]] Result<nlohmann::json> cert_sign(const CertSignRequest& req);

// Every field of the certificate in CERT_FILE. With `operator_pubs`, also
// "verification": {"valid": bool, "status": "valid" | "malformed" | "unknown issuer" |
// "bad signature" | "not yet valid" | "expired", "reason": "..."} at `now`, with the default skew.
[[nodiscard]] Result<nlohmann::json> cert_show(const std::string& cert_file,
                                               const std::vector<std::string>& operator_pubs,
                                               UnixSeconds now);

struct CertRevokeRequest {
  std::string operator_key;      // operator.key
  std::string passphrase_file;   // empty: none
  std::vector<std::uint64_t> serials;  // certificates of this operator key, by serial
  std::vector<std::string> certs;      // certificate files (their issuer and serial)
  std::string from;              // the previous list: its entries are kept; empty: none
  std::string cluster;           // empty: the previous list's, else "default"
  std::optional<std::uint64_t> version;  // default: max(now in unix seconds, previous + 1)
  UnixSeconds now{};
  std::string out;
};
// Signs and writes the next revocation list (the previous one's entries plus the new ones);
// returns what revocations_show prints for it: {"cluster", "version", "issuer",
// "revoked": [{"issuer", "serial"}...]}.
[[nodiscard]] Result<nlohmann::json> cert_revoke(const CertRevokeRequest& req);
// The list in FILE (not verified); with `operator_pubs` also "verification" as cert_show.
[[nodiscard]] Result<nlohmann::json> revocations_show(const std::string& file,
                                                      const std::vector<std::string>& operator_pubs);
// What revocations_show prints for a list envelope (decoded, the signature not checked): the
// agent's `revocations` RPC uses it for the list it holds.
[[nodiscard]] Result<nlohmann::json> describe_revocations(std::span<const std::byte> envelope);

// `weft keys install|use|remove KEY --operator-key FILE` (issue 5): signs the cluster-key
// operation `op` on `key` (base64; for use and remove also its 8-digit id) for `cluster`, valid
// from `now` for 10 minutes with a fresh nonce (transport/keyop.h). Returns the armored document
// the agent verifies. The key itself is not in it.
struct KeyOpSignRequest {
  std::string op;
  std::string key;
  std::string cluster;
  std::string operator_key;     // operator.key
  std::string passphrase_file;  // empty: none
  UnixSeconds now{};
};
[[nodiscard]] Result<std::string> key_op_sign(const KeyOpSignRequest& req);

}  // namespace weft::agent
