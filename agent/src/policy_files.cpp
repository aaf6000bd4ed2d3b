// `weft policy sign` and `weft policy show FILE`: the files around weft::transport's signed policy
// (see weft/agent/policy_files.h).

#include "weft/agent/policy_files.h"

#include "operator_key_file.h"
#include "policy_toml.h"
#include "weft/transport/policy.h"

namespace weft::agent {

namespace {

using nlohmann::json;
namespace tr = weft::transport;

json policy_json(const tr::Policy& p, bool is_signed) {
  json rules = json::array();
  for (const tr::PolicyRule& r : p.rules) {
    json j{{"from", r.from}, {"to", r.to}, {"action", tr::to_string(r.action)}};
    if (r.rate) j["rate"] = json{{"per_second", r.rate->per_second}, {"burst", r.rate->burst}};
    if (r.connect_timeout) j["connect_timeout_ms"] = r.connect_timeout->count();
    if (r.idle_timeout) j["idle_timeout_ms"] = r.idle_timeout->count();
    if (r.retries) j["retries"] = *r.retries;
    rules.push_back(std::move(j));
  }
  json out{{"signed", is_signed},
           {"cluster", p.cluster},
           {"version", p.version},
           {"expires", p.expires ? json(tr::format_rfc3339(*p.expires)) : json(nullptr)},
           {"default", tr::to_string(p.default_action)},
           {"rules", std::move(rules)}};
  if (is_signed) out["issuer"] = tr::to_hex(p.issuer);
  return out;
}

bool looks_armored(const std::string& text) { return text.find("-----BEGIN ") != std::string::npos; }

}  // namespace

Result<json> policy_sign(const PolicySignRequest& req) {
  auto text = tr::read_text_file(req.file);
  if (!text) return fail(text.error().message);
  auto p = parse_policy_toml(*text, req.file);
  if (!p) return fail(p.error().message);
  auto key = load_operator_key(req.operator_key, req.passphrase_file);
  if (!key) return fail(key.error().message);
  auto env = tr::sign_policy(*p, *key);
  if (!env) return fail(req.file + ": " + env.error().message);
  if (auto r = tr::replace_file(req.out, tr::armor_policy(*env), 0644); !r)
    return fail("--out " + r.error().message);
  auto d = tr::decode_policy(*env);
  if (!d) return fail("the new policy does not decode: " + d.error().message);  // never: a bug
  return policy_json(d->policy, true);
}

Result<json> describe_policy(std::span<const std::byte> envelope) {
  auto d = tr::decode_policy(envelope);
  if (!d) return fail(d.error().message);
  return policy_json(d->policy, true);
}

Result<json> policy_show(const std::string& file, const std::vector<std::string>& operator_pubs,
                         const std::string& cluster, UnixSeconds now) {
  auto text = tr::read_text_file(file);
  if (!text) return fail(text.error().message);
  if (!looks_armored(*text)) {
    if (!operator_pubs.empty()) return fail(file + ": not signed (a TOML policy): nothing to verify");
    auto p = parse_policy_toml(*text, file);
    if (!p) return fail(p.error().message);
    return policy_json(*p, false);
  }
  auto env = tr::unarmor_policy(*text);
  if (!env) return fail(file + ": " + env.error().message);
  auto d = tr::decode_policy(*env);
  if (!d) return fail(file + ": " + d.error().message);
  json out = policy_json(d->policy, true);
  if (operator_pubs.empty()) return out;
  std::vector<tr::SignPublicKey> trusted;
  for (const std::string& path : operator_pubs) {
    auto pub_text = tr::read_text_file(path);
    if (!pub_text) return fail("--operator-pub " + pub_text.error().message);
    auto pk = tr::decode_operator_public(*pub_text);
    if (!pk) return fail("--operator-pub " + path + ": " + pk.error().message);
    trusted.push_back(*pk);
  }
  const std::string& want = cluster.empty() ? d->policy.cluster : cluster;
  auto v = tr::verify_policy(*env, trusted, want, std::nullopt, now);
  if (v) {
    out["verification"] = json{{"valid", true}, {"status", "valid"}, {"reason", ""}};
  } else {
    out["verification"] =
        json{{"valid", false}, {"status", tr::to_string(v.error().kind)}, {"reason", v.error().message}};
  }
  return out;
}

}  // namespace weft::agent
