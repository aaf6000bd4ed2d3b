// Operator-signed cluster-key operations on the agent (issue 5, transport/keyop.h). With a trust
// root configured, every install / use / remove, from the local CLI or from another agent, must
// carry a document signed by a trusted operator key for this cluster, this step and this key,
// still valid, and not applied before (its nonce is remembered until it expires). Refusals are
// counted by reason (`weft info`, `weft stats`: key_ops) and answered with one line. Without a
// trust root the document is not required (and not checked), as before issue 5; it is still
// forwarded to the other members, which may have one.

#include <spdlog/spdlog.h>

#include "agent_impl.h"
#include "operator_key_file.h"
#include "weft/agent/trust_files.h"
#include "weft/transport/keyop.h"

namespace weft::agent {

namespace tr = weft::transport;

namespace {

// Key operations carry wall-clock times (issued, expiry): the agent's wall-clock read for them.
tr::UnixTime wall_now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

}  // namespace

Result<void> Agent::authorize_key_op(const std::string& op, const std::string& key,
                                     std::span<const std::byte> signed_op, bool record) {
  if (!trust_ || op == "list") return {};
  const auto kind = tr::parse_key_op_kind(op);
  if (!kind) return fail("unknown key operation '" + op + "'");
  auto refuse = [&](tr::KeyOpError e, const std::string& why) -> Result<void> {
    ++key_ops_refused_[static_cast<std::size_t>(e)];
    log_->warn("key operation refused op={} reason=\"{}\" detail=\"{}\"", op, tr::to_string(e), why);
    return fail(std::string("key operation refused (") + tr::to_string(e) + "): " + why);
  };
  if (signed_op.empty()) {
    return refuse(tr::KeyOpError::kUnsigned, "this cluster has a trust root: sign it with an operator key (weft keys " +
                                                 op + " KEY --operator-key FILE)");
  }
  tr::KeyOpTarget target{*kind, 0, {}};
  if (*kind == tr::KeyOpKind::kInstall) {
    auto k = tr::parse_key(key);
    if (!k) return fail(k.error().message);
    target.key_id = tr::key_id(*k);
    target.fingerprint = tr::key_fingerprint(*k);
  } else {
    auto id = resolve_key(key);
    if (!id) return Unexpected<Error>(id.error());
    const tr::Key* k = ring_.find(*id);
    if (k == nullptr) return fail("key " + tr::format_key_id(*id) + " is not installed");
    target.key_id = *id;
    target.fingerprint = tr::key_fingerprint(*k);
  }
  const tr::UnixTime now = wall_now();
  auto v = tr::verify_key_op(signed_op, trust_->operators, cfg_.cluster, target, now);
  if (!v) return refuse(v.error().kind, v.error().message);
  if (key_op_nonces_.seen(v->nonce, now)) {
    return refuse(tr::KeyOpError::kReplayed, "this signed operation was applied here before; sign a new one");
  }
  if (!record) return {};
  if (!key_op_nonces_.record(v->nonce, v->expires, now)) {
    return refuse(tr::KeyOpError::kReplayed, "too many signed key operations within their validity; retry later");
  }
  ++key_ops_authorized_;
  log_->info("key operation authorized op={} key={} issuer={}", op, tr::format_key_id(target.key_id),
             tr::to_hex(v->issuer));
  return {};
}

json Agent::key_ops_stats_json() const {
  json refused = json::object();
  for (std::size_t i = 1; i < tr::kKeyOpErrorCount; ++i) {
    std::string name = tr::to_string(static_cast<tr::KeyOpError>(i));
    for (char& c : name) c = c == ' ' ? '_' : c;
    refused[name] = key_ops_refused_[i];
  }
  return json{{"served", stats_.key_ops_served}, {"authorized", key_ops_authorized_}, {"refused", refused}};
}

Result<std::string> key_op_sign(const KeyOpSignRequest& req) {
  const auto kind = tr::parse_key_op_kind(req.op);
  if (!kind) return fail("key operation '" + req.op + "' is not install, use or remove");
  tr::KeyOperation k;
  k.cluster = req.cluster;
  k.op = *kind;
  if (auto key = tr::parse_key(req.key)) {
    k.key_id = tr::key_id(*key);
    k.fingerprint = tr::key_fingerprint(*key);
  } else if (*kind != tr::KeyOpKind::kInstall && req.key.size() == 8 &&
             req.key.find_first_not_of("0123456789abcdef") == std::string::npos) {
    k.key_id = static_cast<tr::KeyId>(std::stoul(req.key, nullptr, 16));  // named by its id only
  } else {
    return fail("keys " + req.op + ": " + key.error().message);
  }
  k.issued = req.now;
  k.expires = req.now + tr::kDefaultKeyOpLifetime;
  k.nonce = tr::random_key_op_nonce();
  auto op_key = load_operator_key(req.operator_key, req.passphrase_file);
  if (!op_key) return fail(op_key.error().message);
  auto env = tr::sign_key_op(std::move(k), *op_key);
  if (!env) return fail(env.error().message);
  return tr::armor_key_op(*env);
}

}  // namespace weft::agent
