#pragma once
// Signed authorization policy (issue 5): which source service may open connections to which
// destination service, with optional rate limits, timeouts and a retry budget. The operator signs
// it offline; agents will spread it by gossip, store it and enforce it in the proxy (next steps),
// and every agent verifies it itself against its trusted operator keys.
//
// Wire format (msgpack, inside the armor "WEFT SIGNED POLICY"), like node certificates:
//
//   envelope  [body:bin, sig:bin64]          what is stored and forwarded, byte for byte
//   body      [1, issuer:bin8, cluster:str, version:uint64, expires:int (unix s) | nil,
//              default:uint8, rules:[rule...]]
//   rule      [from:str, to:str, action:uint8, rate:[per_second:uint32, burst:uint32] | nil,
//              connect_timeout_ms:uint64 | nil, idle_timeout_ms:uint64 | nil, retries:uint32 | nil]
//   sig       Ed25519(operator sk, kPolicyContext || body) over the exact body bytes, which are
//             never re-encoded before they are verified.
//
// kPolicyContext differs from kCertContext, so a certificate signature never passes as a policy
// signature and vice versa (the two bodies could otherwise be confused by a lenient decoder).
//
// Decision (decide()): a rule matches when its `from` equals the source service or is "*", and
// its `to` equals the destination or is "*". Among the matching rules deny > shadow-deny > allow
// (the first matching rule of the winning action is reported); no match -> the default action.
// shadow-deny is "log as if denied, let through": effective allow, shadow_denied = true.
//
// No clock reads: `now` is an argument everywhere.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/transport/trust.h"

namespace weft::transport {

// Signed before the policy body (the trailing 0 byte is part of it).
inline constexpr std::string_view kPolicyContext{"weft policy v1\0", 15};
inline constexpr std::string_view kLabelPolicy = "WEFT SIGNED POLICY";

// Limits, checked on sign and on decode before allocating.
inline constexpr std::size_t kMaxPolicyRules = 256;
inline constexpr std::size_t kMaxPolicyBytes = 40 * 1024;  // envelope; its armor fits kMaxArmoredBytes
inline constexpr std::uint32_t kMaxRatePerSecond = 1'000'000;
inline constexpr std::uint32_t kMaxRateBurst = 1'000'000;
inline constexpr std::chrono::milliseconds kMaxPolicyTimeout{std::chrono::hours(24)};
inline constexpr std::uint32_t kMaxPolicyRetries = 100;
inline constexpr std::string_view kPolicyWildcard = "*";

// append-only: values are on the wire
enum class PolicyAction : std::uint8_t {
  kAllow = 1,
  kDeny = 2,
  kShadowDeny = 3,  // log as if denied, let through
};
[[nodiscard]] const char* to_string(PolicyAction a);  // "allow" | "deny" | "shadow-deny"
[[nodiscard]] std::optional<PolicyAction> parse_policy_action(std::string_view s);

// New connections per second per (from -> to) pair, as a token bucket of `burst` tokens.
struct RateLimit {
  std::uint32_t per_second = 0;  // 1..kMaxRatePerSecond
  std::uint32_t burst = 0;       // 1..kMaxRateBurst
  friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

struct PolicyRule {
  std::string from;  // source service, or "*"
  std::string to;    // destination service, or "*"
  PolicyAction action = PolicyAction::kDeny;
  std::optional<RateLimit> rate;
  std::optional<std::chrono::milliseconds> connect_timeout;  // 1 ms..24 h
  std::optional<std::chrono::milliseconds> idle_timeout;     // 1 ms..24 h
  // Retry budget: how many times the initiating proxy may retry a failed connect to another
  // instance (0..kMaxPolicyRetries). A count, not a ratio: it bounds the amplification of one
  // request by itself, with no state shared across connections.
  std::optional<std::uint32_t> retries;
  friend bool operator==(const PolicyRule&, const PolicyRule&) = default;
};

struct Policy {
  IssuerId issuer{};          // set by sign_policy
  std::string cluster;        // the agent's --cluster name
  std::uint64_t version = 0;  // monotonic: agents accept only a higher one
  std::optional<UnixTime> expires;
  PolicyAction default_action = PolicyAction::kDeny;
  std::vector<PolicyRule> rules;
  friend bool operator==(const Policy&, const Policy&) = default;
};

// The field checks that sign and decode share: names (check_trust_name or "*"), counts, bounds.
[[nodiscard]] Result<void> check_policy(const Policy& p);

// Checks the fields, sets p.issuer from `key`, returns the envelope bytes [body, sig].
[[nodiscard]] Result<std::vector<std::byte>> sign_policy(Policy p, const OperatorKey& key);
[[nodiscard]] std::string armor_policy(std::span<const std::byte> envelope);
[[nodiscard]] Result<std::vector<std::byte>> unarmor_policy(std::string_view text);

// Why a policy was refused. append-only: values appear in stats and logs.
enum class PolicyError : std::uint8_t {
  kMalformed = 1,
  kUnknownIssuer = 2,
  kBadSignature = 3,
  kWrongCluster = 4,
  kNotNewer = 5,  // version <= the stored one (a replay or an older document)
  kExpired = 6,
};
[[nodiscard]] const char* to_string(PolicyError e);

struct PolicyFailure {
  PolicyError kind = PolicyError::kMalformed;
  std::string message;
};

struct DecodedPolicy {
  Policy policy;
  std::vector<std::byte> body;  // the exact signed bytes
  Signature sig{};
};
// Parses the envelope and body without checking the signature (for `weft policy show`).
[[nodiscard]] Result<DecodedPolicy, PolicyFailure> decode_policy(std::span<const std::byte> envelope);

// Valid iff it decodes, its issuer is one of `trusted` and the signature over
// kPolicyContext || body verifies, policy.cluster == cluster, version > stored_version (when
// one is stored), and now < expires (when set). Checked in that order; the first failure wins.
[[nodiscard]] Result<Policy, PolicyFailure> verify_policy(std::span<const std::byte> envelope,
                                                          std::span<const SignPublicKey> trusted,
                                                          std::string_view cluster,
                                                          std::optional<std::uint64_t> stored_version,
                                                          UnixTime now);

struct PolicyStats {
  std::uint64_t accepted = 0;
  std::uint64_t malformed = 0;
  std::uint64_t unknown_issuer = 0;
  std::uint64_t bad_signature = 0;
  std::uint64_t wrong_cluster = 0;
  std::uint64_t not_newer = 0;
  std::uint64_t expired = 0;
  void count(const Result<Policy, PolicyFailure>& r);
  void count_error(PolicyError kind);  // revocation lists share these counters' kinds
};

// ---- decision ----
struct Decision {
  PolicyAction effective = PolicyAction::kDeny;  // kAllow or kDeny only
  bool shadow_denied = false;                    // a shadow-deny matched: log as denied, let through
  std::optional<std::size_t> rule;               // index into Policy::rules; nullopt = the default
};
[[nodiscard]] Decision decide(const Policy& p, std::string_view from, std::string_view to);

// ---- rate limits ----
// Token buckets per (from -> to) pair, at most `capacity` of them. When full, the least recently
// used pair is evicted (and starts with a full bucket when it comes back): source services come
// from certificates, so the number of live pairs is bounded by what the operator granted, and
// refusing new pairs when full would deny legitimate traffic instead.
struct RateStats {
  std::uint64_t admitted = 0;
  std::uint64_t limited = 0;
  std::uint64_t evicted = 0;
};

class RateLimiter {
 public:
  explicit RateLimiter(std::size_t capacity);
  // One new connection from -> to at `now`: true if a token was taken. A changed limit for the
  // pair (a new policy) resets its bucket to full.
  [[nodiscard]] bool admit(std::string_view from, std::string_view to, const RateLimit& limit, TimePoint now);
  [[nodiscard]] std::size_t size() const { return map_.size(); }
  [[nodiscard]] const RateStats& stats() const { return stats_; }

 private:
  struct Bucket {
    std::string key;
    RateLimit limit;
    double tokens = 0;
    TimePoint last{};
  };
  std::size_t capacity_;
  std::list<Bucket> lru_;  // front = most recently used
  std::unordered_map<std::string, std::list<Bucket>::iterator> map_;
  RateStats stats_;
};

}  // namespace weft::transport
