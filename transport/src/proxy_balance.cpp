// Instance choice for app connections: power of two choices over peak-EWMA latency (cost =
// ewma x (active + 1)) or round robin, among the healthy instances of the route table that are
// not ejected; retries on another instance; outlier ejection after consecutive failures.
//
// When every healthy instance is ejected the ejection is ignored (as Envoy's panic threshold):
// sending to a suspect instance beats refusing every connection.

#include <algorithm>
#include <cmath>
#include <spdlog/spdlog.h>

#include "proxy_impl.h"

namespace weft::transport {
namespace {

// The estimate decays towards zero while no sample arrives (as tower's PeakEwma does): an instance
// that measured slow once and then got no traffic becomes cheap again and is sampled anew, rather
// than starving for ever behind one that keeps answering fast.
double rtt_ms(const InstanceState& st, TimePoint now, Duration decay) {
  if (st.ewma_ms <= 0) return std::chrono::duration<double, std::milli>(kDefaultRtt).count();
  const double idle = std::chrono::duration<double>(now - st.ewma_at).count();
  return st.ewma_ms * std::exp(-idle / std::chrono::duration<double>(decay).count());
}

double cost(const InstanceState& st, TimePoint now, Duration decay) {
  return rtt_ms(st, now, decay) * static_cast<double>(st.active + 1);
}

}  // namespace

std::optional<RouteInstance> Proxy::Impl::pick(const std::string& service, const UpstreamConfig& u,
                                               const std::set<std::string>& exclude) {
  if (!routes_) return std::nullopt;
  auto it = routes_->services.find(service);
  if (it == routes_->services.end()) return std::nullopt;
  auto& states = balance_[service];
  std::vector<const RouteInstance*> healthy;
  std::vector<const RouteInstance*> eligible;
  for (const auto& inst : it->second) {
    if (!inst.healthy || exclude.count(inst.node) != 0) continue;
    healthy.push_back(&inst);
    if (states[inst.node].ejected_until <= now_) eligible.push_back(&inst);
  }
  if (eligible.empty()) eligible = healthy;
  if (eligible.empty()) return std::nullopt;
  if (eligible.size() == 1) return *eligible[0];
  if (u.balance == Balance::kRoundRobin) {
    std::size_t next = 0;
    if (auto up = upstreams_.find(u.name); up != upstreams_.end()) next = up->second.rr_next++;
    return *eligible[next % eligible.size()];
  }
  const std::size_t n = eligible.size();
  const std::size_t a = static_cast<std::size_t>(rng_() % n);
  std::size_t b = static_cast<std::size_t>(rng_() % (n - 1));
  if (b >= a) ++b;
  const double ca = cost(states[eligible[a]->node], now_, cfg_.ewma_decay);
  const double cb = cost(states[eligible[b]->node], now_, cfg_.ewma_decay);
  return *eligible[cb < ca ? b : a];
}

void Proxy::Impl::dispatch(Conn& c) {
  UpstreamConfig u;
  u.name = c.name;
  if (auto it = upstreams_.find(c.name); it != upstreams_.end()) u = it->second.cfg;
  while (c.attempts < c.max_attempts) {
    auto inst = pick(c.name, u, c.tried);
    if (!inst) break;
    c.tried.insert(inst->node);
    if (++c.attempts > 1) ++stats_.upstreams[c.name].retries;
    c.node = inst->node;
    std::string err;
    Session* s = session_for(*inst, err);
    if (s == nullptr) {
      log_->debug("session_unavailable node={} err={}", inst->node, err);
      record_failure(c.name, inst->node);
      continue;
    }
    if (s->state != Session::State::kUp && s->waiting.size() >= kMaxWaiting) {
      record_failure(c.name, inst->node);
      continue;
    }
    instance_active(c.name, c.node, true);
    c.counted_instance = true;
    if (s->state == Session::State::kUp) {
      conn_start_stream(c, *s);  // may retry (dispatch again) or destroy c
    } else {
      c.session = s->id;
      s->waiting.push_back(c.id);
      if (c.connect_timeout < cfg_.connect_timeout) {  // the session's own limit covers the rest
        c.connect_deadline = now_ + c.connect_timeout;
        arm_timer(Kind::kConn, c.id, c.timer_at, std::min(c.last_activity + c.idle_timeout, c.connect_deadline));
      }
    }
    return;
  }
  fail_conn(c);
}

void Proxy::Impl::record_latency(const std::string& service, const std::string& node, Duration d) {
  auto& st = balance_[service][node];
  const double ms = std::chrono::duration<double, std::milli>(d).count();
  if (st.ewma_ms <= 0 || ms > st.ewma_ms) {
    st.ewma_ms = ms;  // peak: a slow sample counts at once, fast ones decay it
  } else {
    const double dt = std::chrono::duration<double>(now_ - st.ewma_at).count();
    const double w = std::exp(-dt / std::chrono::duration<double>(cfg_.ewma_decay).count());
    st.ewma_ms = st.ewma_ms * w + ms * (1 - w);  // w: the decay since the last sample
  }
  st.ewma_at = now_;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  auto& hist = stats_.upstreams[service].latency_us_log2;
  std::size_t b = 0;
  while (b + 1 < hist.size() && us >= (std::int64_t{1} << (b + 6))) ++b;
  ++hist[b];
}

void Proxy::Impl::record_success(const std::string& service, const std::string& node) {
  balance_[service][node].failures = 0;
}

void Proxy::Impl::record_failure(const std::string& service, const std::string& node) {
  auto& st = balance_[service][node];
  if (++st.failures >= cfg_.eject_after_failures && st.ejected_until <= now_) {
    st.ejected_until = now_ + cfg_.eject_for;
    st.failures = 0;
    ++stats_.upstreams[service].ejections;
    log_->info("instance_ejected service={} node={}", service, node);
  }
}

void Proxy::Impl::instance_active(const std::string& service, const std::string& node, bool up) {
  auto& st = balance_[service][node];
  if (up) ++st.active;
  else if (st.active > 0) --st.active;
}

void Proxy::Impl::fill_routes(ProxyStats& s) {
  for (const auto& [name, up] : upstreams_) {
    auto& views = s.routes[name];
    if (!routes_) continue;
    auto it = routes_->services.find(name);
    if (it == routes_->services.end()) continue;
    const auto& states = balance_[name];
    for (const auto& inst : it->second) {
      InstanceView v;
      v.node = inst.node;
      v.mesh = inst.mesh;
      v.healthy = inst.healthy;
      InstanceState st;
      if (auto f = states.find(inst.node); f != states.end()) st = f->second;
      v.ejected = st.ejected_until > now_;
      v.rtt_ms = rtt_ms(st, now_, cfg_.ewma_decay);
      v.weight = 1.0 / cost(st, now_, cfg_.ewma_decay);
      v.active = st.active;
      views.push_back(std::move(v));
    }
  }
}

}  // namespace weft::transport
