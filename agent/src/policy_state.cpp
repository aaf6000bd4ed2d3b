// The operator-signed policy on this agent (issue 5): `weft policy apply`, the stored copy at
// start, the spread by gossip (doc_sync.h) and the snapshot the proxy enforces.
//
// One path for every document: accept_policy() verifies it (trusted issuer and signature, this
// agent's cluster name, a version above the one held, not expired), stores the envelope and its
// version in one synchronous=FULL transaction, then enforces it (Proxy::set_trust) and advertises
// its version in gossip metadata, so peers fetch it in turn. A document that fails is counted by
// kind (PolicyStats) and never stored.
//
// Expiry: agents keep enforcing the newest policy they hold (issue 5: while partitioned, every
// agent keeps enforcing the newest it has). A policy is refused if it has expired when it
// arrives; one that expires while held, or is found expired at a restart, is kept and enforced
// with a warning: dropping it would fall back to "no policy", which allows every certified pair,
// and an attacker who can delay new policies must not be able to turn enforcement off that way.
// The operator replaces it with a newer version.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "agent_impl.h"
#include "weft/agent/policy_files.h"

namespace weft::agent {

namespace tr = weft::transport;

namespace {

constexpr std::size_t kMaxLoggedRejections = 256;
constexpr const char* kNoTrustRoot =
    "no trust root configured (start the agent with --operator-pub and --cert)";

// Policies carry wall-clock times (expiry). The agent's one wall-clock read for them; the
// transport library takes `now` as an argument.
tr::UnixTime wall_now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

json rejected_json(const tr::PolicyStats& s) {
  return json{{"malformed", s.malformed},         {"unknown_issuer", s.unknown_issuer},
              {"bad_signature", s.bad_signature}, {"wrong_cluster", s.wrong_cluster},
              {"not_newer", s.not_newer},         {"expired", s.expired}};
}

}  // namespace

Result<void> Agent::load_policy() {
  if (auto r = load_policy_doc(); !r) return r;
  return load_revocations();
}

Result<void> Agent::load_policy_doc() {
  auto stored = store_.policy();
  if (!stored) return fail(db_path_ + ": the stored policy is unreadable: " + stored.error().message);
  if (!*stored) return {};
  const store::StoredDoc& d = **stored;
  policy_floor_ = d.version;
  if (!trust_) {
    log_->warn("stored policy not enforced: no trust root (--operator-pub, --cert) version={}", d.version);
    return {};
  }
  auto decoded = tr::decode_policy(d.envelope);
  if (!decoded || decoded->policy.version != d.version) {
    log_->error("stored policy not enforced: damaged version={} why={}", d.version,
                decoded ? "the envelope names another version" : decoded.error().message);
    return {};
  }
  // Everything but the version (it is the stored one) and the expiry (kept, see above).
  const tr::Policy& p = decoded->policy;
  const tr::UnixTime now = wall_now();
  const bool expired = p.expires && now >= *p.expires;
  auto v = tr::verify_policy(d.envelope, trust_->operators, cfg_.cluster, std::nullopt,
                             expired ? *p.expires - std::chrono::seconds(1) : now);
  if (!v) {
    log_->error("stored policy not enforced: it no longer verifies version={} why={}: {}", d.version,
                tr::to_string(v.error().kind), v.error().message);
    return {};
  }
  if (expired) {
    log_->warn("stored policy expired, still enforced until a newer version arrives version={} expired={}",
               d.version, tr::format_rfc3339(*p.expires));
  }
  policy_ = std::make_shared<const tr::Policy>(std::move(*v));
  policy_envelope_ = d.envelope;
  policy_sync_.held(d.version);
  log_->info("policy loaded version={} rules={} default={}", d.version, policy_->rules.size(),
             tr::to_string(policy_->default_action));
  return {};
}

Result<std::uint64_t> Agent::accept_policy(TimePoint now, std::span<const std::byte> envelope,
                                           const std::string& source) {
  if (!trust_) return fail(kNoTrustRoot);
  auto v = tr::verify_policy(envelope, trust_->operators, cfg_.cluster, policy_floor_, wall_now());
  if (!v) {
    policy_stats_.count(v);
    return fail(std::string("policy refused (") + tr::to_string(v.error().kind) + "): " + v.error().message);
  }
  const std::uint64_t version = v->version;
  // Durable before it is enforced or advertised: a peer that fetches it from us, or an operator
  // told "applied", can count on it surviving a crash here.
  if (auto r = store_.set_policy(version, envelope); !r) {
    ++stats_.persist_errors;
    log_->error("persist policy failed version={}: {}", version, r.error().message);
    return fail("policy version " + std::to_string(version) + " not stored: " + r.error().message);
  }
  ++policy_stats_.accepted;
  policy_ = std::make_shared<const tr::Policy>(std::move(*v));
  policy_envelope_.assign(envelope.begin(), envelope.end());
  policy_floor_ = version;
  policy_sync_.held(version);
  publish_trust();
  if (node_) {
    if (auto r = node_->set_meta(now, own_meta()); !r)
      log_->error("policy version not advertised: {}", r.error().message);
  }
  log_->info("policy applied version={} source={} rules={} default={}", version, source,
             policy_->rules.size(), tr::to_string(policy_->default_action));
  return version;
}

CertClaimAuthority::Revoked Agent::revoked_set() const {
  CertClaimAuthority::Revoked revoked;
  if (revocations_) {
    for (const tr::RevokedCert& c : revocations_->revoked) revoked.emplace(c.issuer, c.serial);
  }
  return revoked;
}

void Agent::publish_trust() {
  if (!trust_) return;
  // Gossip: claims signed by a revoked certificate are dropped from now on (what the members
  // already believe of its holder stays until it changes).
  if (claims_) claims_->set_revoked(revoked_set());
  if (!proxy_) return;
  auto t = std::make_shared<tr::ProxyTrust>();
  t->operators = trust_->operators;
  t->own_cert = trust_->cert_envelope;
  t->policy = policy_;
  t->revoked = revoked_set();
  proxy_->set_trust(std::move(t));
}

void Agent::on_member_policy(const std::string& name) {
  if (name == cfg_.node) return;
  auto m = node_->member(name);
  if (!m) {
    policy_sync_.forget(name);
    revocation_sync_.forget(name);
    return;
  }
  auto meta = decode_meta(m->meta);
  const bool live = m->state == gossip::MemberState::kAlive || m->state == gossip::MemberState::kSuspect;
  // Without a trust root nothing can be verified: never fetch.
  policy_sync_.on_member(name, m->addr, live && trust_.has_value(), meta ? meta->policy_version : 0);
  revocation_sync_.on_member(name, m->addr, live && trust_.has_value(), meta ? meta->revocations_version : 0);
}

void Agent::send_doc_fetches(TimePoint now) {
  if (auto f = policy_sync_.due(now)) {
    log_->debug("policy fetch node={} version={} have={}", f->node, f->version, policy_sync_.held());
    send_frame(now, f->addr, FrameKind::kSignedDocRequest,
               encode_doc_request(DocRequest{kDocKindPolicy, policy_sync_.held()}));
  }
  if (auto f = revocation_sync_.due(now)) {
    log_->debug("revocations fetch node={} version={} have={}", f->node, f->version, revocation_sync_.held());
    send_frame(now, f->addr, FrameKind::kSignedDocRequest,
               encode_doc_request(DocRequest{kDocKindRevocations, revocation_sync_.held()}));
  }
}

TimePoint Agent::next_doc_fetch() const { return std::min(policy_sync_.next(), revocation_sync_.next()); }

void Agent::on_doc_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body) {
  auto req = decode_doc_request(body);
  if (!req || (req->kind != kDocKindPolicy && req->kind != kDocKindRevocations)) {
    ++stats_.bad_frames;
    return;
  }
  DocResponse resp{req->kind, {}};
  if (req->kind == kDocKindPolicy && policy_ && policy_->version > req->have)
    resp.envelope = policy_envelope_;
  if (req->kind == kDocKindRevocations && revocations_ && revocations_->version > req->have) {
    resp.envelope = revocations_envelope_;
  }
  send_frame(now, from, FrameKind::kSignedDocResponse, encode_doc_response(resp));
}

void Agent::on_doc_response(TimePoint now, const Endpoint& from, std::span<const std::byte> body) {
  auto resp = decode_doc_response(body);
  if (!resp || (resp->kind != kDocKindPolicy && resp->kind != kDocKindRevocations)) {
    ++stats_.bad_frames;
    policy_sync_.on_response(from, false);
    revocation_sync_.on_response(from, false);
    return;
  }
  const bool policy = resp->kind == kDocKindPolicy;
  DocSync& sync = policy ? policy_sync_ : revocation_sync_;
  if (resp->envelope.empty() || !trust_) {
    sync.on_response(from, false);
    return;
  }
  auto r = policy ? accept_policy(now, resp->envelope, "peer " + from.to_string())
                  : accept_revocations(now, resp->envelope, "peer " + from.to_string());
  sync.on_response(from, r.has_value());
  if (!r) {
    // Logged once per sender and reason: a peer repeating a bad document must not flood the log.
    const std::string key = from.to_string() + " " + r.error().message;
    if (policy_logged_.size() < kMaxLoggedRejections && policy_logged_.insert(key).second) {
      log_->warn("{} from peer rejected from={} why={}", policy ? "policy" : "revocation list",
                 from.to_string(), r.error().message);
    }
  }
}

void Agent::rpc_policy_apply(TimePoint now, const std::string& peer, const json& params) {
  if (!trust_) return reply_error(peer, std::string("policy apply: ") + kNoTrustRoot);
  auto it = params.find("policy");
  if (it == params.end() || !it->is_string())
    return reply_error(peer, "policy apply: give the signed policy text");
  auto envelope = tr::unarmor_policy(it->get_ref<const std::string&>());
  if (!envelope) {
    ++policy_stats_.malformed;
    return reply_error(peer, "policy apply: policy refused (malformed): " + envelope.error().message);
  }
  auto r = accept_policy(now, *envelope, "rpc");
  if (!r) return reply_error(peer, "policy apply: " + r.error().message);
  reply(peer, json{{"applied", true}, {"version", *r}});
}

json Agent::policy_stats_json() const {
  return json{{"version", policy_ ? policy_->version : 0},
              {"accepted", policy_stats_.accepted},
              {"rejected", rejected_json(policy_stats_)},
              {"fetches_sent", policy_sync_.stats().fetches_sent},
              {"fetch_timeouts", policy_sync_.stats().fetch_timeouts}};
}

json Agent::policy_rpc_json() const {
  json out{{"cluster", cfg_.cluster}, {"trust", trust_.has_value()}, {"stats", policy_stats_json()}};
  out["policy"] = nullptr;
  if (policy_) {
    auto d = describe_policy(policy_envelope_);
    if (d) {
      // Verified when it was accepted (or re-verified at start); the agent enforces it.
      (*d)["verification"] = json{{"valid", true}, {"status", "valid"}, {"reason", ""}};
      (*d)["expired"] = policy_->expires && wall_now() >= *policy_->expires;
      out["policy"] = std::move(*d);
    }
  }
  return out;
}

}  // namespace weft::agent
