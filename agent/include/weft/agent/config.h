#pragma once
// The agent's settings: from a TOML file (--config) and from flags; flags win.
//
// TOML keys (all optional; the same names as the flags, with '_' for '-'):
//   node = "web-1"              bind = "10.0.0.5:7946"       advertise = "203.0.113.5:7946"
//   join = ["10.0.0.1:7946"]    data_dir = "/var/lib/weft"   rpc = "/var/lib/weft/rpc.sock"
//   key_file = "/etc/weft/key"  insecure_plaintext = false   log_level = "info"
//   log_json = false            tags = { role = "web" }
//   operator_pub = ["/etc/weft/operator.pub"]   cert = "/etc/weft/node.cert"   (issue 5)
//   cluster = "default"         # the cluster name a signed policy must name (issue 5)
//   [gossip]                    # durations as "500ms", "1s", "2m", "24h"
//   probe_interval = "1s"  probe_timeout = "500ms"  indirect_checks = 3  suspicion_mult = 2
//   suspicion_max_mult = 6  suspicion_confirmations = 3  suspicion_min_floor = "6s"
//   gossip_interval = "200ms"  gossip_nodes = 3  retransmit_mult = 4  push_pull_interval = "30s"
//   reconnect_interval = "30s"  reap_after = "24h"  leave_fanout = 64  refute_fanout = 64
//   refused_fast_path = true  refused_confirmations = 1  join_catchups = 5  awareness_max = 8
//   reclaim_after = "0s"  # a failed / left name is refused at another address this long (0: off)

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/gossip/config.h"

namespace weft::agent {

inline constexpr std::uint16_t kDefaultPort = 7946;

// A service on this node, as `weft service register` or a [[service]] table declares it.
struct ServiceSpec {
  std::string name;
  std::uint16_t port = 0;
  std::vector<std::string> tags;
  std::string check;  // "" | "tcp" | "http://127.0.0.1:PORT/PATH" | "exec:COMMAND"
  Duration interval = std::chrono::seconds(10);
  friend bool operator==(const ServiceSpec&, const ServiceSpec&) = default;
};

// A local listener whose connections go to a healthy instance of service `name`.
struct UpstreamSpec {
  std::string name;
  Endpoint listen;
  std::string balance = "peak-ewma";  // or "round-robin"
  // The local app's own service (`--as`, `as = "..."`): the source service policy decides on.
  // Empty: anonymous. With a trust root, this node's certificate must grant it.
  std::string as;
  friend bool operator==(const UpstreamSpec&, const UpstreamSpec&) = default;
};

struct AgentConfig {
  std::string node;
  // The cluster's name (issue 5): a signed policy is accepted only if it names this cluster.
  std::string cluster = "default";
  Endpoint bind;
  std::optional<Endpoint> advertise;
  std::vector<Endpoint> join;
  std::string data_dir;
  std::string rpc;          // ipc socket path; default <data_dir>/rpc.sock
  std::string key_file;
  bool insecure_plaintext = false;
  // The trust root (issue 5): trusted operator public key files (two during a root rotation) and
  // this node's certificate. Either both or neither.
  std::vector<std::string> operator_pubs;
  std::string cert_file;
  std::string log_level = "info";
  bool log_json = false;
  std::map<std::string, std::string> tags;
  std::vector<ServiceSpec> services;    // [[service]] tables of the config file
  std::vector<UpstreamSpec> upstreams;  // [[upstream]] tables
  Endpoint mesh_bind;                   // the proxy's listener; default: bind IP, bind port + 1
  std::string config_file;  // where the file settings came from (for SIGHUP)
  gossip::Config gossip;
  Duration rejoin_interval = std::chrono::seconds(30);  // retry seeds that are not live members

  [[nodiscard]] Endpoint advertised() const { return advertise ? *advertise : bind; }
};

// What the command line gave; unset fields fall back to the file, then to defaults.
struct AgentFlags {
  std::optional<std::string> node, bind, advertise, data_dir, rpc, key_file, config, log_level, mesh_bind, cert,
      cluster;
  std::vector<std::string> join;
  std::vector<std::string> operator_pubs;  // --operator-pub FILE (repeatable)
  std::vector<std::string> tags;  // KEY=VALUE
  bool insecure_plaintext = false;
  bool log_json = false;
};

// Reads the config file (if any) and merges the flags over it. Errors are one line naming the
// problem (the caller prints "weft: <error>" and exits 2).
[[nodiscard]] Result<AgentConfig> resolve_config(const AgentFlags& flags);

// The settings a running agent can change on SIGHUP: log level and tags. Re-reads
// `cfg.config_file` and applies `flags` over it again.
[[nodiscard]] Result<AgentConfig> reload_config(const AgentFlags& flags);

// "1500ms", "2s", "1m", "24h" (also "1.5s").
[[nodiscard]] Result<Duration> parse_duration(std::string_view text);
// Node names: 1..128 bytes of [A-Za-z0-9._-] (they appear in logs and tables unquoted).
[[nodiscard]] Result<void> check_node_name(std::string_view name);
// Service names: the same alphabet and length.
[[nodiscard]] Result<void> check_service_name(std::string_view name);
// Cluster names: the same alphabet and length.
[[nodiscard]] Result<void> check_cluster_name(std::string_view name);
// Name, listen address (an IP literal with a non-zero port), balance ("peak-ewma" or
// "round-robin") and `as` (empty or a service name). One line naming the problem.
[[nodiscard]] Result<void> check_upstream(const UpstreamSpec& u);

}  // namespace weft::agent
