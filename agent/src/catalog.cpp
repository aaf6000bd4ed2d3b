#include "catalog.h"

#include "health.h"
#include "msgpack_json.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace weft::agent {

using nlohmann::json;

namespace {

// Catalog responses are the largest of these maps (up to kMaxServicesPerNode services): they
// are bounded by what the reliable channel carries (transport::ReliableConfig::max_message_bytes).
constexpr std::size_t kMaxCatalogBytes = 8u << 20;

std::vector<std::byte> to_bytes(const json& j) { return to_msgpack_bytes(j); }

// Untrusted bytes to a JSON object; nullopt unless it is a msgpack map.
std::optional<json> object_of(std::span<const std::byte> bytes) { return msgpack_object(bytes, kMaxCatalogBytes); }

Result<std::uint64_t> get_u64(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return fail(std::string("'") + key + "' is missing or not an unsigned integer");
  return it->get<std::uint64_t>();
}

Result<std::string> get_name(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return fail(std::string("'") + key + "' is missing or not a string");
  std::string s = it->get<std::string>();
  if (auto r = check_service_name(s); !r) return fail(r.error().message);
  return s;
}

Result<std::vector<std::string>> get_tags(const json& j) {
  std::vector<std::string> out;
  auto it = j.find("tags");
  if (it == j.end()) return out;
  if (!it->is_array() || it->size() > kMaxServiceTags) return fail("'tags' must be an array of at most 64 strings");
  for (const json& t : *it) {
    if (!t.is_string() || t.get_ref<const std::string&>().size() > kMaxTagBytes) {
      return fail("a tag must be a string of at most 256 bytes");
    }
    out.push_back(t.get<std::string>());
  }
  return out;
}

Result<std::uint16_t> get_port(const json& j) {
  auto p = get_u64(j, "port");
  if (!p) return fail(p.error().message);
  if (*p == 0 || *p > 65535) return fail("'port' must be 1..65535");
  return static_cast<std::uint16_t>(*p);
}

}  // namespace

Result<void> check_service_spec(const ServiceSpec& s) {
  if (auto r = check_service_name(s.name); !r) return r;
  if (s.port == 0) return fail("port must be 1..65535");
  if (s.tags.size() > kMaxServiceTags) return fail("at most 64 tags");
  for (const std::string& t : s.tags) {
    if (t.empty() || t.size() > kMaxTagBytes) return fail("a tag must be 1..256 bytes");
  }
  if (s.interval < kMinCheckInterval || s.interval > std::chrono::hours(24)) return fail("interval must be 100ms .. 24h");
  if (auto c = CheckSpec::parse(s.check, s.interval); !c) return fail(c.error().message);
  return {};
}

std::vector<std::byte> encode_spec(const ServiceSpec& s) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.interval).count();
  return to_bytes(json{{"name", s.name},
                       {"port", s.port},
                       {"tags", s.tags},
                       {"check", s.check},
                       {"interval_ms", static_cast<std::uint64_t>(std::max<std::int64_t>(ms, 0))}});
}

Result<ServiceSpec> decode_spec(std::span<const std::byte> bytes) {
  auto j = object_of(bytes);
  if (!j) return fail("service spec is not a msgpack map");
  ServiceSpec s;
  auto name = get_name(*j, "name");
  if (!name) return fail(name.error().message);
  s.name = std::move(*name);
  auto port = get_port(*j);
  if (!port) return fail(port.error().message);
  s.port = *port;
  auto tags = get_tags(*j);
  if (!tags) return fail(tags.error().message);
  s.tags = std::move(*tags);
  if (auto it = j->find("check"); it != j->end()) {
    if (!it->is_string()) return fail("'check' is not a string");
    s.check = it->get<std::string>();
  }
  auto interval = get_u64(*j, "interval_ms");
  if (!interval || *interval == 0 || *interval > 24ull * 3600 * 1000) return fail("'interval_ms' must be 1 ms .. 24 h");
  s.interval = std::chrono::milliseconds(static_cast<std::int64_t>(*interval));
  return s;
}

std::vector<std::byte> encode_catalog(const NodeCatalog& c) {
  json services = json::array();
  for (const ServiceEntry& e : c.services) {
    services.push_back(
        json{{"name", e.name}, {"port", e.port}, {"tags", e.tags}, {"health", e.passing ? "passing" : "critical"}});
  }
  return to_bytes(json{{"node", c.node}, {"version", c.version}, {"services", std::move(services)}});
}

Result<NodeCatalog> decode_catalog(std::span<const std::byte> bytes) {
  auto j = object_of(bytes);
  if (!j) return fail("catalog is not a msgpack map");
  NodeCatalog c;
  auto node = j->find("node");
  if (node == j->end() || !node->is_string() || node->get_ref<const std::string&>().empty() ||
      node->get_ref<const std::string&>().size() > 128) {
    return fail("catalog: 'node' is missing or not a name");
  }
  c.node = node->get<std::string>();
  auto version = get_u64(*j, "version");
  if (!version) return fail("catalog: " + version.error().message);
  c.version = *version;
  auto services = j->find("services");
  if (services == j->end() || !services->is_array()) return fail("catalog: 'services' is not an array");
  if (services->size() > kMaxServicesPerNode) return fail("catalog: more than 10000 services");
  for (const json& s : *services) {
    if (!s.is_object()) return fail("catalog: a service is not a map");
    ServiceEntry e;
    auto name = get_name(s, "name");
    if (!name) return fail("catalog: " + name.error().message);
    e.name = std::move(*name);
    auto port = get_port(s);
    if (!port) return fail("catalog: " + port.error().message);
    e.port = *port;
    auto tags = get_tags(s);
    if (!tags) return fail("catalog: " + tags.error().message);
    e.tags = std::move(*tags);
    auto health = s.find("health");
    if (health == s.end() || !health->is_string()) return fail("catalog: 'health' is missing");
    e.passing = health->get_ref<const std::string&>() == "passing";
    c.services.push_back(std::move(e));
  }
  std::sort(c.services.begin(), c.services.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  const auto dup = std::adjacent_find(c.services.begin(), c.services.end(),
                                      [](const auto& a, const auto& b) { return a.name == b.name; });
  if (dup != c.services.end()) return fail("catalog: service '" + dup->name + "' appears twice");
  return c;
}

std::vector<std::byte> encode_catalog_request(std::uint64_t have) { return to_bytes(json{{"have", have}}); }

Result<std::uint64_t> decode_catalog_request(std::span<const std::byte> bytes) {
  auto j = object_of(bytes);
  if (!j) return fail("catalog request is not a msgpack map");
  return get_u64(*j, "have");
}

std::vector<std::byte> encode_meta(const NodeMeta& m) {
  if (m.tags.empty() && m.catalog_version == 0 && m.mesh_port == 0 && m.kx_pk.empty() && m.policy_version == 0 &&
      m.revocations_version == 0) {
    return {};
  }
  json j = json::object();
  if (!m.tags.empty()) j["tags"] = m.tags;
  if (m.catalog_version != 0) j["cat"] = m.catalog_version;
  if (m.mesh_port != 0) j["mesh"] = m.mesh_port;
  if (!m.kx_pk.empty()) {
    std::vector<std::uint8_t> kx(m.kx_pk.size());
    std::memcpy(kx.data(), m.kx_pk.data(), kx.size());
    j["kx"] = json::binary(std::move(kx));
  }
  if (m.policy_version != 0) j["pol"] = m.policy_version;
  if (m.revocations_version != 0) j["rev"] = m.revocations_version;
  return to_bytes(j);
}

std::optional<NodeMeta> decode_meta(std::span<const std::byte> bytes) {
  NodeMeta m;
  if (bytes.empty()) return m;
  auto j = object_of(bytes);
  if (!j) return std::nullopt;
  if (auto it = j->find("tags"); it != j->end()) {
    if (!it->is_object()) return std::nullopt;
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) return std::nullopt;
      m.tags[k] = v.get<std::string>();
    }
  }
  if (auto it = j->find("cat"); it != j->end()) {
    if (!it->is_number_unsigned()) return std::nullopt;
    m.catalog_version = it->get<std::uint64_t>();
  }
  if (auto it = j->find("mesh"); it != j->end()) {
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() == 0 || it->get<std::uint64_t>() > 65535) return std::nullopt;
    m.mesh_port = static_cast<std::uint16_t>(it->get<std::uint64_t>());
  }
  if (auto it = j->find("kx"); it != j->end()) {
    if (!it->is_binary() || it->get_binary().size() != 32) return std::nullopt;
    const auto& b = it->get_binary();
    m.kx_pk.resize(b.size());
    std::memcpy(m.kx_pk.data(), b.data(), b.size());
  }
  if (auto it = j->find("pol"); it != j->end()) {
    if (!it->is_number_unsigned()) return std::nullopt;
    m.policy_version = it->get<std::uint64_t>();
  }
  if (auto it = j->find("rev"); it != j->end()) {
    if (!it->is_number_unsigned()) return std::nullopt;
    m.revocations_version = it->get<std::uint64_t>();
  }
  return m;
}

// ---------------------------------------------------------------------------------------------

void RemoteCatalogs::on_member(TimePoint now, const std::string& node, const Endpoint& addr, bool live,
                               std::uint64_t advertised_version) {
  next_fetch_.reset();
  Node& n = nodes_[node];
  if (n.addr != addr) n.next_ask = now;  // a new address (a restart elsewhere): ask at once
  n.addr = addr;
  n.live = live;
  if (advertised_version != n.advertised) n.next_ask = std::min(n.next_ask, now);
  n.advertised = advertised_version;
  // 0: it publishes nothing now. Lower than what we hold: it lost its data dir and counts again
  // from 1 (gossip orders a member's metadata by incarnation, so this is not an old message).
  if (advertised_version == 0 || advertised_version < n.catalog.version) n.catalog = NodeCatalog{node, 0, {}};
}

void RemoteCatalogs::forget(const std::string& node) {
  nodes_.erase(node);
  next_fetch_.reset();
}

bool RemoteCatalogs::on_catalog(const Endpoint& from, NodeCatalog c) {
  auto it = nodes_.find(c.node);
  if (it == nodes_.end() || it->second.addr != from || c.version <= it->second.catalog.version) {
    ++stats_.catalogs_stale;
    return false;
  }
  ++stats_.catalogs_accepted;
  next_fetch_.reset();
  // A response newer than the gossip we heard: gossip will catch up; hold the newest.
  it->second.advertised = std::max(it->second.advertised, c.version);
  it->second.catalog = std::move(c);
  return true;
}

std::vector<std::pair<Endpoint, std::uint64_t>> RemoteCatalogs::due_fetches(TimePoint now, Duration retry) {
  std::vector<std::pair<Endpoint, std::uint64_t>> out;
  if (now < next_fetch()) return out;  // nobody is due: no walk over every member
  next_fetch_.reset();
  for (auto& [name, n] : nodes_) {
    if (!n.live || n.advertised <= n.catalog.version || n.next_ask > now) continue;
    out.emplace_back(n.addr, n.catalog.version);
    n.next_ask = now + retry;
    ++stats_.fetches_sent;
  }
  return out;
}

TimePoint RemoteCatalogs::next_fetch() const {
  if (!next_fetch_) {
    TimePoint t = TimePoint::max();
    for (const auto& [name, n] : nodes_) {
      if (n.live && n.advertised > n.catalog.version) t = std::min(t, n.next_ask);
    }
    next_fetch_ = t;
  }
  return *next_fetch_;
}

}  // namespace weft::agent
