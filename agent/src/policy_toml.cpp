// The TOML policy file (format in weft/agent/policy_files.h) -> transport::Policy, with errors
// naming the file, line and field. Unknown keys are errors: a typo must never widen access.

#include "policy_toml.h"

#include <toml++/toml.h>

#include <charconv>

#include "weft/agent/config.h"

namespace weft::agent {

namespace {

namespace tr = weft::transport;

std::string at(const std::string& file, const toml::node& n) {
  return file + ": line " + std::to_string(n.source().begin.line) + ": ";
}

// "YYYY-MM-DDTHH:MM:SSZ" (UTC only: a policy's expiry must not depend on the signer's zone).
Result<tr::UnixTime> parse_rfc3339(std::string_view s) {
  const auto bad = [&] {
    return fail("'" + std::string(s) + "' is not a UTC time like 2027-01-01T00:00:00Z");
  };
  if (s.size() != 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
      s[16] != ':' || (s[19] != 'Z' && s[19] != 'z'))
    return bad();
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    const char* b = s.data() + pos;
    auto [p, ec] = std::from_chars(b, b + len, out);
    return ec == std::errc{} && p == b + len;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (!num(0, 4, y) || !num(5, 2, mo) || !num(8, 2, d) || !num(11, 2, h) || !num(14, 2, mi) ||
      !num(17, 2, se))
    return bad();
  const std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(static_cast<unsigned>(mo)),
                                        std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 59 || y < 1970) return bad();
  return tr::UnixTime(std::chrono::sys_days(ymd).time_since_epoch() + std::chrono::hours(h) +
                      std::chrono::minutes(mi) + std::chrono::seconds(se));
}

Result<tr::UnixTime> read_time(const toml::node& n) {
  if (n.is_string()) return parse_rfc3339(n.as_string()->get());
  if (n.is_date_time()) {
    const toml::date_time dt = n.as_date_time()->get();
    if (!dt.offset) return fail("has no time zone (write it in UTC, ending in Z)");
    const std::chrono::year_month_day ymd{std::chrono::year(dt.date.year), std::chrono::month(dt.date.month),
                                          std::chrono::day(dt.date.day)};
    if (!ymd.ok() || dt.date.year < 1970) return fail("is not a valid date");
    return tr::UnixTime(std::chrono::sys_days(ymd).time_since_epoch() + std::chrono::hours(dt.time.hour) +
                        std::chrono::minutes(dt.time.minute) + std::chrono::seconds(dt.time.second) -
                        std::chrono::minutes(dt.offset->minutes));
  }
  return fail("must be a time like \"2027-01-01T00:00:00Z\"");
}

Result<tr::PolicyAction> read_action(const toml::node& n) {
  if (!n.is_string()) return fail("must be \"allow\", \"deny\" or \"shadow-deny\"");
  auto a = tr::parse_policy_action(n.as_string()->get());
  if (!a) return fail("'" + n.as_string()->get() + "' is not allow, deny or shadow-deny");
  return *a;
}

Result<std::int64_t> read_int(const toml::node& n, std::int64_t lo, std::int64_t hi) {
  if (!n.is_integer() || n.as_integer()->get() < lo || n.as_integer()->get() > hi)
    return fail("must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return n.as_integer()->get();
}

Result<std::chrono::milliseconds> read_timeout(const toml::node& n) {
  if (!n.is_string()) return fail("must be a duration string like \"2s\"");
  auto d = parse_duration(n.as_string()->get());
  if (!d) return fail(d.error().message);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  if (ms.count() < 1 || ms > tr::kMaxPolicyTimeout) return fail("must be from 1ms to 24h");
  return ms;
}

Result<std::string> read_pattern(const toml::node& n) {
  if (!n.is_string()) return fail("must be a service name or \"*\"");
  std::string s = n.as_string()->get();
  if (s != tr::kPolicyWildcard) {
    if (auto r = tr::check_trust_name("service", s); !r) return fail(r.error().message);
  }
  return s;
}

Result<tr::PolicyRule> read_rule(const toml::table& t, std::size_t index, const std::string& file) {
  const std::string w = "rule " + std::to_string(index) + ": ";
  tr::PolicyRule r;
  bool has_from = false, has_to = false, has_action = false;
  for (const auto& kv : t) {
    const std::string key(kv.first.str());
    const toml::node& v = kv.second;
    const std::string where = at(file, v) + w + key + " ";
    if (key == "from" || key == "to") {
      auto p = read_pattern(v);
      if (!p) return fail(where + p.error().message);
      (key == "from" ? r.from : r.to) = *p;
      (key == "from" ? has_from : has_to) = true;
    } else if (key == "action") {
      auto a = read_action(v);
      if (!a) return fail(where + a.error().message);
      r.action = *a;
      has_action = true;
    } else if (key == "rate") {
      const toml::table* rt = v.as_table();
      if (!rt) return fail(where + "must be a table like { per_second = 100, burst = 20 }");
      tr::RateLimit lim;
      bool ps = false, burst = false;
      for (const auto& rkv : *rt) {
        const std::string rkey(rkv.first.str());
        const std::string rwhere = at(file, rkv.second) + w + "rate." + rkey + " ";
        if (rkey == "per_second" || rkey == "burst") {
          const std::uint32_t hi = rkey == "per_second" ? tr::kMaxRatePerSecond : tr::kMaxRateBurst;
          auto n = read_int(rkv.second, 1, hi);
          if (!n) return fail(rwhere + n.error().message);
          (rkey == "per_second" ? lim.per_second : lim.burst) = static_cast<std::uint32_t>(*n);
          (rkey == "per_second" ? ps : burst) = true;
        } else {
          return fail(rwhere + "is not a known key (per_second, burst)");
        }
      }
      if (!ps || !burst) return fail(where + "needs both per_second and burst");
      r.rate = lim;
    } else if (key == "connect_timeout" || key == "idle_timeout") {
      auto d = read_timeout(v);
      if (!d) return fail(where + d.error().message);
      (key == "connect_timeout" ? r.connect_timeout : r.idle_timeout) = *d;
    } else if (key == "retries") {
      auto n = read_int(v, 0, tr::kMaxPolicyRetries);
      if (!n) return fail(where + n.error().message);
      r.retries = static_cast<std::uint32_t>(*n);
    } else {
      return fail(where +
                  "is not a known key (from, to, action, rate, connect_timeout, idle_timeout, retries)");
    }
  }
  const std::string missing = !has_from ? "from" : !has_to ? "to" : !has_action ? "action" : "";
  if (!missing.empty()) return fail(at(file, t) + w + "'" + missing + "' is missing");
  return r;
}

}  // namespace

Result<tr::Policy> parse_policy_toml(std::string_view text, const std::string& file) {
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    return fail(file + ": line " + std::to_string(e.source().begin.line) + ": " +
                std::string(e.description()));
  } catch (const std::exception& e) {
    return fail(file + ": " + e.what());
  }
  tr::Policy p;
  bool has_cluster = false, has_version = false;
  for (const auto& kv : root) {
    const std::string key(kv.first.str());
    const toml::node& v = kv.second;
    const std::string where = at(file, v) + key + " ";
    if (key == "cluster") {
      if (!v.is_string()) return fail(where + "must be a string");
      p.cluster = v.as_string()->get();
      if (auto r = tr::check_trust_name("cluster", p.cluster); !r) return fail(where + r.error().message);
      has_cluster = true;
    } else if (key == "version") {
      auto n = read_int(v, 1, INT64_MAX);
      if (!n) return fail(where + n.error().message);
      p.version = static_cast<std::uint64_t>(*n);
      has_version = true;
    } else if (key == "expires") {
      auto t = read_time(v);
      if (!t) return fail(where + t.error().message);
      if (t->time_since_epoch().count() > tr::kMaxCertUnixSeconds) return fail(where + "is after 9999");
      p.expires = *t;
    } else if (key == "default") {
      auto a = read_action(v);
      if (!a) return fail(where + a.error().message);
      p.default_action = *a;
    } else if (key == "rule") {
      const toml::array* rules = v.as_array();
      if (!rules) return fail(where + "must be [[rule]] tables");
      if (rules->size() > tr::kMaxPolicyRules) {
        return fail(where + "has " + std::to_string(rules->size()) + " rules, the limit is " +
                    std::to_string(tr::kMaxPolicyRules));
      }
      for (std::size_t i = 0; i < rules->size(); ++i) {
        const toml::table* t = (*rules)[i].as_table();
        if (!t) return fail(where + std::to_string(i + 1) + " is not a table");
        auto r = read_rule(*t, i + 1, file);
        if (!r) return fail(r.error().message);
        p.rules.push_back(std::move(*r));
      }
    } else {
      return fail(where + "is not a known key (cluster, version, expires, default, rule)");
    }
  }
  if (!has_cluster) return fail(file + ": 'cluster' is missing");
  if (!has_version) return fail(file + ": 'version' is missing");
  if (auto r = tr::check_policy(p); !r) return fail(file + ": " + r.error().message);
  return p;
}

}  // namespace weft::agent
