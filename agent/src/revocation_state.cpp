// The operator-signed certificate revocation list on this agent (issue 5): `weft revocations
// apply`, the stored copy at start, and the spread by gossip (doc_sync.h, metadata "rev"). The
// same path as the policy (policy_state.cpp): verify against the trust root and this cluster,
// a version above the one held; store envelope and version in one synchronous=FULL transaction;
// then hand the proxy a new snapshot (ProxyTrust::revoked), which refuses the listed certificates
// in handshakes and closes their live sessions, and advertise the version. Lists do not expire.

#include <spdlog/spdlog.h>

#include "agent_impl.h"
#include "weft/agent/trust_files.h"

namespace weft::agent {

namespace tr = weft::transport;

namespace {

constexpr const char* kNoTrustRoot =
    "no trust root configured (start the agent with --operator-pub and --cert)";

json rejected_json(const tr::PolicyStats& s) {
  return json{{"malformed", s.malformed},
              {"unknown_issuer", s.unknown_issuer},
              {"bad_signature", s.bad_signature},
              {"wrong_cluster", s.wrong_cluster},
              {"not_newer", s.not_newer}};
}

}  // namespace

Result<void> Agent::load_revocations() {
  auto stored = store_.signed_doc(store::DocKind::kRevocations);
  if (!stored)
    return fail(db_path_ + ": the stored revocation list is unreadable: " + stored.error().message);
  if (!*stored) return {};
  const store::StoredDoc& d = **stored;
  revocations_floor_ = d.version;
  if (!trust_) {
    log_->warn("stored revocation list not enforced: no trust root (--operator-pub, --cert) version={}",
               d.version);
    return {};
  }
  auto v = tr::verify_revocations(d.envelope, trust_->operators, cfg_.cluster, std::nullopt);
  if (!v || v->version != d.version) {
    log_->error("stored revocation list not enforced: it no longer verifies version={} why={}", d.version,
                v ? "the envelope names another version" : v.error().message);
    return {};
  }
  revocations_ = std::move(*v);
  revocations_envelope_ = d.envelope;
  revocation_sync_.held(d.version);
  log_->info("revocation list loaded version={} revoked={}", d.version, revocations_->revoked.size());
  return {};
}

Result<std::uint64_t> Agent::accept_revocations(TimePoint now, std::span<const std::byte> envelope,
                                                const std::string& source) {
  if (!trust_) return fail(kNoTrustRoot);
  auto v = tr::verify_revocations(envelope, trust_->operators, cfg_.cluster, revocations_floor_);
  if (!v) {
    revocation_stats_.count_error(v.error().kind);
    return fail(std::string("revocation list refused (") + tr::to_string(v.error().kind) +
                "): " + v.error().message);
  }
  const std::uint64_t version = v->version;
  if (auto r = store_.set_signed_doc(store::DocKind::kRevocations, version, envelope); !r) {
    ++stats_.persist_errors;
    log_->error("persist revocation list failed version={}: {}", version, r.error().message);
    return fail("revocation list version " + std::to_string(version) + " not stored: " + r.error().message);
  }
  ++revocation_stats_.accepted;
  revocations_ = std::move(*v);
  revocations_envelope_.assign(envelope.begin(), envelope.end());
  revocations_floor_ = version;
  revocation_sync_.held(version);
  publish_trust();
  if (node_) {
    if (auto r = node_->set_meta(now, own_meta()); !r) {
      log_->error("revocation list version not advertised: {}", r.error().message);
    }
  }
  log_->info("revocation list applied version={} source={} revoked={}", version, source,
             revocations_->revoked.size());
  // Members whose certificate it names are declared failed at once (signed by us); their own
  // claims are refused from now on, so they cannot refute.
  if (node_) {
    if (const std::size_t n = node_->recheck_credentials(now); n > 0) log_->warn("revoked members expelled count={}", n);
  }
  if (revocations_->contains(trust_->cert.issuer, trust_->cert.serial)) {
    log_->error("own certificate revoked serial={} issuer={}: the other members refuse this node's claims and "
                "connections; install a new certificate (weft cert sign) and restart",
                trust_->cert.serial, tr::to_hex(trust_->cert.issuer));
  }
  return version;
}

void Agent::rpc_revocations_apply(TimePoint now, const std::string& peer, const json& params) {
  if (!trust_) return reply_error(peer, std::string("revocations apply: ") + kNoTrustRoot);
  auto it = params.find("revocations");
  if (it == params.end() || !it->is_string()) {
    return reply_error(peer, "revocations apply: give the signed revocation list text");
  }
  auto envelope = tr::unarmor_revocations(it->get_ref<const std::string&>());
  if (!envelope) {
    ++revocation_stats_.malformed;
    return reply_error(peer,
                       "revocations apply: revocation list refused (malformed): " + envelope.error().message);
  }
  auto r = accept_revocations(now, *envelope, "rpc");
  if (!r) return reply_error(peer, "revocations apply: " + r.error().message);
  reply(peer, json{{"applied", true}, {"version", *r}, {"revoked", revocations_->revoked.size()}});
}

json Agent::revocations_stats_json() const {
  return json{{"version", revocations_ ? revocations_->version : 0},
              {"revoked", revocations_ ? revocations_->revoked.size() : 0},
              {"accepted", revocation_stats_.accepted},
              {"rejected", rejected_json(revocation_stats_)},
              {"fetches_sent", revocation_sync_.stats().fetches_sent},
              {"fetch_timeouts", revocation_sync_.stats().fetch_timeouts}};
}

json Agent::revocations_rpc_json() const {
  json out{{"cluster", cfg_.cluster}, {"trust", trust_.has_value()}, {"stats", revocations_stats_json()}};
  out["revocations"] = nullptr;
  if (revocations_) {
    if (auto d = describe_revocations(revocations_envelope_)) out["revocations"] = std::move(*d);
  }
  return out;
}

}  // namespace weft::agent
