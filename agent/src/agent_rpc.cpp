// The RPC server: a ROUTER on ipc://PATH; REQ clients send [identity][""][request].

#include <spdlog/spdlog.h>

#include "agent_impl.h"
#include "msgpack_json.h"

namespace weft::agent {

namespace {

constexpr auto kJoinWait = std::chrono::seconds(5);

json tags_json(const std::vector<std::byte>& meta) {
  auto m = decode_meta(meta);
  return m ? json(m->tags) : json::object();
}

template <std::size_t N>
json by_reason(const std::array<std::uint64_t, N>& counts) {
  json j = json::object();
  for (std::size_t i = 0; i < N; ++i) j[transport::to_string(static_cast<transport::OpenError>(i))] = counts[i];
  return j;
}

}  // namespace

void Agent::reply(const std::string& peer, const json& result) {
  send_reply(peer, json{{"v", kRpcVersion}, {"ok", true}, {"result", result}});
}

void Agent::reply_error(const std::string& peer, const std::string& message) {
  send_reply(peer, json{{"v", kRpcVersion}, {"ok", false}, {"error", message}});
}

// REQ framing back: [identity][empty delimiter][reply]. Never blocks: a client that went away
// just loses its answer.
void Agent::send_reply(const std::string& peer, const json& reply) {
  const std::vector<std::uint8_t> bytes = json::to_msgpack(reply);
  rpc_touched_ = true;
  try {
    rpc_.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    rpc_.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    rpc_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    log_->warn("rpc reply failed: {}", e.what());
  }
}

void Agent::on_rpc() {
  rpc_touched_ = true;
  for (int n = 0; n < 64; ++n) {
    std::vector<zmq::message_t> parts;
    try {
      zmq::message_t m;
      if (!rpc_.recv(m, zmq::recv_flags::dontwait)) return;
      parts.push_back(std::move(m));
      while (parts.back().more() && parts.size() < 8) {
        zmq::message_t next;
        if (!rpc_.recv(next, zmq::recv_flags::dontwait)) break;
        parts.push_back(std::move(next));
      }
      while (parts.back().more()) {  // drain an over-long multipart message
        zmq::message_t skip;
        if (!rpc_.recv(skip, zmq::recv_flags::dontwait)) break;
      }
    } catch (const zmq::error_t& e) {
      log_->warn("rpc receive failed: {}", e.what());
      return;
    }
    ++stats_.rpc_requests;
    // REQ framing: [identity][empty delimiter][request].
    if (parts.size() != 3 || parts[1].size() != 0) {
      ++stats_.rpc_bad_requests;
      if (parts.size() >= 2 && parts[1].size() == 0) reply_error(parts[0].to_string(), "bad request: expected one frame");
      continue;
    }
    const std::string peer = parts[0].to_string();
    const zmq::message_t& body = parts[2];
    if (body.size() > kMaxRequestBytes) {
      ++stats_.rpc_oversized;
      reply_error(peer, "request of " + std::to_string(body.size()) + " bytes is over the limit of " +
                            std::to_string(kMaxRequestBytes));
      continue;
    }
    // Depth-limited: the parser recurses per nesting level (msgpack_json.h).
    auto parsed = msgpack_object(std::span(static_cast<const std::byte*>(body.data()), body.size()), kMaxRequestBytes);
    if (!parsed) {
      ++stats_.rpc_bad_requests;
      reply_error(peer, "bad request: not a msgpack map (nested at most " + std::to_string(kMaxMsgpackDepth) +
                            " deep)");
      continue;
    }
    json& req = *parsed;
    if (!req.contains("method") || !req["method"].is_string() ||
        (req.contains("params") && !req["params"].is_object())) {
      ++stats_.rpc_bad_requests;
      reply_error(peer, "bad request: expected {\"v\", \"method\", \"params\"}");
      continue;
    }
    if (req.contains("v") && req["v"] != kRpcVersion) {
      ++stats_.rpc_bad_requests;
      reply_error(peer, "unsupported rpc version (this agent speaks " + std::to_string(kRpcVersion) + ")");
      continue;
    }
    const json params = req.contains("params") ? req["params"] : json::object();
    try {
      dispatch(Clock::now(), peer, req["method"].get<std::string>(), params);
    } catch (const json::exception& e) {
      ++stats_.rpc_bad_requests;
      reply_error(peer, std::string("bad request: ") + e.what());
    }
  }
}

void Agent::dispatch(TimePoint now, const std::string& peer, const std::string& method, const json& params) {
  if (method == "members") {
    reply(peer, json{{"members", members_json()}});
  } else if (method == "info") {
    reply(peer, info_json());
  } else if (method == "join") {
    if (!params.contains("addrs") || !params["addrs"].is_array() || params["addrs"].empty()) {
      return reply_error(peer, "join: give at least one address");
    }
    std::vector<Endpoint> seeds;
    for (const json& a : params["addrs"]) {
      if (!a.is_string()) return reply_error(peer, "join: addresses must be strings");
      std::string text = a.get<std::string>();
      if (text.find(':') == std::string::npos) text += ":" + std::to_string(kDefaultPort);
      auto e = Endpoint::parse(text);
      if (!e || e->port == 0) return reply_error(peer, "join: '" + a.get<std::string>() + "' is not an address like 10.0.0.1:7946");
      seeds.push_back(*e);
    }
    if (leaving_) return reply_error(peer, "join: the agent is leaving");
    for (const Endpoint& e : seeds) {
      if (std::find(rejoin_seeds_.begin(), rejoin_seeds_.end(), e) == rejoin_seeds_.end()) rejoin_seeds_.push_back(e);
    }
    node_->join(now, seeds);
    join_waiters_.push_back(Waiter{peer, now + kJoinWait});
  } else if (method == "leave") {
    leave_waiters_.push_back(Waiter{peer, now});
    begin_leave(now);
  } else if (method == "service.register") {
    ServiceSpec spec;
    spec.name = params.value("name", "");
    const auto port = params.value("port", std::int64_t{0});
    if (port < 1 || port > 65535) return reply_error(peer, "service register: give --port 1..65535");
    spec.port = static_cast<std::uint16_t>(port);
    if (params.contains("tags")) spec.tags = params["tags"].get<std::vector<std::string>>();
    spec.check = params.value("check", "");
    if (params.contains("interval")) {
      auto d = parse_duration(params["interval"].get<std::string>());
      if (!d) return reply_error(peer, "service register: --interval: " + d.error().message);
      spec.interval = *d;
    }
    // register_service checks everything (check_service_spec), for the config file's services too.
    if (auto r = register_service(spec); !r) return reply_error(peer, "service register: " + r.error().message);
    reply(peer, json{{"registered", spec.name}});
  } else if (method == "service.deregister") {
    const std::string name = params.value("name", "");
    auto r = deregister_service(name);
    if (!r) return reply_error(peer, "service deregister: " + r.error().message);
    if (!*r) return reply_error(peer, "service deregister: no service '" + name + "' on this node");
    reply(peer, json{{"deregistered", name}});
  } else if (method == "services") {
    reply(peer, json{{"services", services_json()}});
  } else if (method == "upstream.add") {
    UpstreamSpec u;
    u.name = params.value("name", "");
    auto e = Endpoint::parse(params.value("listen", ""));
    if (!e) return reply_error(peer, "upstream add: --listen must be IP:PORT, like 127.0.0.1:9001");
    u.listen = *e;
    u.balance = params.value("balance", "peak-ewma");
    u.as = params.value("as", "");
    if (auto r = add_upstream(u); !r) return reply_error(peer, "upstream add: " + r.error().message);
    reply(peer, json{{"added", u.name}, {"listen", u.listen.to_string()}, {"as", u.as.empty() ? json(nullptr) : json(u.as)}});
  } else if (method == "upstream.remove") {
    const std::string name = params.value("name", "");
    auto r = remove_upstream(name);
    if (!r) return reply_error(peer, "upstream remove: " + r.error().message);
    if (!*r) return reply_error(peer, "upstream remove: no upstream '" + name + "'");
    reply(peer, json{{"removed", name}});
  } else if (method == "upstreams") {
    reply(peer, json{{"upstreams", upstreams_json()}});
  } else if (method == "routes") {
    reply(peer, json{{"routes", routes_json()}});
  } else if (method == "stats") {
    json s = proxy_stats_json();
    s["policy"] = policy_stats_json();
    s["revocations"] = revocations_stats_json();
    s["key_ops"] = key_ops_stats_json();
    reply(peer, s);
  } else if (method == "policy_apply") {
    rpc_policy_apply(now, peer, params);
  } else if (method == "policy") {
    reply(peer, policy_rpc_json());
  } else if (method == "revocations_apply") {
    rpc_revocations_apply(now, peer, params);
  } else if (method == "revocations") {
    reply(peer, revocations_rpc_json());
  } else if (method == "keys.list" || method == "keys.install" || method == "keys.use" || method == "keys.remove") {
    std::string key;
    if (method != "keys.list") {
      if (!params.contains("key") || !params["key"].is_string()) return reply_error(peer, method + ": give a key");
      key = params["key"].get<std::string>();
    }
    std::string signed_text;  // the operator-signed step (`--operator-key`), armored
    if (auto it = params.find("signed"); it != params.end()) {
      if (!it->is_string()) return reply_error(peer, method + ": 'signed' must be the armored key operation");
      signed_text = it->get<std::string>();
    }
    start_key_op(now, peer, method.substr(5), key, signed_text);
  } else {
    reply_error(peer, "unknown method '" + method + "'");
  }
}

void Agent::check_waiters(TimePoint now) {
  if (!join_waiters_.empty()) {
    const bool joined = node_->joined();
    std::erase_if(join_waiters_, [&](const Waiter& w) {
      if (joined) {
        reply(w.peer, json{{"joined", true}, {"members", node_->count(gossip::MemberState::kAlive)}});
        return true;
      }
      if (now >= w.deadline) {
        reply_error(w.peer, "join: no seed answered within 5 s");
        return true;
      }
      return false;
    });
  }
  if (key_op_ && (key_op_->waiting.empty() || now >= key_op_->waiter.deadline)) finish_key_op(now);
}

json Agent::members_json() const {
  json arr = json::array();
  for (const gossip::MemberInfo& m : node_->members()) {
    arr.push_back(json{{"name", m.name},
                       {"addr", m.addr.to_string()},
                       {"status", gossip::to_string(m.state)},
                       {"incarnation", m.incarnation},
                       {"tags", tags_json(m.meta)}});
  }
  return arr;
}

json Agent::info_json() const {
  const gossip::GossipStats& g = node_->stats();
  json rejected = json::object();
  for (std::size_t i = 0; i < g.rejected.size(); ++i) {
    rejected[gossip::to_string(static_cast<gossip::DecodeError>(i))] = g.rejected[i];
  }
  json gossip_stats = {
      {"packets_sent", g.packets_sent}, {"packets_received", g.packets_received}, {"bytes_sent", g.bytes_sent},
      {"bytes_received", g.bytes_received}, {"streams_sent", g.streams_sent}, {"streams_received", g.streams_received},
      {"stream_bytes_sent", g.stream_bytes_sent}, {"stream_bytes_received", g.stream_bytes_received},
      {"probes", g.probes}, {"probe_acks", g.probe_acks}, {"indirect_probes", g.indirect_probes},
      {"probe_failures", g.probe_failures}, {"suspicions_started", g.suspicions_started},
      {"failed_declared", g.failed_declared}, {"last_words", g.last_words}, {"refutes", g.refutes},
      {"name_conflicts", g.name_conflicts},
      {"refused_failures", g.refused_failures}, {"unreachable_reports", g.unreachable_reports},
      {"syncs_started", g.syncs_started}, {"syncs_completed", g.syncs_completed},
      {"syncs_in_agreement", g.syncs_in_agreement}, {"syncs_timed_out", g.syncs_timed_out},
      {"syncs_served", g.syncs_served}, {"stale_accusations_answered", g.stale_accusations_answered},
      {"accusations_above_known", g.accusations_above_known}, {"refutes_above_own", g.refutes_above_own},
      {"refutes_saturated", g.refutes_saturated}, {"leave_echoes", g.leave_echoes},
      {"claims_signed", g.claims_signed}, {"claims_verified", g.claims_verified},
      {"claims_rejected", g.claims_rejected}, {"claims_unknown_signer", g.claims_unknown_signer},
      {"rejected", rejected}};
  if (claims_) {
    const ClaimStats& c = claims_->stats();
    gossip_stats["claim_checks"] = {{"verified", c.verified},       {"bad_certificate", c.bad_certificate},
                                    {"expired", c.expired},         {"wrong_node", c.wrong_node},
                                    {"revoked", c.revoked},         {"bad_signature", c.bad_signature},
                                    {"cert_cache_hits", c.cert_cache_hits}};
  }
  const transport::UdpStats& u = udp_.stats();
  const transport::ReliableStats& r = reliable_.stats();
  json agent_stats = {{"rejected_datagrams", by_reason(stats_.rejected_datagrams)},
                      {"rejected_streams", by_reason(stats_.rejected_streams)},
                      {"bad_frames", stats_.bad_frames},
                      {"rpc_requests", stats_.rpc_requests},
                      {"rpc_bad_requests", stats_.rpc_bad_requests},
                      {"rpc_oversized", stats_.rpc_oversized},
                      {"key_ops_served", stats_.key_ops_served},
                      {"key_ops", key_ops_stats_json()},
                      {"persist_errors", stats_.persist_errors},
                      {"loop_wakeups", stats_.loop_wakeups}};
  const auto self = node_->member(cfg_.node);
  return json{
      {"node",
       {{"name", cfg_.node},
        {"addr", cfg_.advertised().to_string()},
        {"bind", cfg_.bind.to_string()},
        {"incarnation", node_->incarnation()},
        {"status", self ? gossip::to_string(self->state) : "unknown"},
        {"joined", node_->joined()},
        {"health_score", node_->health_score()},
        {"fingerprint", transport::fingerprint(identity_)},
        {"tags", cfg_.tags}}},
      {"members",
       {{"alive", node_->count(gossip::MemberState::kAlive)},
        {"suspect", node_->count(gossip::MemberState::kSuspect)},
        {"failed", node_->count(gossip::MemberState::kFailed)},
        {"left", node_->count(gossip::MemberState::kLeft)}}},
      {"keys", key_ids_json()},
      {"trust", trust_json()},
      {"stats",
       {{"gossip", gossip_stats},
        {"udp",
         {{"sent", u.sent}, {"send_dropped", u.send_dropped}, {"send_errors", u.send_errors},
          {"received", u.received}, {"truncated", u.truncated}, {"unreachable", u.unreachable}}},
        {"reliable",
         {{"sent", r.sent}, {"send_dropped", r.send_dropped}, {"received", r.received}, {"connects", r.connects},
          {"idle_closed", r.idle_closed}}},
        {"agent", agent_stats}}}};
}

}  // namespace weft::agent
