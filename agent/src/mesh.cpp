// The agent's side of the data plane (weft::transport::Proxy, proxy.h): starting the proxy,
// upstreams (RPC, config file, SQLite), and the route snapshots it gets from gossip and the
// catalog. The proxy runs on its own thread; the agent only hands it immutable RouteTables.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "agent_impl.h"
#include "msgpack_json.h"

namespace weft::agent {

namespace {

transport::Balance balance_of(const std::string& b) {
  return b == "round-robin" ? transport::Balance::kRoundRobin : transport::Balance::kPeakEwma;
}

// Stored rows: {"name", "listen", "balance"} and, when set, "as" (rows written before `--as`
// existed have none and read back as anonymous).
std::vector<std::byte> encode_upstream(const UpstreamSpec& u) {
  json j{{"name", u.name}, {"listen", u.listen.to_string()}, {"balance", u.balance}};
  if (!u.as.empty()) j["as"] = u.as;
  return to_msgpack_bytes(j);
}

Result<UpstreamSpec> decode_upstream(std::span<const std::byte> bytes) {
  try {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    const json j = json::from_msgpack(p, p + bytes.size());
    UpstreamSpec u;
    u.name = j.at("name").get<std::string>();
    auto e = Endpoint::parse(j.at("listen").get<std::string>());
    if (!e) return fail("bad listen address");
    u.listen = *e;
    u.balance = j.value("balance", "peak-ewma");
    u.as = j.value("as", "");
    if (auto r = check_upstream(u); !r) return fail(r.error().message);
    return u;
  } catch (const json::exception& e) {
    return fail(std::string("not an upstream: ") + e.what());
  }
}

}  // namespace

std::optional<std::string> Agent::start_proxy() {
  transport::ProxyConfig pc;
  pc.node = cfg_.node;
  pc.mesh_bind = cfg_.mesh_bind;
  pc.kx_pk = identity_.kx_pk;
  pc.kx_sk = identity_.kx_sk;
  auto p = transport::Proxy::start(pc, proxy_log_);
  if (!p) return "cannot listen for the mesh at " + cfg_.mesh_bind.to_string() + ": " + p.error().message;
  proxy_ = std::move(*p);
  // With a trust root: certificates from the first handshake on, and the stored policy (if any).
  publish_trust();
  routes_dirty_ = true;
  publish_routes();

  // Upstreams: stored ones, then the config file's (declared again at every start).
  std::map<std::string, UpstreamSpec> all;
  if (auto entries = store_.entries(store::EntryKind::kUpstream)) {
    for (const store::Entry& e : *entries) {
      auto u = decode_upstream(e.spec);
      if (!u || u->name != e.name) {
        log_->warn("upstream skipped name={} why={}", e.name, u ? "name mismatch" : u.error().message);
        continue;
      }
      all[u->name] = *u;
    }
  } else {
    return entries.error().message;
  }
  for (const UpstreamSpec& u : cfg_.upstreams) {
    if (auto r = store_.put_entry(store::EntryKind::kUpstream, {u.name, encode_upstream(u)}); !r) {
      return r.error().message;
    }
    all[u.name] = u;
  }
  for (const auto& [name, u] : all) {
    // A listener that cannot bind (the port is taken), or an `as` the certificate no longer
    // grants, is reported and fixed by the operator; the agent still serves gossip and the
    // other upstreams.
    if (auto r = check_upstream_as(u); !r) {
      log_->error("upstream not started name={} listen={} why={}", name, u.listen.to_string(), r.error().message);
      continue;
    }
    if (auto r = proxy_->add_upstream({u.name, u.listen, balance_of(u.balance), u.as}); !r) {
      log_->error("upstream not started name={} listen={} why={}", name, u.listen.to_string(), r.error().message);
      continue;
    }
    upstreams_[name] = u;
  }
  return std::nullopt;
}

// The initiating agent may claim only services its certificate grants (issue 5). Without a trust
// root `as` is not checked (and no peer checks it either).
Result<void> Agent::check_upstream_as(const UpstreamSpec& u) const {
  if (u.as.empty() || !trust_) return {};
  const auto& granted = trust_->cert.services;
  if (std::find(granted.begin(), granted.end(), u.as) != granted.end()) return {};
  std::string list;
  for (const std::string& s : granted) list += (list.empty() ? "" : ", ") + s;
  return fail("--as " + u.as + ": this node's certificate does not grant service '" + u.as + "' (it grants: " +
              (list.empty() ? "none" : list) + ")");
}

Result<void> Agent::add_upstream(const UpstreamSpec& u) {
  if (auto r = check_upstream(u); !r) return r;
  if (auto it = upstreams_.find(u.name); it != upstreams_.end()) {
    if (it->second == u) return {};
    return fail("upstream '" + u.name + "' exists (listening on " + it->second.listen.to_string() +
                "); remove it first");
  }
  for (const auto& [name, other] : upstreams_) {
    if (other.listen == u.listen) return fail(u.listen.to_string() + " is already upstream '" + name + "'");
  }
  if (auto r = check_upstream_as(u); !r) return r;
  if (auto r = proxy_->add_upstream({u.name, u.listen, balance_of(u.balance), u.as}); !r) {
    return fail("cannot listen on " + u.listen.to_string() + ": " + r.error().message);
  }
  if (auto r = store_.put_entry(store::EntryKind::kUpstream, {u.name, encode_upstream(u)}); !r) {
    (void)proxy_->remove_upstream(u.name);
    return r;
  }
  upstreams_[u.name] = u;
  log_->info("upstream added name={} listen={} balance={} as={}", u.name, u.listen.to_string(), u.balance,
             u.as.empty() ? "-" : u.as);
  return {};
}

Result<bool> Agent::remove_upstream(const std::string& name) {
  auto gone = store_.delete_entry(store::EntryKind::kUpstream, name);
  if (!gone) return fail(gone.error().message);
  if (upstreams_.erase(name) == 0) return *gone;
  if (auto r = proxy_->remove_upstream(name); !r) log_->warn("upstream remove name={} why={}", name, r.error().message);
  log_->info("upstream removed name={}", name);
  return true;
}

// Gossip and the catalog to a snapshot: an instance is in rotation only if its check passes and
// its node is alive (suspect and failed nodes leave at once); a node whose metadata lacks a mesh
// port or key cannot be reached and is left out.
void Agent::publish_routes() {
  if (!routes_dirty_ || !proxy_) return;
  routes_dirty_ = false;
  auto t = std::make_shared<transport::RouteTable>();
  for (const gossip::MemberInfo& m : node_->members()) {
    if (m.name == cfg_.node) continue;
    if (m.state != gossip::MemberState::kAlive && m.state != gossip::MemberState::kSuspect) continue;
    auto meta = decode_meta(m.meta);
    if (!meta || meta->mesh_port == 0 || meta->kx_pk.size() != 32) continue;
    transport::KxPublicKey key{};
    std::memcpy(key.data(), meta->kx_pk.data(), key.size());
    t->peer_keys[m.name] = key;
    auto rn = remote_.nodes().find(m.name);
    if (rn == remote_.nodes().end()) continue;
    Endpoint mesh = m.addr;
    mesh.port = meta->mesh_port;
    for (const ServiceEntry& e : rn->second.catalog.services) {
      t->services[e.name].push_back(
          transport::RouteInstance{m.name, mesh, e.passing && m.state == gossip::MemberState::kAlive});
    }
  }
  for (const auto& [name, s] : local_services_) t->local_services[name] = s.spec.port;
  proxy_->set_routes(std::move(t));
}

json Agent::upstreams_json() const {
  json arr = json::array();
  for (const auto& [name, u] : upstreams_) {
    arr.push_back(json{{"name", name},
                       {"listen", u.listen.to_string()},
                       {"balance", u.balance},
                       {"as", u.as.empty() ? json(nullptr) : json(u.as)}});
  }
  return arr;
}

namespace {

json counters_json(const transport::TrafficCounters& c) {
  json latency = json::array();
  for (std::uint64_t v : c.latency_us_log2) latency.push_back(v);
  return json{{"connections", c.connections}, {"active", c.active},     {"bytes_in", c.bytes_in},
              {"bytes_out", c.bytes_out},     {"failures", c.failures}, {"retries", c.retries},
              {"ejections", c.ejections},     {"latency_us_log2", latency}};
}

}  // namespace

json Agent::routes_json() const {
  const transport::ProxyStats s = proxy_->stats();
  json arr = json::array();
  for (const auto& [name, u] : upstreams_) {
    json instances = json::array();
    if (auto it = s.routes.find(name); it != s.routes.end()) {
      for (const transport::InstanceView& v : it->second) {
        instances.push_back(json{{"node", v.node},
                                 {"addr", v.mesh.to_string()},
                                 {"health", v.healthy ? "passing" : "critical"},
                                 {"ejected", v.ejected},
                                 {"rtt_ms", v.rtt_ms},
                                 {"weight", v.weight},
                                 {"active", v.active}});
      }
    }
    arr.push_back(json{{"upstream", name}, {"listen", u.listen.to_string()}, {"balance", u.balance},
                       {"instances", std::move(instances)}});
  }
  return arr;
}

json Agent::proxy_stats_json() const {
  const transport::ProxyStats s = proxy_->stats();
  json up = json::object();
  for (const auto& [name, c] : s.upstreams) up[name] = counters_json(c);
  json served = json::object();
  for (const auto& [name, c] : s.services) served[name] = counters_json(c);
  return json{{"upstreams", up},
              {"services", served},
              {"sessions_open", s.sessions_open},
              {"sessions_initiated", s.sessions_initiated},
              {"sessions_accepted", s.sessions_accepted},
              {"handshakes_failed", s.handshakes_failed},
              {"records_rejected", s.records_rejected},
              {"protocol_errors", s.protocol_errors},
              {"sessions_failed", s.sessions_failed},
              {"streams_refused", s.streams_refused},
              {"connections_open", s.connections_open},
              {"bytes_buffered", s.bytes_buffered},
              {"buffer_bytes_allocated", s.buffer_bytes_allocated},
              {"policy_decisions",
               {{"allowed", s.policy.allowed},
                {"denied", s.policy.denied},
                {"shadow_denied", s.policy.shadow_denied},
                {"rate_limited", s.policy.rate_limited},
                {"not_granted", s.policy.not_granted},
                {"closed_on_recheck", s.policy.closed_on_recheck}}}};
}

}  // namespace weft::agent
