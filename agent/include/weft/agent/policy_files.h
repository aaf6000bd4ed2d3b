#pragma once
// The offline policy commands behind `weft policy sign` and `weft policy show FILE` (issue 5):
// the TOML policy file, the operator key and the armored signed policy, around weft::transport's
// policy.h, so that the CLI needs neither transport nor store. No clock reads: `now` comes from
// the caller. Errors are one line naming the file and the field (and its line in a TOML file).
//
// The TOML format (docs/security.md):
//   cluster = "default"                 # required: the agent's --cluster name
//   version = 2                         # required, 1..2^63-1; agents accept only a higher one
//   expires = "2027-01-01T00:00:00Z"    # optional, RFC 3339 in UTC (quoted or a TOML date-time)
//   default = "deny"                    # optional, deny unless set: allow | deny | shadow-deny
//   [[rule]]
//   from = "client"                     # a service name or "*"
//   to = "web"                          # a service name or "*"
//   action = "allow"                    # allow | deny | shadow-deny
//   rate = { per_second = 100, burst = 20 }   # optional: new connections per (from -> to)
//   connect_timeout = "2s"              # optional
//   idle_timeout = "5m"                 # optional
//   retries = 2                         # optional: connect retries to other instances
// Unknown keys are errors: a typo must never silently widen access.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "weft/agent/trust_files.h"
#include "weft/base/result.h"

namespace weft::agent {

struct PolicySignRequest {
  std::string file;             // the TOML policy
  std::string operator_key;     // operator.key
  std::string passphrase_file;  // empty: none
  std::string out;              // the armored signed policy to write
};
// Parses and checks the TOML file, signs it and writes `out`; returns what policy_show prints
// for it (without verification).
[[nodiscard]] Result<nlohmann::json> policy_sign(const PolicySignRequest& req);

// Every field of the policy in FILE, a signed policy ("signed": true, with its issuer) or a TOML
// file ("signed": false). With `operator_pubs` (signed files only), also "verification":
// {"valid": bool, "status": "valid" | "malformed" | "unknown issuer" | "bad signature" |
// "wrong cluster" | "expired", "reason": "..."} at `now`, against `cluster` (empty: the policy's
// own cluster).
[[nodiscard]] Result<nlohmann::json> policy_show(const std::string& file,
                                                 const std::vector<std::string>& operator_pubs,
                                                 const std::string& cluster, UnixSeconds now);

// What policy_show prints for a signed policy envelope (decoded, the signature not checked): the
// agent's `policy` RPC uses it for the policy it holds, so both show the same fields.
[[nodiscard]] Result<nlohmann::json> describe_policy(std::span<const std::byte> envelope);

}  // namespace weft::agent
