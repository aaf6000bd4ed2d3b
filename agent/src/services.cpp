// The agent's side of the service catalog (catalog.h): local registrations (RPC, config file,
// SQLite), publishing our catalog version in gossip metadata, answering and sending catalog
// fetches, and `weft services`.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "agent_impl.h"

namespace weft::agent {

namespace {

constexpr Duration kFetchRetry = std::chrono::seconds(2);
constexpr Duration kPublishDelay = std::chrono::milliseconds(50);

}  // namespace

Result<void> Agent::load_services() {
  auto stored = store_.catalog_version();
  if (!stored) return fail(stored.error().message);
  // A new number at every start: members that held our catalog from before fetch it again.
  catalog_version_ = *stored + 1;
  auto entries = store_.entries(store::EntryKind::kService);
  if (!entries) return fail(entries.error().message);
  for (const store::Entry& e : *entries) {
    auto spec = decode_spec(e.spec);
    if (!spec || spec->name != e.name) {
      log_->warn("service skipped name={} why={}", e.name, spec ? "name mismatch" : spec.error().message);
      continue;
    }
    local_services_[spec->name] = LocalService{*spec, spec->check.empty()};
  }
  // Services in the config file are (re)declared at every start, as Consul does.
  for (const ServiceSpec& s : cfg_.services) {
    if (auto r = store_.put_entry(store::EntryKind::kService, {s.name, encode_spec(s)}); !r) {
      return fail(r.error().message);
    }
    local_services_[s.name] = LocalService{s, s.check.empty()};
  }
  if (auto r = store_.set_catalog_version(catalog_version_); !r) return fail(r.error().message);
  const TimePoint now = Clock::now();
  for (const auto& [name, s] : local_services_) start_check(now, s.spec);
  return {};
}

void Agent::start_check(TimePoint now, const ServiceSpec& spec) {
  auto check = CheckSpec::parse(spec.check, spec.interval);
  if (!check) {  // validated when registered; a damaged row lands here
    log_->warn("service check not started name={} why={}", spec.name, check.error().message);
    return;
  }
  health_.set(now, spec.name, spec.port, *check);  // the loop's next turn starts it
}

void Agent::apply_health_changes() {
  for (const auto& [service, h] : health_.take_changes()) {
    set_service_health(service, h == Health::kPassing);
    if (h == Health::kCritical) log_->info("service check failed name={} output={}", service, health_.last_output(service));
  }
}

std::vector<std::byte> Agent::own_meta() const {
  std::vector<std::byte> kx(identity_.kx_pk.size());
  std::memcpy(kx.data(), identity_.kx_pk.data(), kx.size());
  return encode_meta(NodeMeta{cfg_.tags, local_services_.empty() ? 0 : catalog_version_, cfg_.mesh_bind.port,
                              std::move(kx), policy_ ? policy_->version : 0,
                              revocations_ ? revocations_->version : 0});
}

NodeCatalog Agent::own_catalog() const {
  NodeCatalog c{cfg_.node, local_services_.empty() ? 0 : catalog_version_, {}};
  for (const auto& [name, s] : local_services_) {
    c.services.push_back(ServiceEntry{name, s.spec.port, s.spec.tags, s.passing});
  }
  return c;
}

// A burst of changes (a script registering 100 services, 100 health flips) costs one new
// version and one gossip update: changes are published kPublishDelay after the first of them.
void Agent::publish_catalog(TimePoint now) {
  if (!catalog_dirty_) return;
  if (publish_at_ == TimePoint::max()) {
    publish_at_ = now + kPublishDelay;
    return;
  }
  if (now < publish_at_) return;
  publish_at_ = TimePoint::max();
  catalog_dirty_ = false;
  ++catalog_version_;
  if (auto r = store_.set_catalog_version(catalog_version_); !r) {
    ++stats_.persist_errors;
    log_->error("persist catalog version failed: {}", r.error().message);
  }
  if (auto r = node_->set_meta(now, own_meta()); !r) {
    log_->error("catalog not published: {}", r.error().message);
  }
}

Result<void> Agent::register_service(const ServiceSpec& spec) {
  if (auto r = check_service_spec(spec); !r) return r;
  if (!local_services_.contains(spec.name) && local_services_.size() >= kMaxServicesPerNode) {
    return fail("already " + std::to_string(kMaxServicesPerNode) + " services on this node");
  }
  if (auto r = store_.put_entry(store::EntryKind::kService, {spec.name, encode_spec(spec)}); !r) return r;
  auto& s = local_services_[spec.name];
  const bool had_check = !s.spec.check.empty();
  s.spec = spec;
  // A service without a check is passing; a new check starts critical until it passes (as the
  // checker itself does).
  if (spec.check.empty() || !had_check) s.passing = spec.check.empty();
  start_check(Clock::now(), spec);
  catalog_dirty_ = true;
  routes_dirty_ = true;
  log_->info("service registered name={} port={} check={}", spec.name, spec.port, spec.check);
  return {};
}

Result<bool> Agent::deregister_service(const std::string& name) {
  auto gone = store_.delete_entry(store::EntryKind::kService, name);
  if (!gone) return fail(gone.error().message);
  const bool had = local_services_.erase(name) > 0;
  health_.remove(name);
  if (had) {
    catalog_dirty_ = true;
    routes_dirty_ = true;
    log_->info("service deregistered name={}", name);
  }
  return had || *gone;
}

void Agent::set_service_health(const std::string& name, bool passing) {
  auto it = local_services_.find(name);
  if (it == local_services_.end() || it->second.passing == passing) return;
  it->second.passing = passing;
  catalog_dirty_ = true;
  routes_dirty_ = true;
  log_->info("service health name={} health={}", name, passing ? "passing" : "critical");
}

void Agent::on_member_catalog(TimePoint now, const std::string& name) {
  if (name == cfg_.node) return;
  auto m = node_->member(name);
  if (!m) {
    remote_.forget(name);
    return;
  }
  auto meta = decode_meta(m->meta);
  if (!meta) ++remote_.stats().bad_meta;
  const bool live = m->state == gossip::MemberState::kAlive || m->state == gossip::MemberState::kSuspect;
  remote_.on_member(now, name, m->addr, live, meta ? meta->catalog_version : 0);
  routes_dirty_ = true;  // state, address or key may have changed
}

void Agent::send_catalog_fetches(TimePoint now) {
  for (const auto& [addr, have] : remote_.due_fetches(now, kFetchRetry)) {
    send_frame(now, addr, FrameKind::kCatalogRequest, encode_catalog_request(have));
  }
}

void Agent::on_catalog_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body) {
  if (!decode_catalog_request(body)) {
    ++stats_.bad_frames;
    return;
  }
  send_frame(now, from, FrameKind::kCatalogResponse, encode_catalog(own_catalog()));
}

void Agent::on_catalog_response(const Endpoint& from, std::span<const std::byte> body) {
  auto c = decode_catalog(body);
  if (!c) {
    ++remote_.stats().catalogs_rejected;
    log_->debug("catalog rejected from={} why={}", from.to_string(), c.error().message);
    return;
  }
  const std::string node = c->node;
  const auto count = c->services.size();
  if (remote_.on_catalog(from, std::move(*c))) {
    routes_dirty_ = true;
    log_->debug("catalog node={} services={}", node, count);
  }
}

json Agent::services_json() const {
  json arr = json::array();
  auto add = [&](const std::string& node, const Endpoint& addr, const std::string& status, const ServiceEntry& e) {
    Endpoint at = addr;
    at.port = e.port;
    arr.push_back(json{{"service", e.name},
                       {"node", node},
                       {"addr", at.to_string()},
                       {"port", e.port},
                       {"tags", e.tags},
                       {"health", e.passing && (status == "alive") ? "passing" : "critical"},
                       {"node_status", status}});
  };
  for (const ServiceEntry& e : own_catalog().services) add(cfg_.node, cfg_.advertised(), "alive", e);
  for (const auto& [name, n] : remote_.nodes()) {
    auto m = node_->member(name);
    const std::string status = m ? gossip::to_string(m->state) : "unknown";
    for (const ServiceEntry& e : n.catalog.services) add(name, n.addr, status, e);
  }
  std::stable_sort(arr.begin(), arr.end(), [](const json& a, const json& b) {
    return std::tie(a["service"].get_ref<const std::string&>(), a["node"].get_ref<const std::string&>()) <
           std::tie(b["service"].get_ref<const std::string&>(), b["node"].get_ref<const std::string&>());
  });
  return arr;
}

}  // namespace weft::agent
