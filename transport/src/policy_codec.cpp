// Signed policy: field checks, the body encoding, signing over kPolicyContext || body, and
// verification (transport/policy.h has the wire picture).

#include "sodium_init.h"
#include "trust_codec.h"
#include "weft/transport/policy.h"

namespace weft::transport {

namespace {

constexpr std::uint32_t kBodyFields = 7;
constexpr std::uint32_t kRuleFields = 7;

Unexpected<PolicyFailure> policy_fail(PolicyError kind, std::string message) {
  return Unexpected<PolicyFailure>(PolicyFailure{kind, std::move(message)});
}

Unexpected<PolicyFailure> malformed(const std::string& message) {
  return policy_fail(PolicyError::kMalformed, "malformed policy: " + message);
}

bool valid_action(std::uint64_t v) { return v >= 1 && v <= 3; }

Result<void> check_pattern(const std::string& what, const std::string& name) {
  if (name == kPolicyWildcard) return {};
  return check_trust_name(what, name);
}

Result<void> check_timeout(const std::string& what, const std::optional<std::chrono::milliseconds>& t) {
  if (t && (t->count() < 1 || *t > kMaxPolicyTimeout)) return fail(what + " is outside 1ms..24h");
  return {};
}

void pack_opt_ms(msgpack::packer<msgpack::sbuffer>& pk, const std::optional<std::chrono::milliseconds>& t) {
  if (t)
    pk.pack_uint64(static_cast<std::uint64_t>(t->count()));
  else
    pk.pack_nil();
}

Result<void> read_opt_ms(const msgpack::object& o, const std::string& what,
                         std::optional<std::chrono::milliseconds>& out) {
  if (o.type == msgpack::type::NIL) return {};
  std::uint64_t v = 0;
  if (auto r = detail::read_u64(o, what.c_str(), v); !r) return r;
  if (v > static_cast<std::uint64_t>(kMaxPolicyTimeout.count())) return fail(what + " is outside 1ms..24h");
  out = std::chrono::milliseconds(static_cast<std::int64_t>(v));
  return {};
}

Result<PolicyRule> decode_rule(const msgpack::object& o, std::size_t i) {
  const std::string w = "rule " + std::to_string(i);
  if (o.type != msgpack::type::ARRAY || o.via.array.size != kRuleFields)
    return fail(w + " is not an array of " + std::to_string(kRuleFields) + " fields");
  const msgpack::object* a = o.via.array.ptr;
  PolicyRule r;
  if (a[0].type != msgpack::type::STR || a[1].type != msgpack::type::STR)
    return fail(w + ": from/to is not a string");
  r.from.assign(a[0].via.str.ptr, a[0].via.str.size);
  r.to.assign(a[1].via.str.ptr, a[1].via.str.size);
  std::uint64_t act = 0;
  if (auto e = detail::read_u64(a[2], (w + " action").c_str(), act); !e) return fail(e.error().message);
  if (!valid_action(act)) return fail(w + ": unknown action " + std::to_string(act));
  r.action = static_cast<PolicyAction>(act);
  if (a[3].type != msgpack::type::NIL) {
    if (a[3].type != msgpack::type::ARRAY || a[3].via.array.size != 2)
      return fail(w + ": rate is not [per_second, burst]");
    std::uint64_t ps = 0, burst = 0;
    if (auto e = detail::read_u64(a[3].via.array.ptr[0], "rate per_second", ps); !e)
      return fail(e.error().message);
    if (auto e = detail::read_u64(a[3].via.array.ptr[1], "rate burst", burst); !e)
      return fail(e.error().message);
    if (ps > kMaxRatePerSecond || burst > kMaxRateBurst) return fail(w + ": rate is out of range");
    r.rate = RateLimit{static_cast<std::uint32_t>(ps), static_cast<std::uint32_t>(burst)};
  }
  if (auto e = read_opt_ms(a[4], w + " connect_timeout", r.connect_timeout); !e)
    return fail(e.error().message);
  if (auto e = read_opt_ms(a[5], w + " idle_timeout", r.idle_timeout); !e) return fail(e.error().message);
  if (a[6].type != msgpack::type::NIL) {
    std::uint64_t n = 0;
    if (auto e = detail::read_u64(a[6], (w + " retries").c_str(), n); !e) return fail(e.error().message);
    if (n > kMaxPolicyRetries) return fail(w + ": retries is out of range");
    r.retries = static_cast<std::uint32_t>(n);
  }
  return r;
}

Result<Policy> decode_body(std::span<const std::byte> body) {
  static constexpr const char* kWhat = "body";
  detail::Unpacked u;
  // depth: body -> rules -> rule -> rate
  if (auto r = detail::unpack_exact(body, kWhat, kMaxPolicyRules, kMaxTrustNameBytes, 8, u, 4); !r) {
    return fail(r.error().message);
  }
  auto f = detail::versioned_array(u.obj, kWhat, kBodyFields, kBodyFields, kTrustFormatV1);
  if (!f) return fail(f.error().message);
  const auto& a = *f;
  Policy p;
  if (auto r = detail::read_fixed_bin(a[1], "issuer", p.issuer); !r) return fail(r.error().message);
  if (a[2].type != msgpack::type::STR) return fail("cluster is not a string");
  p.cluster.assign(a[2].via.str.ptr, a[2].via.str.size);
  if (auto r = detail::read_u64(a[3], "version", p.version); !r) return fail(r.error().message);
  if (a[4].type != msgpack::type::NIL) {
    std::int64_t t = 0;
    if (auto r = detail::read_i64(a[4], "expires", t); !r) return fail(r.error().message);
    p.expires = UnixTime(std::chrono::seconds(t));
  }
  std::uint64_t def = 0;
  if (auto r = detail::read_u64(a[5], "default", def); !r) return fail(r.error().message);
  if (!valid_action(def)) return fail("unknown default action " + std::to_string(def));
  p.default_action = static_cast<PolicyAction>(def);
  if (a[6].type != msgpack::type::ARRAY) return fail("rules is not an array");
  p.rules.reserve(a[6].via.array.size);  // bounded by the unpack limit
  for (std::uint32_t i = 0; i < a[6].via.array.size; ++i) {
    auto r = decode_rule(a[6].via.array.ptr[i], i);
    if (!r) return fail(r.error().message);
    p.rules.push_back(std::move(*r));
  }
  if (auto r = check_policy(p); !r) return fail(r.error().message);
  return p;
}

}  // namespace

const char* to_string(PolicyAction a) {
  switch (a) {
    case PolicyAction::kAllow:
      return "allow";
    case PolicyAction::kDeny:
      return "deny";
    case PolicyAction::kShadowDeny:
      return "shadow-deny";
  }
  return "unknown";
}

std::optional<PolicyAction> parse_policy_action(std::string_view s) {
  if (s == "allow") return PolicyAction::kAllow;
  if (s == "deny") return PolicyAction::kDeny;
  if (s == "shadow-deny") return PolicyAction::kShadowDeny;
  return std::nullopt;
}

const char* to_string(PolicyError e) {
  switch (e) {
    case PolicyError::kMalformed:
      return "malformed";
    case PolicyError::kUnknownIssuer:
      return "unknown issuer";
    case PolicyError::kBadSignature:
      return "bad signature";
    case PolicyError::kWrongCluster:
      return "wrong cluster";
    case PolicyError::kNotNewer:
      return "not newer";
    case PolicyError::kExpired:
      return "expired";
  }
  return "unknown";
}

Result<void> check_policy(const Policy& p) {
  if (auto r = check_trust_name("cluster", p.cluster); !r) return r;
  if (p.expires) {
    const auto s = p.expires->time_since_epoch().count();
    if (s < 0 || s > kMaxCertUnixSeconds) return fail("expires is outside 1970..9999");
  }
  if (!valid_action(static_cast<std::uint64_t>(p.default_action))) return fail("unknown default action");
  if (p.rules.size() > kMaxPolicyRules) {
    return fail(std::to_string(p.rules.size()) + " rules, the limit is " + std::to_string(kMaxPolicyRules));
  }
  for (std::size_t i = 0; i < p.rules.size(); ++i) {
    const PolicyRule& r = p.rules[i];
    const std::string w = "rule " + std::to_string(i + 1) + " ";
    if (auto e = check_pattern(w + "from", r.from); !e) return e;
    if (auto e = check_pattern(w + "to", r.to); !e) return e;
    if (!valid_action(static_cast<std::uint64_t>(r.action))) return fail(w + "action is unknown");
    if (r.rate) {
      if (r.rate->per_second < 1 || r.rate->per_second > kMaxRatePerSecond)
        return fail(w + "rate.per_second is outside 1.." + std::to_string(kMaxRatePerSecond));
      if (r.rate->burst < 1 || r.rate->burst > kMaxRateBurst)
        return fail(w + "rate.burst is outside 1.." + std::to_string(kMaxRateBurst));
    }
    if (auto e = check_timeout(w + "connect_timeout", r.connect_timeout); !e) return e;
    if (auto e = check_timeout(w + "idle_timeout", r.idle_timeout); !e) return e;
    if (r.retries && *r.retries > kMaxPolicyRetries)
      return fail(w + "retries is outside 0.." + std::to_string(kMaxPolicyRetries));
  }
  return {};
}

Result<std::vector<std::byte>> sign_policy(Policy p, const OperatorKey& key) {
  p.issuer = key.issuer();
  if (auto r = check_policy(p); !r) return fail("policy: " + r.error().message);
  msgpack::sbuffer body;
  msgpack::packer<msgpack::sbuffer> pk(body);
  pk.pack_array(kBodyFields);
  pk.pack_uint64(kTrustFormatV1);
  detail::pack_bin(pk, p.issuer);
  pk.pack(p.cluster);
  pk.pack_uint64(p.version);
  if (p.expires)
    pk.pack_int64(p.expires->time_since_epoch().count());
  else
    pk.pack_nil();
  pk.pack_uint8(static_cast<std::uint8_t>(p.default_action));
  pk.pack_array(static_cast<std::uint32_t>(p.rules.size()));
  for (const PolicyRule& r : p.rules) {
    pk.pack_array(kRuleFields);
    pk.pack(r.from);
    pk.pack(r.to);
    pk.pack_uint8(static_cast<std::uint8_t>(r.action));
    if (r.rate) {
      pk.pack_array(2);
      pk.pack_uint32(r.rate->per_second);
      pk.pack_uint32(r.rate->burst);
    } else {
      pk.pack_nil();
    }
    pack_opt_ms(pk, r.connect_timeout);
    pack_opt_ms(pk, r.idle_timeout);
    if (r.retries)
      pk.pack_uint32(*r.retries);
    else
      pk.pack_nil();
  }
  const std::span<const std::byte> body_bytes(reinterpret_cast<const std::byte*>(body.data()), body.size());
  return detail::seal_envelope(kPolicyContext, body_bytes, key, kMaxPolicyBytes, "policy");
}

std::string armor_policy(std::span<const std::byte> envelope) { return armor(kLabelPolicy, envelope); }

Result<std::vector<std::byte>> unarmor_policy(std::string_view text) { return unarmor(text, kLabelPolicy); }

Result<DecodedPolicy, PolicyFailure> decode_policy(std::span<const std::byte> envelope) {
  auto e = detail::open_envelope(envelope, kMaxPolicyBytes);
  if (!e) return malformed(e.error().message);
  auto pol = decode_body(e->body);
  if (!pol) return malformed(pol.error().message);
  return DecodedPolicy{std::move(*pol), std::move(e->body), e->sig};
}

Result<Policy, PolicyFailure> verify_policy(std::span<const std::byte> envelope,
                                            std::span<const SignPublicKey> trusted, std::string_view cluster,
                                            std::optional<std::uint64_t> stored_version, UnixTime now) {
  auto d = decode_policy(envelope);
  if (!d) return Unexpected<PolicyFailure>(d.error());
  const Policy& p = d->policy;
  if (const auto check = detail::check_operator_signature(kPolicyContext, d->body, d->sig, p.issuer, trusted);
      check != detail::SignerCheck::kOk) {
    return policy_fail(check == detail::SignerCheck::kUnknownIssuer ? PolicyError::kUnknownIssuer : PolicyError::kBadSignature,
                       detail::signer_check_message(check, p.issuer));
  }
  if (p.cluster != cluster)
    return policy_fail(PolicyError::kWrongCluster,
                       "policy for cluster '" + p.cluster + "', this is '" + std::string(cluster) + "'");
  if (stored_version && p.version <= *stored_version) {
    return policy_fail(PolicyError::kNotNewer, "version " + std::to_string(p.version) +
                                                   " is not newer than the stored " +
                                                   std::to_string(*stored_version));
  }
  if (p.expires && now >= *p.expires)
    return policy_fail(PolicyError::kExpired, "expired at " + format_rfc3339(*p.expires));
  return std::move(d->policy);
}

void PolicyStats::count(const Result<Policy, PolicyFailure>& r) {
  if (r) {
    ++accepted;
    return;
  }
  count_error(r.error().kind);
}

void PolicyStats::count_error(PolicyError kind) {
  switch (kind) {
    case PolicyError::kMalformed:
      ++malformed;
      break;
    case PolicyError::kUnknownIssuer:
      ++unknown_issuer;
      break;
    case PolicyError::kBadSignature:
      ++bad_signature;
      break;
    case PolicyError::kWrongCluster:
      ++wrong_cluster;
      break;
    case PolicyError::kNotNewer:
      ++not_newer;
      break;
    case PolicyError::kExpired:
      ++expired;
      break;
  }
}

}  // namespace weft::transport
