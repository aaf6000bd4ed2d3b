// The authorization decision over a verified Policy and the per-pair token buckets. Pure: no
// I/O, no clock reads (the proxy passes `now`).

#include <algorithm>

#include "weft/transport/policy.h"

namespace weft::transport {

namespace {

bool matches(const std::string& pattern, std::string_view name) {
  return pattern == kPolicyWildcard || pattern == name;
}

// deny > shadow-deny > allow
int rank(PolicyAction a) {
  switch (a) {
    case PolicyAction::kDeny:
      return 3;
    case PolicyAction::kShadowDeny:
      return 2;
    case PolicyAction::kAllow:
      return 1;
  }
  return 3;  // an unknown value (never decoded) is treated as deny
}

Decision from_action(PolicyAction a, std::optional<std::size_t> rule) {
  Decision d;
  d.rule = rule;
  d.effective = a == PolicyAction::kDeny ? PolicyAction::kDeny : PolicyAction::kAllow;
  d.shadow_denied = a == PolicyAction::kShadowDeny;
  return d;
}

}  // namespace

Decision decide(const Policy& p, std::string_view from, std::string_view to) {
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < p.rules.size(); ++i) {
    const PolicyRule& r = p.rules[i];
    if (!matches(r.from, from) || !matches(r.to, to)) continue;
    if (!best || rank(r.action) > rank(p.rules[*best].action)) best = i;
    if (rank(r.action) == 3) break;  // nothing beats deny; the first deny is reported
  }
  if (!best) return from_action(p.default_action, std::nullopt);
  return from_action(p.rules[*best].action, best);
}

RateLimiter::RateLimiter(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

bool RateLimiter::admit(std::string_view from, std::string_view to, const RateLimit& limit, TimePoint now) {
  // Service names never contain '\0' (check_trust_name), so the key is unambiguous.
  std::string key;
  key.reserve(from.size() + 1 + to.size());
  key.append(from).push_back('\0');
  key.append(to);
  auto it = map_.find(key);
  if (it == map_.end()) {
    if (map_.size() >= capacity_) {
      map_.erase(lru_.back().key);
      lru_.pop_back();
      ++stats_.evicted;
    }
    lru_.push_front(Bucket{key, limit, static_cast<double>(limit.burst), now});
    it = map_.emplace(std::move(key), lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);
  }
  Bucket& b = *it->second;
  if (b.limit != limit) {
    b.limit = limit;
    b.tokens = static_cast<double>(limit.burst);
    b.last = now;
  }
  if (now > b.last) {
    const double dt = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(static_cast<double>(b.limit.burst), b.tokens + dt * b.limit.per_second);
    b.last = now;
  }
  // A small epsilon: refills computed from nanosecond ticks may fall just short of a whole token.
  if (b.tokens >= 1.0 - 1e-9) {
    b.tokens = std::max(0.0, b.tokens - 1.0);
    ++stats_.admitted;
    return true;
  }
  ++stats_.limited;
  return false;
}

}  // namespace weft::transport
