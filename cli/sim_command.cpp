// `weft sim`: runs the simulator scenario (weft/sim/scenario.h) and reports it.

#include <sys/resource.h>

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "commands.h"
#include "weft/sim/scenario.h"

namespace weft::cli {

namespace {

using nlohmann::json;

constexpr std::int64_t kMaxNodes = 100'000;
constexpr double kMaxSeconds = 1e6;

struct SimOptions {
  std::int64_t nodes = 100;
  double loss = 0.0;
  std::uint64_t seed = 1;
  std::int64_t fail = 1;
  std::int64_t stall = 0;
  double stall_for_s = 5.0;
  double duration_s = 120.0;
  double settle_s = 5.0;
  double join_timeout_s = 60.0;
  double delay_ms = 1.0;
  double jitter_ms = 0.5;
  double duplicate = 0.0;
  double reorder = 0.0;
  double join_window_s = 0.0;
  std::string profile = "weft";
  bool json = false;
  bool no_dissemination = false;
  bool icmp = false;

  // Gossip overrides: applied only when given.
  std::int64_t probe_interval_ms = 0;
  std::int64_t probe_timeout_ms = 0;
  std::int64_t indirect_checks = 0;
  std::int64_t suspicion_mult = 0;
  std::int64_t suspicion_max_mult = 0;
  std::int64_t suspicion_confirmations = 0;
  std::int64_t gossip_interval_ms = 0;
  std::int64_t gossip_nodes = 0;
  std::int64_t retransmit_mult = 0;
  std::int64_t push_pull_interval_ms = 0;
  std::int64_t suspicion_min_floor_ms = 0;
  std::int64_t gossip_to_the_dead_ms = 0;
  std::int64_t awareness_max = 0;
  std::int64_t join_catchups = 0;
  std::int64_t probe_retries = 0;
  std::int64_t refute_fanout = 0;

  CLI::App* app = nullptr;
};

Duration from_seconds(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

bool given(const SimOptions& o, const char* flag) { return o.app->count(flag) > 0; }

// Returns an error message, or nothing when the values are usable.
std::optional<std::string> validate(const SimOptions& o) {
  auto finite_in = [](double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; };
  if (o.nodes < 1 || o.nodes > kMaxNodes) return "--nodes must be between 1 and " + std::to_string(kMaxNodes);
  if (!std::isfinite(o.loss) || o.loss < 0 || o.loss >= 1) return std::string("--loss must be in [0, 1)");
  if (!std::isfinite(o.duplicate) || o.duplicate < 0 || o.duplicate >= 1)
    return std::string("--duplicate must be in [0, 1)");
  if (!std::isfinite(o.reorder) || o.reorder < 0 || o.reorder > 1)
    return std::string("--reorder must be in [0, 1]");
  if (o.fail < 0 || o.stall < 0) return std::string("--fail and --stall must not be negative");
  if (o.fail + o.stall >= o.nodes) return std::string("--fail plus --stall must be less than --nodes");
  if (!std::isfinite(o.duration_s) || o.duration_s <= 0 || o.duration_s > kMaxSeconds) {
    return std::string("--duration must be positive (at most 1e6 seconds)");
  }
  if (!finite_in(o.stall_for_s, 0, kMaxSeconds))
    return std::string("--stall-for must be in [0, 1e6] seconds");
  if (!finite_in(o.settle_s, 0, kMaxSeconds)) return std::string("--settle must be in [0, 1e6] seconds");
  if (!finite_in(o.join_timeout_s, 0, kMaxSeconds))
    return std::string("--join-timeout must be in [0, 1e6] seconds");
  if (!finite_in(o.join_window_s, 0, kMaxSeconds))
    return std::string("--join-window must be in [0, 1e6] seconds");
  if (!finite_in(o.delay_ms, 0, 60'000)) return std::string("--delay-ms must be in [0, 60000]");
  if (!finite_in(o.jitter_ms, 0, 60'000)) return std::string("--jitter-ms must be in [0, 60000]");
  if (o.profile != "weft" && o.profile != "memberlist")
    return std::string("--profile must be weft or memberlist");
  return std::nullopt;
}

// Applies the gossip overrides; returns an error message for a bad value.
std::optional<std::string> apply_overrides(const SimOptions& o, gossip::Config& g) {
  struct MsFlag {
    const char* flag;
    std::int64_t value;
    Duration* field;
  };
  const MsFlag ms_flags[] = {
      {"--probe-interval-ms", o.probe_interval_ms, &g.probe_interval},
      {"--probe-timeout-ms", o.probe_timeout_ms, &g.probe_timeout},
      {"--gossip-interval-ms", o.gossip_interval_ms, &g.gossip_interval},
      {"--push-pull-interval-ms", o.push_pull_interval_ms, &g.push_pull_interval},
      {"--suspicion-min-floor-ms", o.suspicion_min_floor_ms, &g.suspicion_min_floor},
      {"--gossip-to-the-dead-ms", o.gossip_to_the_dead_ms, &g.gossip_to_the_dead},
  };
  for (const MsFlag& f : ms_flags) {
    if (!given(o, f.flag)) continue;
    if (f.value < 1 || f.value > 86'400'000) return std::string(f.flag) + " must be between 1 and 86400000";
    *f.field = std::chrono::milliseconds(f.value);
  }
  struct CountFlag {
    const char* flag;
    std::int64_t value;
    std::int64_t min;
    unsigned* field;
  };
  const CountFlag count_flags[] = {
      {"--indirect-checks", o.indirect_checks, 0, &g.indirect_checks},
      {"--suspicion-mult", o.suspicion_mult, 1, &g.suspicion_mult},
      {"--suspicion-max-mult", o.suspicion_max_mult, 1, &g.suspicion_max_mult},
      {"--suspicion-confirmations", o.suspicion_confirmations, 0, &g.suspicion_confirmations},
      {"--gossip-nodes", o.gossip_nodes, 0, &g.gossip_nodes},
      {"--retransmit-mult", o.retransmit_mult, 1, &g.retransmit_mult},
      {"--awareness-max", o.awareness_max, 1, &g.awareness_max},
      {"--join-catchups", o.join_catchups, 0, &g.join_catchups},
      {"--probe-retries", o.probe_retries, 0, &g.probe_retries},
      {"--refute-fanout", o.refute_fanout, 0, &g.refute_fanout},
  };
  for (const CountFlag& f : count_flags) {
    if (!given(o, f.flag)) continue;
    if (f.value < f.min || f.value > 1000) {
      return std::string(f.flag) + " must be between " + std::to_string(f.min) + " and 1000";
    }
    *f.field = static_cast<unsigned>(f.value);
  }
  if (Result<void> r = g.validate(); !r) return "invalid gossip config: " + r.error().message;
  return std::nullopt;
}

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json config_json(const gossip::Config& g) {
  auto ms = [](Duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  return json{
      {"probe_interval_ms", ms(g.probe_interval)},
      {"probe_timeout_ms", ms(g.probe_timeout)},
      {"indirect_checks", g.indirect_checks},
      {"probe_retries", g.probe_retries},
      {"refute_fanout", g.refute_fanout},
      {"suspicion_mult", g.suspicion_mult},
      {"suspicion_max_mult", g.suspicion_max_mult},
      {"suspicion_confirmations", g.suspicion_confirmations},
      {"suspicion_min_floor_ms", ms(g.suspicion_min_floor)},
      {"awareness_max", g.awareness_max},
      {"gossip_interval_ms", ms(g.gossip_interval)},
      {"gossip_nodes", g.gossip_nodes},
      {"gossip_to_the_dead_ms", ms(g.gossip_to_the_dead)},
      {"retransmit_mult", g.retransmit_mult},
      {"max_packet_bytes", g.max_packet_bytes},
      {"push_pull_interval_ms", ms(g.push_pull_interval)},
      {"join_catchups", g.join_catchups},
      {"join_catchup_delay_ms", ms(g.join_catchup_delay)},
      {"refused_fast_path", g.refused_fast_path},
      {"refused_confirmations", g.refused_confirmations},
  };
}

double peak_rss_mib() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

std::string seconds_text(const std::optional<double>& v) {
  if (!v) return "not reached";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", *v);
  return buf;
}

std::string id_list(const std::vector<sim::NodeId>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size() && i < 8; ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  if (ids.size() > 8) s += ",...";
  return s;
}

int run_sim(const SimOptions& o) {
  if (auto err = validate(o)) {
    std::fprintf(stderr, "weft sim: %s\n", err->c_str());
    return kExitUsage;
  }
  sim::ScenarioConfig sc;
  sc.cluster.nodes = static_cast<std::size_t>(o.nodes);
  sc.cluster.seed = o.seed;
  sc.cluster.gossip = o.profile == "memberlist" ? sim::memberlist_lan_config() : gossip::Config{};
  if (auto err = apply_overrides(o, sc.cluster.gossip)) {
    std::fprintf(stderr, "weft sim: %s\n", err->c_str());
    return kExitUsage;
  }
  sc.cluster.net.loss = o.loss;
  sc.cluster.net.delay =
      std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(o.delay_ms));
  sc.cluster.net.jitter =
      std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(o.jitter_ms));
  sc.cluster.net.duplicate = o.duplicate;
  sc.cluster.net.reorder = o.reorder;
  sc.cluster.net.icmp = o.icmp;
  if (given(o, "--join-window")) sc.cluster.join_window = from_seconds(o.join_window_s);
  sc.fail = static_cast<std::size_t>(o.fail);
  sc.stall = static_cast<std::size_t>(o.stall);
  sc.stall_for = from_seconds(o.stall_for_s);
  sc.settle = from_seconds(o.settle_s);
  sc.join_timeout = from_seconds(o.join_timeout_s);
  sc.duration = from_seconds(o.duration_s);
  sc.dissemination = !o.no_dissemination;

  // The wall clock measures the simulator; the simulation itself runs on virtual time only.
  const auto wall_start = std::chrono::steady_clock::now();
  const sim::ScenarioResult r = sim::run_scenario(sc);
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();

  if (o.json) {
    const json out{
        {"nodes", r.nodes},
        {"loss", r.loss},
        {"seed", r.seed},
        {"profile", o.profile},
        {"icmp", o.icmp},
        {"fail", sc.fail},
        {"stall", sc.stall},
        {"stall_for_s", o.stall_for_s},
        {"settle_s", o.settle_s},
        {"join_timeout_s", o.join_timeout_s},
        {"duration_s", r.simulated_s},
        {"join_converged_s", opt(r.join_converged_s)},
        {"crash_at_s", opt(r.crash_at_s)},
        {"detect_first_s", opt(r.detect_first_s)},
        {"detect_all_s", opt(r.detect_all_s)},
        {"false_positives", r.false_positives},
        {"false_positive_events", r.false_positive_events},
        {"dissemination_p50_s", opt(r.dissemination_p50_s)},
        {"dissemination_p9999_s", opt(r.dissemination_p9999_s)},
        {"dissemination_all_s", opt(r.dissemination_all_s)},
        {"msgs_per_node_per_s", r.msgs_per_node_per_s},
        {"bytes_per_node_per_s", r.bytes_per_node_per_s},
        {"packets_sent", r.packets_sent},
        {"bytes_sent", r.bytes_sent},
        {"streams_sent", r.streams_sent},
        {"stream_bytes_sent", r.stream_bytes_sent},
        {"crashed", r.crashed},
        {"stalled", r.stalled},
        {"events", r.events},
        {"deliveries", r.deliveries},
        {"stuck_deadlines", r.stuck_deadlines},
        {"protocol", json{{"probes", r.protocol.probes},
                          {"probe_retries", r.protocol.probe_retries},
                          {"indirect_probes", r.protocol.indirect_probes},
                          {"nacks_sent", r.protocol.nacks_sent},
                          {"probe_failures", r.protocol.probe_failures},
                          {"suspicions_started", r.protocol.suspicions_started},
                          {"refutes", r.protocol.refutes},
                          {"refute_bursts", r.protocol.refute_bursts},
                          {"last_words", r.protocol.last_words},
                          {"broadcasts_queued", r.protocol.broadcasts_queued},
                          {"broadcasts_sent", r.protocol.broadcasts_sent},
                          {"gossip_rounds", r.protocol.gossip_rounds},
                          {"syncs_started", r.protocol.syncs_started}}},
        {"net", json{{"lost", r.net.lost},
                     {"partitioned", r.net.partitioned},
                     {"to_down", r.net.to_down},
                     {"duplicated", r.net.duplicated},
                     {"unroutable", r.net.unroutable},
                     {"unreachable", r.net.unreachable}}},
        {"config", config_json(sc.cluster.gossip)},
        {"wall_s", wall_s},
        {"peak_rss_mib", peak_rss_mib()},
    };
    std::printf("%s\n", out.dump().c_str());
    return kExitOk;
  }
  std::printf("weft sim: %zu nodes, loss %.2f %%, seed %llu, profile %s%s\n", r.nodes, 100.0 * r.loss,
              static_cast<unsigned long long>(r.seed), o.profile.c_str(), o.icmp ? ", icmp" : "");
  std::printf("  join converged    %s\n", seconds_text(r.join_converged_s).c_str());
  if (r.crash_at_s) {
    std::printf("  at %.2f s         %zu crashed [%s], %zu stalled %.1f s [%s]\n", *r.crash_at_s,
                r.crashed.size(), id_list(r.crashed).c_str(), r.stalled.size(), o.stall_for_s,
                id_list(r.stalled).c_str());
    if (!r.crashed.empty()) {
      std::printf("  detected          first %s, all %s (after the crash)\n",
                  seconds_text(r.detect_first_s).c_str(), seconds_text(r.detect_all_s).c_str());
    }
  }
  std::printf("  false positives   %zu\n", r.false_positives);
  if (r.dissemination_all_s || r.dissemination_p50_s) {
    std::printf("  dissemination     50 %% %s, 99.99 %% %s, all %s\n",
                seconds_text(r.dissemination_p50_s).c_str(), seconds_text(r.dissemination_p9999_s).c_str(),
                seconds_text(r.dissemination_all_s).c_str());
  }
  std::printf("  traffic           %.1f msgs, %.0f bytes per node per s\n", r.msgs_per_node_per_s,
              r.bytes_per_node_per_s);
  std::printf("  cost              %.0f simulated s in %.2f s wall, peak RSS %.0f MiB\n", r.simulated_s,
              wall_s, peak_rss_mib());
  return kExitOk;
}

}  // namespace

Command add_sim_command(CLI::App& parent) {
  auto o = std::make_shared<SimOptions>();
  CLI::App* app =
      parent.add_subcommand("sim", "Simulate a cluster on virtual time (deterministic for a seed)");
  o->app = app;
  app->add_option("--nodes", o->nodes, "Number of nodes")->capture_default_str();
  app->add_option("--loss", o->loss, "Random loss probability of datagrams, [0, 1)")->capture_default_str();
  app->add_option("--seed", o->seed, "Seed of every random choice")->capture_default_str();
  app->add_option("--fail", o->fail, "Nodes crashed after the join converged")->capture_default_str();
  app->add_option("--stall", o->stall, "Other nodes stalled at the same moment")->capture_default_str();
  app->add_option("--stall-for", o->stall_for_s, "Stall length, seconds")->capture_default_str();
  app->add_option("--duration", o->duration_s, "Simulated seconds to run")->capture_default_str();
  app->add_option("--settle", o->settle_s, "Seconds between join convergence and the crashes")
      ->capture_default_str();
  app->add_option("--join-timeout", o->join_timeout_s,
                  "Crash anyway after this many seconds if the join has not converged")
      ->capture_default_str();
  app->add_option("--delay-ms", o->delay_ms, "Mean one-way link delay, ms")->capture_default_str();
  app->add_option("--jitter-ms", o->jitter_ms, "Per-message delay jitter (uniform +-), ms")
      ->capture_default_str();
  app->add_option("--duplicate", o->duplicate, "Datagram duplication probability")->capture_default_str();
  app->add_option("--reorder", o->reorder, "Probability of an extra 0-10 ms delay")->capture_default_str();
  app->add_option("--join-window", o->join_window_s,
                  "Joins spread over this many seconds (default max(1, N/1000))");
  app->add_option("--profile", o->profile,
                  "Base gossip config: weft (defaults) or memberlist (DefaultLANConfig)")
      ->capture_default_str();
  app->add_flag("--json", o->json, "Print one JSON object");
  app->add_flag("--no-dissemination", o->no_dissemination, "Skip the metadata dissemination measurement");
  app->add_flag("--icmp", o->icmp,
                "A datagram to a crashed node draws an ICMP port unreachable back to its sender "
                "(default: crashes are silent)");
  auto* g = "Gossip config";
  app->add_option("--probe-interval-ms", o->probe_interval_ms)->group(g);
  app->add_option("--probe-timeout-ms", o->probe_timeout_ms)->group(g);
  app->add_option("--indirect-checks", o->indirect_checks)->group(g);
  app->add_option("--probe-retries", o->probe_retries)->group(g);
  app->add_option("--refute-fanout", o->refute_fanout)->group(g);
  app->add_option("--suspicion-mult", o->suspicion_mult)->group(g);
  app->add_option("--suspicion-max-mult", o->suspicion_max_mult)->group(g);
  app->add_option("--suspicion-confirmations", o->suspicion_confirmations)->group(g);
  app->add_option("--gossip-interval-ms", o->gossip_interval_ms)->group(g);
  app->add_option("--gossip-nodes", o->gossip_nodes)->group(g);
  app->add_option("--retransmit-mult", o->retransmit_mult)->group(g);
  app->add_option("--push-pull-interval-ms", o->push_pull_interval_ms)->group(g);
  app->add_option("--awareness-max", o->awareness_max)->group(g);
  app->add_option("--suspicion-min-floor-ms", o->suspicion_min_floor_ms)->group(g);
  app->add_option("--join-catchups", o->join_catchups)->group(g);
  app->add_option("--gossip-to-the-dead-ms", o->gossip_to_the_dead_ms)->group(g);
  return Command{app, [o] { return run_sim(*o); }};
}

}  // namespace weft::cli
