// The proxy under a trust root (ProxyTrust, proxy.h): the peers' certificates in handshakes,
// the services certificates grant, policy decisions and rate limits on new streams, and the
// re-checks of live sessions and connections when the snapshot changes or a certificate
// expires.
//
// Where each check runs:
//   handshake (both ends)   check_peer_cert: present, verify_cert (operators, wall clock, skew),
//                           names the peer's node and the Noise static key it proved, not revoked
//   app connects (initiator) admit(kInitiator): our certificate grants `as`, the policy allows
//                           as -> service; else RST at once, no session dialled
//   stream starts (initiator) the responder's certificate grants the service, else that
//                           instance counts as failed and another is tried (conn_start_stream)
//   OPEN (responder)        admit(kResponder): the initiator's certificate grants `from`, ours
//                           the destination, the policy allows, the rule's bucket has a token;
//                           else RESET(policy_denied)
//   new snapshot            recheck_sessions (revoked, expired, operators) and recheck_conns
//                           (grants, policy); every kCertCheck: check_cert_expiry
//
// The wall clock is read only here (certificate validity is wall-clock time); everything else
// in the proxy runs on now_ (steady_clock).

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>

#include "proxy_impl.h"

namespace weft::transport {
namespace {

bool grants(const NodeCert& cert, const std::string& service) {
  return std::find(cert.services.begin(), cert.services.end(), service) != cert.services.end();
}

// "unknown issuer" -> "unknown_issuer": kill reasons and log values are single tokens.
std::string token_of(const char* text) {
  std::string s(text);
  std::replace(s.begin(), s.end(), ' ', '_');
  return s;
}

const char* side_name(Proxy::Impl::Side side) {
  return side == Proxy::Impl::Side::kInitiator ? "initiator" : "responder";
}

std::string rule_name(const Decision& d) { return d.rule ? std::to_string(*d.rule) : "default"; }

}  // namespace

UnixTime Proxy::Impl::wall_now() {
  return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
}

void Proxy::Impl::refresh_trust() {
  std::shared_ptr<const ProxyTrust> t;
  {
    std::lock_guard lock(mu_);
    t = shared_trust_;
  }
  if (t == trust_) return;
  const bool own_cert_changed = t && (!trust_ || trust_->own_cert != t->own_cert);
  trust_ = std::move(t);
  own_cert_.reset();
  if (trust_) {
    if (auto d = decode_cert(trust_->own_cert)) {
      own_cert_ = std::move(d->cert);
    } else {
      // The agent verified it at start; without it every stream is refused (nothing granted).
      log_->error("trust_own_cert_invalid error=\"{}\"", d.error().message);
    }
    if (trust_->policy != limiter_policy_) {
      limiter_ = RateLimiter(kRateLimiterPairs);  // a new policy starts with full buckets
      limiter_policy_ = trust_->policy;
    }
    next_cert_check_ = now_ + kCertCheck;
    log_->info("trust_updated operators={} revoked={} policy_version={}", trust_->operators.size(),
               trust_->revoked.size(), trust_->policy ? std::to_string(trust_->policy->version) : "none");
  } else {
    limiter_ = RateLimiter(kRateLimiterPairs);
    limiter_policy_.reset();
    log_->info("trust_updated operators=0");
  }
  if (own_cert_changed) renew_sessions();
  recheck_sessions();
  recheck_conns();
}

// The peers hold our old certificate in the sessions we initiated (what it grants, when it
// expires): new connections get new sessions, which carry the new one; the old sessions finish
// their streams and close (at once when they have none).
void Proxy::Impl::renew_sessions() {
  std::vector<std::uint64_t> idle;
  for (auto& [id, s] : sessions_) {
    if (!s->pooled) continue;
    if (auto it = pool_.find(s->node); it != pool_.end() && it->second == id) pool_.erase(it);
    s->pooled = false;
    if (s->state == Session::State::kUp && s->streams.empty() && s->waiting.empty()) idle.push_back(id);
  }
  for (std::uint64_t id : idle) {
    if (Session* s = session(id)) close_session_orderly(*s);
  }
}

std::string Proxy::Impl::check_peer_cert(Session& s, std::span<const std::byte> envelope, const std::string& node,
                                         std::string& detail) {
  if (envelope.empty()) {
    ++stats_.certs_missing;
    return "handshake_cert_missing";
  }
  auto r = verify_cert(envelope, trust_->operators, wall_now(), trust_->skew);
  stats_.peer_certs.count(r);
  if (!r) {
    detail = r.error().message;
    return "handshake_cert_" + token_of(to_string(r.error().kind));
  }
  if (r->node != node || r->kx_pk != s.peer_static) {
    ++stats_.certs_mismatched;
    detail = r->node != node ? "certificate names node " + r->node : "certificate names another key";
    return "handshake_cert_mismatch";
  }
  if (trust_->revoked.count({r->issuer, r->serial}) != 0) {
    ++stats_.certs_revoked;
    detail = "serial " + std::to_string(r->serial) + " issuer " + to_hex(r->issuer);
    return "handshake_cert_revoked";
  }
  s.peer_cert = std::move(*r);
  s.peer_cert_bytes.assign(envelope.begin(), envelope.end());
  return {};
}

std::string Proxy::Impl::recheck_session(const Session& s, UnixTime now) {
  if (!trust_) {
    // As before issue 5: the responder accepts only the key gossip gives for the name (the
    // initiator dialled with that key, IK proved it).
    if (s.initiator) return {};
    const KxPublicKey* want = nullptr;
    if (routes_) {
      if (auto k = routes_->peer_keys.find(s.node); k != routes_->peer_keys.end()) want = &k->second;
    }
    return want != nullptr && *want == s.peer_static ? std::string() : "recheck_key_mismatch";
  }
  if (s.peer_cert_bytes.empty()) return "recheck_cert_missing";
  auto r = verify_cert(s.peer_cert_bytes, trust_->operators, now, trust_->skew);
  if (!r) return "recheck_cert_" + token_of(to_string(r.error().kind));
  if (trust_->revoked.count({r->issuer, r->serial}) != 0) return "recheck_cert_revoked";
  return {};
}

void Proxy::Impl::recheck_sessions() {
  const UnixTime now = wall_now();
  std::vector<std::uint64_t> ids;
  for (const auto& [id, s] : sessions_) {
    // A session still in its handshake is checked with this snapshot when the handshake ends.
    if (s->state == Session::State::kUp || s->state == Session::State::kClosing) ids.push_back(id);
  }
  for (std::uint64_t id : ids) {
    Session* s = session(id);
    if (s == nullptr) continue;
    const std::string why = recheck_session(*s, now);
    if (why.empty()) continue;
    ++stats_.sessions_closed_on_recheck;
    log_->info("session_closed_on_recheck node={} reason={} streams={}", s->node, why, s->streams.size());
    close_session_orderly(*s);  // its conns are reset, or retried elsewhere
  }
}

void Proxy::Impl::check_cert_expiry() {
  const UnixTime now = wall_now();
  std::vector<std::pair<std::uint64_t, std::string>> expired;
  for (const auto& [id, s] : sessions_) {
    if (s->peer_cert && now >= s->peer_cert->not_after + trust_->skew) expired.emplace_back(id, s->node);
  }
  for (const auto& [id, node] : expired) {
    Session* s = session(id);
    if (s == nullptr) continue;
    ++stats_.sessions_closed_on_recheck;
    log_->info("session_closed_on_recheck node={} reason=recheck_cert_expired streams={}", node, s->streams.size());
    close_session_orderly(*s);
  }
}

void Proxy::Impl::recheck_conns() {
  if (!trust_) return;  // no trust: nothing to deny
  std::vector<std::uint64_t> ids;
  ids.reserve(conns_.size());
  for (const auto& [id, c] : conns_) ids.push_back(id);
  for (std::uint64_t id : ids) {
    Conn* c = conn(id);
    if (c == nullptr) continue;
    Session* s = session(c->session);
    const NodeCert* peer = s != nullptr && s->peer_cert ? &*s->peer_cert : nullptr;
    const Side side = c->client ? Side::kInitiator : Side::kResponder;
    bool granted = true;
    if (c->client) {
      granted = (c->from.empty() || (own_cert_ && grants(*own_cert_, c->from))) &&
                (s == nullptr || s->state != Session::State::kUp || (peer != nullptr && grants(*peer, c->name)));
    } else {
      granted = (c->from.empty() || (peer != nullptr && grants(*peer, c->from))) && own_cert_ && grants(*own_cert_, c->name);
    }
    std::string rule = "grant";
    if (granted && trust_->policy) {
      const Decision d = decide(*trust_->policy, c->from, c->name);
      if (d.effective == PolicyAction::kAllow) continue;
      rule = rule_name(d);
    } else if (granted) {
      continue;
    }
    const std::string node = c->client ? c->node : (s != nullptr ? s->node : c->node);
    count_policy(c->from, c->name, &PolicyCounters::closed_on_recheck);
    log_policy("policy_closed_on_recheck", side, c->from, c->name, node, rule);
    abort_conn(*c, ResetReason::kPolicyDenied);  // RST to the app or service, RESET on the stream
  }
}

bool Proxy::Impl::admit(Side side, const std::string& from, const std::string& to, const std::string& node,
                        const NodeCert* peer_cert, const PolicyRule** rule) {
  if (rule != nullptr) *rule = nullptr;
  bool granted = true;
  if (side == Side::kInitiator) {
    // The app may claim only a service our certificate grants (the agent checks it too).
    granted = from.empty() || (own_cert_ && grants(*own_cert_, from));
  } else {
    granted = (from.empty() || (peer_cert != nullptr && grants(*peer_cert, from))) && own_cert_ &&
              grants(*own_cert_, to);
  }
  if (!granted) {
    count_policy(from, to, &PolicyCounters::not_granted);
    log_policy("policy_not_granted", side, from, to, node, "grant");
    return false;
  }
  if (!trust_->policy) return true;  // certified peers and granted services only
  const Policy& p = *trust_->policy;
  const Decision d = decide(p, from, to);  // anonymous (""): only from = "*" rules match
  if (d.effective == PolicyAction::kDeny) {
    count_policy(from, to, &PolicyCounters::denied);
    log_policy("policy_deny", side, from, to, node, rule_name(d));
    return false;
  }
  if (d.shadow_denied) {
    count_policy(from, to, &PolicyCounters::shadow_denied);
    log_policy("policy_shadow_deny", side, from, to, node, rule_name(d));
  }
  // The responder keeps the buckets: it sees every initiator's connections to its services.
  if (side == Side::kResponder && d.rule && p.rules[*d.rule].rate) {
    if (!limiter_.admit(from, to, *p.rules[*d.rule].rate, now_)) {
      count_policy(from, to, &PolicyCounters::rate_limited);
      log_policy("policy_rate_limited", side, from, to, node, rule_name(d));
      return false;
    }
  }
  if (!d.shadow_denied) count_policy(from, to, &PolicyCounters::allowed);
  if (rule != nullptr && d.rule) *rule = &p.rules[*d.rule];
  return true;
}

void Proxy::Impl::apply_limits(Conn& c, const PolicyRule* rule) const {
  c.idle_timeout = rule != nullptr && rule->idle_timeout ? Duration(*rule->idle_timeout) : cfg_.idle_timeout;
  c.connect_timeout = rule != nullptr && rule->connect_timeout ? Duration(*rule->connect_timeout) : cfg_.connect_timeout;
  c.max_attempts = rule != nullptr && rule->retries ? *rule->retries + 1 : cfg_.max_attempts;
}

void Proxy::Impl::count_policy(const std::string& from, const std::string& to,
                               std::uint64_t PolicyCounters::*field) {
  ++(stats_.policy.*field);
  std::string key = (from.empty() ? std::string("-") : from) + "->" + to;
  auto it = stats_.policy_pairs.find(key);
  if (it == stats_.policy_pairs.end()) {
    if (stats_.policy_pairs.size() >= kMaxPolicyPairs) key = "other";
    it = stats_.policy_pairs.try_emplace(std::move(key)).first;
  }
  ++(it->second.*field);
}

void Proxy::Impl::log_policy(std::string_view event, Side side, const std::string& from, const std::string& to,
                             const std::string& node, std::string_view rule) {
  if (now_ - log_window_ >= std::chrono::seconds(1)) {
    if (log_suppressed_ > 0) log_->info("policy_log_suppressed lines={}", log_suppressed_);
    log_window_ = now_;
    log_lines_ = 0;
    log_suppressed_ = 0;
  }
  if (log_lines_ >= kMaxPolicyLogsPerSecond) {
    ++log_suppressed_;
    ++stats_.policy_logs_suppressed;
    return;
  }
  ++log_lines_;
  log_->info("{} from={} to={} node={} rule={} side={}", event, from.empty() ? "-" : from, to,
             node.empty() ? "-" : node, rule, side_name(side));
}

}  // namespace weft::transport
