// Signed policy (transport/policy.h): sign/verify, context separation from certificates, the
// refusal kinds, the decision table and the token buckets; the TOML file format
// (agent/policy_files.h).

#include "weft/transport/policy.h"

#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <string>

#include "policy_toml.h"
#include "weft/transport/trust.h"

namespace {

using namespace weft::transport;
using namespace std::chrono_literals;

const UnixTime kNow{std::chrono::seconds(1'800'000'000)};

PolicyRule rule(const char* from, const char* to, PolicyAction action) {
  PolicyRule r;
  r.from = from;
  r.to = to;
  r.action = action;
  return r;
}

Policy sample_policy() {
  Policy p;
  p.cluster = "default";
  p.version = 2;
  p.expires = kNow + 24h;
  p.default_action = PolicyAction::kDeny;
  PolicyRule r = rule("client", "web", PolicyAction::kAllow);
  r.from = "client";
  r.to = "web";
  r.action = PolicyAction::kAllow;
  r.rate = RateLimit{100, 20};
  r.connect_timeout = 2s;
  r.idle_timeout = 5min;
  r.retries = 3;
  p.rules.push_back(r);
  p.rules.push_back(rule("*", "db", PolicyAction::kShadowDeny));
  return p;
}

std::vector<std::byte> signed_sample(const OperatorKey& op, Policy p = sample_policy()) {
  auto env = sign_policy(std::move(p), op);
  EXPECT_TRUE(env.has_value()) << env.error().message;
  return env.has_value() ? *env : std::vector<std::byte>{};
}

std::vector<SignPublicKey> trusted(const OperatorKey& op) { return {op.public_key()}; }

TEST(Policy, SignVerifyRoundTrip) {
  const OperatorKey op = OperatorKey::generate();
  const auto env = signed_sample(op);
  const auto keys = trusted(op);
  auto v = verify_policy(env, keys, "default", 1, kNow);
  ASSERT_TRUE(v.has_value()) << v.error().message;
  Policy want = sample_policy();
  want.issuer = op.issuer();
  EXPECT_EQ(*v, want);
  // No stored version yet: accepted too.
  EXPECT_TRUE(verify_policy(env, keys, "default", std::nullopt, kNow).has_value());
  // The armor round-trips the exact bytes.
  auto un = unarmor_policy(armor_policy(env));
  ASSERT_TRUE(un.has_value());
  EXPECT_EQ(*un, env);
  auto d = decode_policy(env);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->policy, want);
}

TEST(Policy, EveryFlippedByteFails) {
  const OperatorKey op = OperatorKey::generate();
  const auto env = signed_sample(op);
  const auto keys = trusted(op);
  for (std::size_t i = 0; i < env.size(); ++i) {
    for (const unsigned mask : {0x01u, 0x80u}) {
      auto bad = env;
      bad[i] ^= static_cast<std::byte>(mask);
      EXPECT_FALSE(verify_policy(bad, keys, "default", 1, kNow).has_value()) << "byte " << i;
    }
  }
  // Every prefix is an error, without throwing.
  for (std::size_t n = 0; n < env.size(); ++n) {
    EXPECT_FALSE(decode_policy(std::span(env).first(n)).has_value()) << n;
  }
}

TEST(Policy, CertificateAndPolicySignaturesDoNotCross) {
  const OperatorKey op = OperatorKey::generate();
  const auto keys = trusted(op);
  const NodeIdentity id = NodeIdentity::generate();
  NodeCert c;
  c.serial = 7;
  c.node = "node-1";
  c.sign_pk = id.sign_pk;
  c.kx_pk = id.kx_pk;
  c.not_before = kNow - 1h;
  c.not_after = kNow + 1h;
  auto cert = sign_cert(c, op);
  ASSERT_TRUE(cert.has_value());
  EXPECT_FALSE(verify_policy(*cert, keys, "default", std::nullopt, kNow).has_value());
  const auto pol = signed_sample(op);
  EXPECT_FALSE(verify_cert(pol, keys, kNow, kDefaultCertSkew).has_value());

  // Stronger: a policy body signed with the certificate context (what a confused signer would
  // produce) is well-formed but its signature does not verify as a policy.
  auto d = decode_policy(pol);
  ASSERT_TRUE(d.has_value());
  std::vector<std::byte> msg(kCertContext.size() + d->body.size());
  std::memcpy(msg.data(), kCertContext.data(), kCertContext.size());
  std::memcpy(msg.data() + kCertContext.size(), d->body.data(), d->body.size());
  const Signature sig = op.sign(msg);
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(2);
  pk.pack_bin(static_cast<std::uint32_t>(d->body.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(d->body.data()), static_cast<std::uint32_t>(d->body.size()));
  pk.pack_bin(64);
  pk.pack_bin_body(reinterpret_cast<const char*>(sig.data()), 64);
  const auto* p = reinterpret_cast<const std::byte*>(buf.data());
  const std::vector<std::byte> forged(p, p + buf.size());
  auto v = verify_policy(forged, keys, "default", std::nullopt, kNow);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().kind, PolicyError::kBadSignature);
}

TEST(Policy, EachRefusalHasItsKindAndIsCounted) {
  const OperatorKey op = OperatorKey::generate();
  const auto keys = trusted(op);
  const auto env = signed_sample(op);
  PolicyStats stats;
  auto kind = [&](const weft::Result<Policy, PolicyFailure>& r) {
    stats.count(r);
    return r.has_value() ? PolicyError{} : r.error().kind;
  };
  EXPECT_EQ(kind(verify_policy(env, keys, "other", std::nullopt, kNow)), PolicyError::kWrongCluster);
  EXPECT_EQ(kind(verify_policy(env, keys, "default", 2, kNow)), PolicyError::kNotNewer);  // equal
  EXPECT_EQ(kind(verify_policy(env, keys, "default", 9, kNow)), PolicyError::kNotNewer);  // older
  EXPECT_EQ(kind(verify_policy(env, keys, "default", 1, kNow + 24h)), PolicyError::kExpired);
  const std::vector<SignPublicKey> other{OperatorKey::generate().public_key()};
  EXPECT_EQ(kind(verify_policy(env, other, "default", 1, kNow)), PolicyError::kUnknownIssuer);
  EXPECT_EQ(kind(verify_policy(std::vector<std::byte>{std::byte{0x90}}, keys, "default", 1, kNow)),
            PolicyError::kMalformed);
  auto bad = env;
  bad[bad.size() - 1] ^= std::byte{1};  // inside the signature
  EXPECT_EQ(kind(verify_policy(bad, keys, "default", 1, kNow)), PolicyError::kBadSignature);
  stats.count(verify_policy(env, keys, "default", 1, kNow - 1h));
  EXPECT_EQ(stats.wrong_cluster, 1u);
  EXPECT_EQ(stats.not_newer, 2u);
  EXPECT_EQ(stats.expired, 1u);
  EXPECT_EQ(stats.unknown_issuer, 1u);
  EXPECT_EQ(stats.malformed, 1u);
  EXPECT_EQ(stats.bad_signature, 1u);
  EXPECT_EQ(stats.accepted, 1u);
  // Two trusted roots (a rotation): either verifies.
  const std::vector<SignPublicKey> two{other[0], op.public_key()};
  EXPECT_TRUE(verify_policy(env, two, "default", 1, kNow).has_value());
}

TEST(Policy, SignRefusesBadFields) {
  const OperatorKey op = OperatorKey::generate();
  auto bad = [&](auto mutate) {
    Policy p = sample_policy();
    mutate(p);
    return !sign_policy(p, op).has_value();
  };
  EXPECT_TRUE(bad([](Policy& p) { p.cluster = ""; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].from = "bad name"; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].to = std::string(129, 'a'); }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].rate = RateLimit{0, 1}; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].rate = RateLimit{1, 0}; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].connect_timeout = 0ms; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].idle_timeout = 25h; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].retries = 101; }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules[0].action = static_cast<PolicyAction>(9); }));
  EXPECT_TRUE(bad([](Policy& p) { p.rules.resize(kMaxPolicyRules + 1, p.rules[1]); }));
  EXPECT_FALSE(bad([](Policy& p) { p.rules.resize(kMaxPolicyRules, p.rules[1]); }));
}

Policy table_policy(PolicyAction def) {
  Policy p;
  p.cluster = "default";
  p.version = 1;
  p.default_action = def;
  p.rules = {
      rule("client", "web", PolicyAction::kAllow),      // 0
      rule("client", "db", PolicyAction::kDeny),        // 1
      rule("batch", "web", PolicyAction::kShadowDeny),  // 2
      rule("*", "admin", PolicyAction::kAllow),         // 3
      rule("evil", "*", PolicyAction::kDeny),           // 4
      rule("batch", "*", PolicyAction::kAllow),         // 5
      rule("ops", "*", PolicyAction::kAllow),           // 6
      rule("ops", "*", PolicyAction::kShadowDeny),      // 7
  };
  return p;
}

struct Row {
  const char* from;
  const char* to;
  PolicyAction effective;
  bool shadow;
  std::optional<std::size_t> rule;
};

TEST(Policy, DecisionTable) {
  const Policy p = table_policy(PolicyAction::kDeny);
  const Row rows[] = {
      {"client", "web", PolicyAction::kAllow, false, 0},    // allow
      {"client", "db", PolicyAction::kDeny, false, 1},      // deny
      {"client", "cache", PolicyAction::kDeny, false, {}},  // no rule -> default deny
      {"batch", "web", PolicyAction::kAllow, true, 2},      // shadow-deny beats allow (5)
      {"batch", "db", PolicyAction::kAllow, false, 5},      // wildcard to
      {"anyone", "admin", PolicyAction::kAllow, false, 3},  // wildcard from
      {"evil", "admin", PolicyAction::kDeny, false, 4},     // deny beats allow (3)
      {"evil", "web", PolicyAction::kDeny, false, 4},
      {"ops", "web", PolicyAction::kAllow, true, 7},      // shadow-deny beats an earlier allow
      {"Client", "web", PolicyAction::kDeny, false, {}},  // exact, case-sensitive
  };
  for (const Row& r : rows) {
    const Decision d = decide(p, r.from, r.to);
    EXPECT_EQ(d.effective, r.effective) << r.from << "->" << r.to;
    EXPECT_EQ(d.shadow_denied, r.shadow) << r.from << "->" << r.to;
    EXPECT_EQ(d.rule, r.rule) << r.from << "->" << r.to;
  }
  // The default applies only when no rule matches.
  const Policy open = table_policy(PolicyAction::kAllow);
  EXPECT_EQ(decide(open, "client", "cache").effective, PolicyAction::kAllow);
  EXPECT_EQ(decide(open, "client", "db").effective, PolicyAction::kDeny);
  const Policy shadow = table_policy(PolicyAction::kShadowDeny);
  const Decision d = decide(shadow, "client", "cache");
  EXPECT_EQ(d.effective, PolicyAction::kAllow);
  EXPECT_TRUE(d.shadow_denied);
  EXPECT_FALSE(d.rule.has_value());
  // Empty policy, deny by default.
  Policy empty;
  EXPECT_EQ(decide(empty, "a", "b").effective, PolicyAction::kDeny);
}

TEST(Policy, TokenBucketBurstThenRefill) {
  RateLimiter rl(16);
  const RateLimit lim{10, 5};  // 10/s, burst 5
  const weft::TimePoint t0{std::chrono::seconds(1000)};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rl.admit("client", "web", lim, t0)) << i;
  EXPECT_FALSE(rl.admit("client", "web", lim, t0));
  // Another pair has its own bucket.
  EXPECT_TRUE(rl.admit("batch", "web", lim, t0));
  // 100 ms at 10/s -> one token.
  EXPECT_FALSE(rl.admit("client", "web", lim, t0 + 50ms));
  EXPECT_TRUE(rl.admit("client", "web", lim, t0 + 100ms));
  EXPECT_FALSE(rl.admit("client", "web", lim, t0 + 100ms));
  // A long pause refills to the burst, not beyond.
  int n = 0;
  while (rl.admit("client", "web", lim, t0 + 1h)) ++n;
  EXPECT_EQ(n, 5);
  // One second admits per_second connections.
  n = 0;
  for (int ms = 1; ms <= 1000; ++ms)
    n += rl.admit("client", "web", lim, t0 + 1h + std::chrono::milliseconds(ms));
  EXPECT_EQ(n, 10);
  // Time going backwards never adds tokens.
  EXPECT_FALSE(rl.admit("client", "web", lim, t0));
  EXPECT_EQ(rl.stats().admitted, 5u + 1u + 1u + 5u + 10u);
}

TEST(Policy, RateTableIsBoundedAndEvictsTheLeastRecentlyUsed) {
  RateLimiter rl(3);
  const RateLimit lim{1, 1};
  const weft::TimePoint t0{};
  EXPECT_TRUE(rl.admit("a", "x", lim, t0));
  EXPECT_TRUE(rl.admit("b", "x", lim, t0));
  EXPECT_TRUE(rl.admit("c", "x", lim, t0));
  EXPECT_FALSE(rl.admit("a", "x", lim, t0));  // a is now the most recent; b the least
  EXPECT_TRUE(rl.admit("d", "x", lim, t0));   // evicts b
  EXPECT_EQ(rl.size(), 3u);
  EXPECT_EQ(rl.stats().evicted, 1u);
  EXPECT_FALSE(rl.admit("a", "x", lim, t0));  // a kept its empty bucket
  EXPECT_FALSE(rl.admit("c", "x", lim, t0));
  EXPECT_TRUE(rl.admit("b", "x", lim, t0));  // b came back with a full bucket (evicts d)
  EXPECT_EQ(rl.size(), 3u);
  for (int i = 0; i < 1000; ++i) (void)rl.admit("s" + std::to_string(i), "x", lim, t0);
  EXPECT_EQ(rl.size(), 3u);
  // A changed limit (new policy) resets the pair's bucket.
  EXPECT_TRUE(rl.admit("s999", "x", RateLimit{1, 2}, t0));
}

// ---- the TOML file (agent/policy_toml.h) ----

const char* kToml = R"(cluster = "default"
version = 2
expires = "2027-01-01T00:00:00Z"
default = "deny"
[[rule]]
from = "client"
to = "web"
action = "allow"
rate = { per_second = 100, burst = 20 }
connect_timeout = "2s"
idle_timeout = "5m"
retries = 2
[[rule]]
from = "*"
to = "db"
action = "shadow-deny"
)";

TEST(PolicyToml, ParsesEveryField) {
  auto p = weft::agent::parse_policy_toml(kToml, "p.toml");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->cluster, "default");
  EXPECT_EQ(p->version, 2u);
  ASSERT_TRUE(p->expires.has_value());
  EXPECT_EQ(format_rfc3339(*p->expires), "2027-01-01T00:00:00Z");
  EXPECT_EQ(p->default_action, PolicyAction::kDeny);
  ASSERT_EQ(p->rules.size(), 2u);
  EXPECT_EQ(p->rules[0].from, "client");
  EXPECT_EQ(p->rules[0].to, "web");
  EXPECT_EQ(p->rules[0].action, PolicyAction::kAllow);
  EXPECT_EQ(p->rules[0].rate, (RateLimit{100, 20}));
  EXPECT_EQ(p->rules[0].connect_timeout, std::optional<std::chrono::milliseconds>(2s));
  EXPECT_EQ(p->rules[0].idle_timeout, std::optional<std::chrono::milliseconds>(5min));
  EXPECT_EQ(p->rules[0].retries, std::optional<std::uint32_t>(2));
  EXPECT_EQ(p->rules[1].from, "*");
  EXPECT_EQ(p->rules[1].action, PolicyAction::kShadowDeny);
  EXPECT_FALSE(p->rules[1].rate.has_value());
  // A native TOML date-time works too; the default action is deny when not set.
  auto q = weft::agent::parse_policy_toml(
      "cluster = \"c\"\nversion = 1\nexpires = 2027-01-01T01:00:00+01:00\n", "q.toml");
  ASSERT_TRUE(q.has_value()) << q.error().message;
  EXPECT_EQ(format_rfc3339(*q->expires), "2027-01-01T00:00:00Z");
  EXPECT_EQ(q->default_action, PolicyAction::kDeny);
  EXPECT_TRUE(q->rules.empty());
}

TEST(PolicyToml, ErrorsNameTheFieldAndLine) {
  struct Case {
    std::string text;
    std::vector<std::string> want;  // substrings of the one-line error
  };
  const std::string head = "cluster = \"default\"\nversion = 2\n";
  const std::string rule = "[[rule]]\nfrom = \"a\"\nto = \"b\"\n";
  const Case cases[] = {
      {head + "defualt = \"allow\"\n", {"p.toml: line 3: defualt", "not a known key"}},
      {head + rule + "action = \"allw\"\n", {"line 6", "rule 1: action", "'allw'"}},
      {head + rule + "action = \"allow\"\nrate = { per_second = 0, burst = 1 }\n",
       {"rule 1: rate.per_second"}},
      {head + rule + "action = \"allow\"\nrate = { per_second = 5 }\n", {"rule 1: rate", "burst"}},
      {head + rule + "action = \"allow\"\nrate = { per_second = 5, burst = 1, brust = 2 }\n", {"rate.brust"}},
      {head + rule + "action = \"allow\"\nconnect_timeout = \"2 s\"\n", {"line 7", "connect_timeout"}},
      {head + rule + "action = \"allow\"\nidle_timeout = \"48h\"\n", {"idle_timeout", "24h"}},
      {head + rule + "action = \"allow\"\nretries = -1\n", {"retries"}},
      {head + rule + "action = \"allow\"\nfrm = \"x\"\n", {"line 7", "rule 1: frm", "not a known key"}},
      {head + "[[rule]]\nfrom = \"a\"\naction = \"deny\"\n", {"rule 1: 'to' is missing"}},
      {head + rule + "action = \"allow\"\n" + "[[rule]]\nfrom = \"a b\"\nto = \"c\"\naction = \"deny\"\n",
       {"line 8", "rule 2: from"}},
      {head + "expires = \"2027-13-01T00:00:00Z\"\n", {"line 3", "expires"}},
      {head + "expires = 2027-01-01T00:00:00\n", {"expires", "time zone"}},
      {head + "default = \"maybe\"\n", {"line 3", "default", "'maybe'"}},
      {"version = 2\n", {"'cluster' is missing"}},
      {"cluster = \"default\"\n", {"'version' is missing"}},
      {"cluster = \"default\"\nversion = 0\n", {"line 2", "version"}},
      {"cluster = \"bad cluster\"\nversion = 1\n", {"line 1", "cluster"}},
      {"cluster = \"default\"\nversion = \n", {"p.toml: line 2"}},
      {head + "rule = 5\n", {"line 3", "rule"}},
  };
  for (const Case& c : cases) {
    auto p = weft::agent::parse_policy_toml(c.text, "p.toml");
    ASSERT_FALSE(p.has_value()) << c.text;
    EXPECT_EQ(p.error().message.find('\n'), std::string::npos) << p.error().message;
    for (const std::string& w : c.want) {
      EXPECT_NE(p.error().message.find(w), std::string::npos)
          << "want '" << w << "' in: " << p.error().message;
    }
  }
}

TEST(PolicyToml, SignedTomlVerifiesAndDecidesAsWritten) {
  const OperatorKey op = OperatorKey::generate();
  auto p = weft::agent::parse_policy_toml(kToml, "p.toml");
  ASSERT_TRUE(p.has_value());
  const auto env = signed_sample(op, *p);
  const auto keys = trusted(op);
  const UnixTime before_expiry{std::chrono::sys_days(std::chrono::year(2026) / 12 / 1)};
  auto v = verify_policy(env, keys, "default", std::nullopt, before_expiry);
  ASSERT_TRUE(v.has_value()) << v.error().message;
  EXPECT_EQ(decide(*v, "client", "web").effective, PolicyAction::kAllow);
  EXPECT_EQ(decide(*v, "client", "cache").effective, PolicyAction::kDeny);
  EXPECT_TRUE(decide(*v, "x", "db").shadow_denied);
}

}  // namespace
