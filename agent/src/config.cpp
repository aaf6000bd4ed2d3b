// Agent settings: TOML file + flags (flags win), checked into one AgentConfig.

#include "weft/agent/config.h"

#include "catalog.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <toml++/toml.h>

namespace weft::agent {

namespace {

// Settings read from the file, before the flags are laid over them.
struct FileSettings {
  std::optional<std::string> node, bind, advertise, data_dir, rpc, key_file, log_level, mesh_bind, cert, cluster;
  std::vector<std::string> operator_pubs;
  std::vector<std::string> join;
  std::optional<bool> insecure_plaintext, log_json;
  std::map<std::string, std::string> tags;
  std::vector<ServiceSpec> services;
  std::vector<UpstreamSpec> upstreams;
  gossip::Config gossip;
};

std::string where(const toml::node& n) {
  const auto& s = n.source();
  return "line " + std::to_string(s.begin.line);
}

Result<std::optional<std::string>> get_string(const toml::table& t, std::string_view key, const std::string& file) {
  const toml::node* n = t.get(key);
  if (!n) return std::optional<std::string>{};
  if (!n->is_string()) return fail(file + ": '" + std::string(key) + "' must be a string (" + where(*n) + ")");
  return std::optional<std::string>{n->as_string()->get()};
}

Result<std::optional<bool>> get_bool(const toml::table& t, std::string_view key, const std::string& file) {
  const toml::node* n = t.get(key);
  if (!n) return std::optional<bool>{};
  if (!n->is_boolean()) return fail(file + ": '" + std::string(key) + "' must be true or false (" + where(*n) + ")");
  return std::optional<bool>{n->as_boolean()->get()};
}

Result<void> read_gossip(const toml::table& g, const std::string& file, gossip::Config& c) {
  for (const auto& kv : g) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture those in lambdas.
    const std::string key(kv.first.str());
    const toml::node& v = kv.second;
    auto dur = [&](Duration& out) -> Result<void> {
      if (!v.is_string()) return fail(file + ": gossip." + key + " must be a duration string like \"500ms\" (" + where(v) + ")");
      auto d = parse_duration(v.as_string()->get());
      if (!d) return fail(file + ": gossip." + key + ": " + d.error().message);
      out = *d;
      return {};
    };
    auto count = [&](unsigned& out) -> Result<void> {
      if (!v.is_integer() || v.as_integer()->get() < 0 || v.as_integer()->get() > 1'000'000) {
        return fail(file + ": gossip." + key + " must be an integer from 0 to 1000000 (" + where(v) + ")");
      }
      out = static_cast<unsigned>(v.as_integer()->get());
      return {};
    };
    Result<void> r;
    if (key == "probe_interval") r = dur(c.probe_interval);
    else if (key == "probe_timeout") r = dur(c.probe_timeout);
    else if (key == "indirect_checks") r = count(c.indirect_checks);
    else if (key == "suspicion_mult") r = count(c.suspicion_mult);
    else if (key == "suspicion_max_mult") r = count(c.suspicion_max_mult);
    else if (key == "suspicion_confirmations") r = count(c.suspicion_confirmations);
    else if (key == "suspicion_min_floor") r = dur(c.suspicion_min_floor);
    else if (key == "gossip_interval") r = dur(c.gossip_interval);
    else if (key == "gossip_nodes") r = count(c.gossip_nodes);
    else if (key == "gossip_to_the_dead") r = dur(c.gossip_to_the_dead);
    else if (key == "retransmit_mult") r = count(c.retransmit_mult);
    else if (key == "push_pull_interval") r = dur(c.push_pull_interval);
    else if (key == "sync_timeout") r = dur(c.sync_timeout);
    else if (key == "reconnect_interval") r = dur(c.reconnect_interval);
    else if (key == "reap_after") r = dur(c.reap_after);
    else if (key == "reclaim_after") r = dur(c.reclaim_after);
    else if (key == "leave_fanout") r = count(c.leave_fanout);
    else if (key == "join_catchups") r = count(c.join_catchups);
    else if (key == "awareness_max") r = count(c.awareness_max);
    else if (key == "refute_fanout") r = count(c.refute_fanout);
    else if (key == "refused_confirmations") r = count(c.refused_confirmations);
    else if (key == "refused_fast_path") {
      if (!v.is_boolean()) return fail(file + ": gossip.refused_fast_path must be true or false (" + where(v) + ")");
      c.refused_fast_path = v.as_boolean()->get();
    }
    else return fail(file + ": unknown setting gossip." + key + " (" + where(v) + ")");
    if (!r) return r;
  }
  return {};
}

Result<Endpoint> parse_addr(const std::string& what, const std::string& text, bool allow_no_port);

// One [[upstream]] table: name, listen, balance, as (as `weft upstream add`).
Result<UpstreamSpec> read_upstream(const toml::node& n, const std::string& path) {
  const toml::table* t = n.as_table();
  if (!t) return fail(path + ": each [[upstream]] must be a table (" + where(n) + ")");
  const std::string at = " (" + where(n) + ")";
  for (const auto& [k, v] : *t) {
    const std::string_view key = k.str();
    if (key != "name" && key != "listen" && key != "balance" && key != "as") {
      return fail(path + ": unknown upstream setting '" + std::string(key) + "' (" + where(v) + ")");
    }
  }
  UpstreamSpec u;
  auto name = get_string(*t, "name", path);
  if (!name) return Unexpected<Error>(name.error());
  if (!*name) return fail(path + ": an [[upstream]] needs a name" + at);
  u.name = **name;
  auto listen = get_string(*t, "listen", path);
  if (!listen) return Unexpected<Error>(listen.error());
  if (!*listen) return fail(path + ": upstream '" + u.name + "' needs listen = \"127.0.0.1:PORT\"" + at);
  auto e = Endpoint::parse(**listen);
  if (!e) return fail(path + ": upstream '" + u.name + "': listen '" + **listen + "' is not IP:PORT" + at);
  u.listen = *e;
  auto balance = get_string(*t, "balance", path);
  if (!balance) return Unexpected<Error>(balance.error());
  if (*balance) u.balance = **balance;
  auto as = get_string(*t, "as", path);
  if (!as) return Unexpected<Error>(as.error());
  if (*as) u.as = **as;
  if (auto r = check_upstream(u); !r) return fail(path + ": upstream '" + u.name + "': " + r.error().message + at);
  return u;
}

// One [[service]] table: name, port, tags, check, interval (as `weft service register`).
Result<ServiceSpec> read_service(const toml::node& n, const std::string& path) {
  const toml::table* t = n.as_table();
  if (!t) return fail(path + ": each [[service]] must be a table (" + where(n) + ")");
  const std::string at = " (" + where(n) + ")";
  for (const auto& [k, v] : *t) {
    const std::string_view key = k.str();
    if (key != "name" && key != "port" && key != "tags" && key != "check" && key != "interval") {
      return fail(path + ": unknown service setting '" + std::string(key) + "' (" + where(v) + ")");
    }
  }
  ServiceSpec spec;
  auto name = get_string(*t, "name", path);
  if (!name) return Unexpected<Error>(name.error());
  if (!*name) return fail(path + ": a [[service]] needs a name" + at);
  spec.name = **name;
  const toml::node* port = t->get("port");
  if (!port || !port->is_integer() || port->as_integer()->get() < 1 || port->as_integer()->get() > 65535) {
    return fail(path + ": service '" + spec.name + "' needs a port 1..65535" + at);
  }
  spec.port = static_cast<std::uint16_t>(port->as_integer()->get());
  if (const toml::node* tags = t->get("tags")) {
    const toml::array* a = tags->as_array();
    if (!a) return fail(path + ": service '" + spec.name + "': tags must be an array of strings" + at);
    for (const toml::node& e : *a) {
      if (!e.is_string()) return fail(path + ": service '" + spec.name + "': tags must be strings" + at);
      spec.tags.push_back(e.as_string()->get());
    }
  }
  auto check = get_string(*t, "check", path);
  if (!check) return Unexpected<Error>(check.error());
  if (*check) spec.check = **check;
  auto interval = get_string(*t, "interval", path);
  if (!interval) return Unexpected<Error>(interval.error());
  if (*interval) {
    auto d = parse_duration(**interval);
    if (!d) return fail(path + ": service '" + spec.name + "': interval: " + d.error().message + at);
    spec.interval = *d;
  }
  if (auto r = check_service_spec(spec); !r) return fail(path + ": service '" + spec.name + "': " + r.error().message + at);
  return spec;
}

Result<FileSettings> read_file(const std::string& path) {
  FileSettings s;
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    return fail(path + ":" + std::to_string(src.begin.line) + ": " + std::string(e.description()));
  } catch (const std::exception& e) {
    return fail(path + ": " + e.what());
  }
  static const char* const kKnown[] = {"node", "bind", "advertise", "join", "data_dir", "rpc", "key_file",
                                       "insecure_plaintext", "log_level", "log_json", "tags", "gossip", "service",
                                       "upstream", "mesh_bind", "operator_pub", "cert", "cluster"};
  for (const auto& [k, v] : t) {
    if (std::find(std::begin(kKnown), std::end(kKnown), k.str()) == std::end(kKnown)) {
      return fail(path + ": unknown setting '" + std::string(k.str()) + "' (" + where(v) + ")");
    }
  }
  struct {
    const char* key;
    std::optional<std::string>* out;
  } strings[] = {{"node", &s.node}, {"bind", &s.bind}, {"advertise", &s.advertise}, {"data_dir", &s.data_dir},
                 {"rpc", &s.rpc}, {"key_file", &s.key_file}, {"log_level", &s.log_level},
                 {"mesh_bind", &s.mesh_bind}, {"cert", &s.cert}, {"cluster", &s.cluster}};
  for (auto& e : strings) {
    auto r = get_string(t, e.key, path);
    if (!r) return Unexpected<Error>(r.error());
    *e.out = *r;
  }
  for (auto [key, out] : {std::pair{"insecure_plaintext", &s.insecure_plaintext}, std::pair{"log_json", &s.log_json}}) {
    auto r = get_bool(t, key, path);
    if (!r) return Unexpected<Error>(r.error());
    *out = *r;
  }
  if (const toml::node* j = t.get("join")) {
    const toml::array* a = j->as_array();
    if (!a) return fail(path + ": 'join' must be an array of \"ip:port\" strings (" + where(*j) + ")");
    for (const toml::node& e : *a) {
      if (!e.is_string()) return fail(path + ": 'join' must hold strings (" + where(e) + ")");
      s.join.push_back(e.as_string()->get());
    }
  }
  if (const toml::node* op = t.get("operator_pub")) {
    const toml::array* a = op->as_array();
    if (op->is_string()) {
      s.operator_pubs.push_back(op->as_string()->get());
    } else if (a == nullptr) {
      return fail(path + ": 'operator_pub' must be a file name or an array of them (" + where(*op) + ")");
    } else {
      for (const toml::node& e : *a) {
        if (!e.is_string()) return fail(path + ": 'operator_pub' must hold file names (" + where(e) + ")");
        s.operator_pubs.push_back(e.as_string()->get());
      }
    }
  }
  if (const toml::node* tg = t.get("tags")) {
    const toml::table* tt = tg->as_table();
    if (!tt) return fail(path + ": 'tags' must be a table of strings (" + where(*tg) + ")");
    for (const auto& [k, v] : *tt) {
      if (!v.is_string()) return fail(path + ": tags." + std::string(k.str()) + " must be a string (" + where(v) + ")");
      s.tags[std::string(k.str())] = v.as_string()->get();
    }
  }
  if (const toml::node* sv = t.get("service")) {
    const toml::array* a = sv->as_array();
    if (!a) return fail(path + ": 'service' must be an array of tables ([[service]]) (" + where(*sv) + ")");
    for (const toml::node& e : *a) {
      auto spec = read_service(e, path);
      if (!spec) return Unexpected<Error>(spec.error());
      for (const ServiceSpec& other : s.services) {
        if (other.name == spec->name) return fail(path + ": service '" + spec->name + "' is declared twice (" + where(e) + ")");
      }
      s.services.push_back(std::move(*spec));
    }
  }
  if (const toml::node* up = t.get("upstream")) {
    const toml::array* a = up->as_array();
    if (!a) return fail(path + ": 'upstream' must be an array of tables ([[upstream]]) (" + where(*up) + ")");
    for (const toml::node& e : *a) {
      auto u = read_upstream(e, path);
      if (!u) return Unexpected<Error>(u.error());
      for (const UpstreamSpec& other : s.upstreams) {
        if (other.name == u->name) return fail(path + ": upstream '" + u->name + "' is declared twice (" + where(e) + ")");
        if (other.listen == u->listen) {
          return fail(path + ": upstreams '" + other.name + "' and '" + u->name + "' listen on the same address (" +
                      where(e) + ")");
        }
      }
      s.upstreams.push_back(std::move(*u));
    }
  }
  if (const toml::node* g = t.get("gossip")) {
    const toml::table* gt = g->as_table();
    if (!gt) return fail(path + ": 'gossip' must be a table (" + where(*g) + ")");
    auto r = read_gossip(*gt, path, s.gossip);
    if (!r) return Unexpected<Error>(r.error());
  }
  return s;
}

Result<Endpoint> parse_addr(const std::string& what, const std::string& text, bool allow_no_port) {
  std::string t = text;
  if (allow_no_port && t.find(':') == std::string::npos) t += ":" + std::to_string(kDefaultPort);
  auto e = Endpoint::parse(t);
  if (!e) return fail(what + ": '" + text + "' is not an address like 10.0.0.1:7946 (" + e.error().message + ")");
  return e;
}

}  // namespace

Result<Duration> parse_duration(std::string_view text) {
  const std::string s(text);
  double value = 0;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  auto [p, ec] = std::from_chars(b, e, value);
  if (ec != std::errc{} || p == b || !std::isfinite(value) || value < 0) {
    return fail("'" + s + "' is not a duration (like 500ms, 2s, 1m, 24h)");
  }
  const std::string_view unit(p, static_cast<std::size_t>(e - p));
  double ms = 0;
  if (unit == "ms") ms = value;
  else if (unit == "s") ms = value * 1e3;
  else if (unit == "m") ms = value * 60e3;
  else if (unit == "h") ms = value * 3600e3;
  else return fail("'" + s + "' has no unit (ms, s, m or h)");
  if (ms > 1e12) return fail("'" + s + "' is too long");
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(ms));
}

namespace {

// Node and service names: 1..128 bytes of [A-Za-z0-9._-] (they appear in logs and tables unquoted).
Result<void> check_name(const char* what, std::string_view name) {
  if (name.empty()) return fail(std::string(what) + " name is empty");
  if (name.size() > 128) return fail(std::string(what) + " name is longer than 128 bytes");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return fail(std::string(what) + " name '" + std::string(name) + "' may hold only letters, digits, '.', '_' and '-'");
    }
  }
  return {};
}

}  // namespace

Result<void> check_node_name(std::string_view name) { return check_name("node", name); }

Result<void> check_service_name(std::string_view name) { return check_name("service", name); }

Result<void> check_cluster_name(std::string_view name) { return check_name("cluster", name); }

Result<void> check_upstream(const UpstreamSpec& u) {
  if (auto r = check_service_name(u.name); !r) return r;
  if (u.listen.port == 0) return fail("listen address needs a port");
  if (u.balance != "peak-ewma" && u.balance != "round-robin") {
    return fail("balance '" + u.balance + "' is not peak-ewma or round-robin");
  }
  if (!u.as.empty()) {
    if (auto r = check_service_name(u.as); !r) return fail("as: " + r.error().message);
  }
  return {};
}

Result<AgentConfig> resolve_config(const AgentFlags& flags) {
  FileSettings f;
  AgentConfig c;
  if (flags.config) {
    auto r = read_file(*flags.config);
    if (!r) return Unexpected<Error>(r.error());
    f = std::move(*r);
    c.config_file = *flags.config;
  }
  auto pick = [](const std::optional<std::string>& flag, const std::optional<std::string>& file) {
    return flag ? flag : file;
  };
  c.gossip = f.gossip;

  auto node = pick(flags.node, f.node);
  if (!node) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return fail("--node is required (gethostname failed)");
    node = std::string(host);
  }
  if (auto r = check_node_name(*node); !r) return fail("--node: " + r.error().message);
  c.node = *node;
  if (auto cl = pick(flags.cluster, f.cluster)) {
    if (auto r = check_cluster_name(*cl); !r) return fail("--cluster: " + r.error().message);
    c.cluster = *cl;
  }

  auto bind = pick(flags.bind, f.bind);
  if (!bind) return fail("--bind IP:PORT is required");
  auto b = parse_addr("--bind", *bind, true);
  if (!b) return Unexpected<Error>(b.error());
  c.bind = *b;
  if (auto adv = pick(flags.advertise, f.advertise)) {
    auto a = parse_addr("--advertise", *adv, true);
    if (!a) return Unexpected<Error>(a.error());
    if (a->port == 0) return fail("--advertise: port 0 cannot be advertised");
    c.advertise = *a;
  } else {
    bool any = true;
    for (std::size_t i = 0; i < c.bind.ip_size(); ++i) any = any && c.bind.ip[i] == 0;
    if (any) return fail("--bind " + c.bind.to_string() + " is a wildcard address: give --advertise IP:PORT");
    if (c.bind.port == 0) return fail("--bind: give a port (other agents must know it)");
  }
  if (auto mb = pick(flags.mesh_bind, f.mesh_bind)) {
    auto m = parse_addr("--mesh-bind", *mb, false);
    if (!m) return Unexpected<Error>(m.error());
    if (m->port == 0) return fail("--mesh-bind: give a port (other agents must know it)");
    c.mesh_bind = *m;
  } else {
    if (c.bind.port == 0 || c.bind.port == 65535) return fail("--mesh-bind IP:PORT is required when --bind's port is 0 or 65535");
    c.mesh_bind = c.bind;
    c.mesh_bind.port = static_cast<std::uint16_t>(c.bind.port + 1);
  }
  for (const std::string& j : flags.join.empty() ? f.join : flags.join) {
    auto e = parse_addr("--join", j, true);
    if (!e) return Unexpected<Error>(e.error());
    c.join.push_back(*e);
  }

  auto dir = pick(flags.data_dir, f.data_dir);
  if (!dir || dir->empty()) return fail("--data-dir DIR is required");
  c.data_dir = *dir;
  auto rpc = pick(flags.rpc, f.rpc);
  c.rpc = rpc ? *rpc : c.data_dir + "/rpc.sock";
  if (c.rpc.empty()) return fail("--rpc: empty path");
  if (c.rpc.size() > 100) return fail("--rpc: path longer than 100 bytes (unix sockets allow 107): " + c.rpc);
  if (auto k = pick(flags.key_file, f.key_file)) c.key_file = *k;
  c.insecure_plaintext = flags.insecure_plaintext || f.insecure_plaintext.value_or(false);
  c.operator_pubs = flags.operator_pubs.empty() ? f.operator_pubs : flags.operator_pubs;
  if (auto cert = pick(flags.cert, f.cert)) c.cert_file = *cert;
  for (const std::string& p : c.operator_pubs) {
    if (p.empty()) return fail("--operator-pub: empty file name");
  }
  if (c.operator_pubs.empty() != c.cert_file.empty()) {
    return fail(c.cert_file.empty() ? "--operator-pub needs --cert FILE (this node's certificate)"
                                    : "--cert needs --operator-pub FILE (the operator key that signed it)");
  }
  c.log_json = flags.log_json || f.log_json.value_or(false);
  c.log_level = pick(flags.log_level, f.log_level).value_or("info");
  static const char* const kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels)) {
    return fail("--log-level: '" + c.log_level + "' is not one of trace, debug, info, warn, error, critical, off");
  }
  c.tags = f.tags;
  c.services = f.services;
  c.upstreams = f.upstreams;
  for (const std::string& t : flags.tags) {
    const auto eq = t.find('=');
    if (eq == std::string::npos || eq == 0) return fail("--tag: '" + t + "' is not KEY=VALUE");
    c.tags[t.substr(0, eq)] = t.substr(eq + 1);
  }
  if (auto r = c.gossip.validate(); !r) return fail("gossip settings: " + r.error().message);
  return c;
}

Result<AgentConfig> reload_config(const AgentFlags& flags) { return resolve_config(flags); }

}  // namespace weft::agent
