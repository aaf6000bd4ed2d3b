#pragma once
// Agent: the composition root. One thread, one event loop (the only reader of the clock) drives
// the gossip Node, the UDP socket, the reliable ZeroMQ channel, the RPC socket, signals and
// persistence. Split by concern:
//   agent.cpp     start-up, event loop, datagrams and streams, persistence, shutdown
//   agent_rpc.cpp RPC server: decoding requests, methods, deferred replies
//   keyops.cpp    cluster-wide key rotation (as `serf keys`)
//   keyop_trust.cpp  with a trust root: the operator signature each key operation needs
//   policy_state.cpp  the operator-signed policy: apply, store, spread (doc_sync.h), proxy snapshot
//   frame.cpp     the reliable-message frame inside the seal

#include <array>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "catalog.h"
#include "doc_sync.h"
#include "frame.h"
#include "gossip_claims.h"
#include "health.h"
#include "weft/agent/agent.h"
#include "weft/agent/rpc.h"
#include "weft/gossip/node.h"
#include "weft/store/store.h"
#include "weft/transport/identity.h"
#include "weft/transport/keyop.h"
#include "weft/transport/keyring.h"
#include "weft/transport/policy.h"
#include "weft/transport/proxy.h"
#include "weft/transport/reliable.h"
#include "weft/transport/revocation.h"
#include "weft/transport/trust.h"
#include "weft/transport/udp.h"

namespace spdlog {
class logger;
}

namespace weft::agent {

using nlohmann::json;

struct AgentStats {
  std::array<std::uint64_t, transport::kOpenErrorCount> rejected_datagrams{};  // by OpenError
  std::array<std::uint64_t, transport::kOpenErrorCount> rejected_streams{};
  std::uint64_t bad_frames = 0;        // opened, but not a frame we understand
  std::uint64_t rpc_requests = 0;
  std::uint64_t rpc_bad_requests = 0;  // not a msgpack request map
  std::uint64_t rpc_oversized = 0;     // over kMaxRequestBytes
  std::uint64_t key_ops_served = 0;    // key operations asked of us by other members
  std::uint64_t persist_errors = 0;
  std::uint64_t loop_wakeups = 0;      // event-loop iterations: an idle agent wakes a few times a second
};

struct LocalService {
  ServiceSpec spec;
  bool passing = false;
};

// A reply the RPC server owes once something happens (a join answered, a leave done...).
struct Waiter {
  std::string peer;  // ROUTER identity of the client
  TimePoint deadline;
};

struct KeyOp {
  std::uint32_t id = 0;
  std::string op;
  std::string key;
  std::vector<std::byte> signed_op;  // the operator-signed document (keyop.h); empty: none given
  // `use` first runs a "list" round: the key id every member must report, and those that did not.
  std::string precheck_id;
  std::set<std::string> lacking;
  Waiter waiter;
  std::set<std::string> waiting;  // members that have not answered
  std::size_t asked = 0;          // members asked, ourselves included
  std::size_t responses = 0;
  json failed = json::object();
  std::map<std::string, std::size_t> key_counts;
};

class Agent {
 public:
  Agent(AgentConfig cfg, AgentFlags flags);
  ~Agent();
  // Start-up: data dir, store, identity, keyring, sockets. Returns an exit code on failure.
  std::optional<int> start();
  int run();

  // --- agent.cpp ---
  void flush_outgoing(TimePoint now);
  void send_frame(TimePoint now, const Endpoint& to, FrameKind kind, std::span<const std::byte> body);
  void on_datagram(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes);
  void on_stream(TimePoint now, std::span<const std::byte> bytes);
  void on_events(TimePoint now);
  void persist_members();
  void persist_keys();
  void begin_leave(TimePoint now);
  void rejoin_round(TimePoint now);
  void on_signal(TimePoint now);
  void reload();
  TimePoint next_wakeup(TimePoint node_deadline) const;
  void share_wall_clock();

  // --- agent_rpc.cpp ---
  void on_rpc();
  void reply(const std::string& peer, const json& result);
  void reply_error(const std::string& peer, const std::string& message);
  void send_reply(const std::string& peer, const json& reply);
  void dispatch(TimePoint now, const std::string& peer, const std::string& method, const json& params);
  json members_json() const;
  json info_json() const;
  void check_waiters(TimePoint now);

  // --- services.cpp ---
  Result<void> load_services();
  std::vector<std::byte> own_meta() const;
  NodeCatalog own_catalog() const;
  void publish_catalog(TimePoint now);
  Result<void> register_service(const ServiceSpec& spec);
  Result<bool> deregister_service(const std::string& name);
  void set_service_health(const std::string& name, bool passing);
  void start_check(TimePoint now, const ServiceSpec& spec);
  void apply_health_changes();
  void on_member_catalog(TimePoint now, const std::string& name);
  void send_catalog_fetches(TimePoint now);
  void on_catalog_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body);
  void on_catalog_response(const Endpoint& from, std::span<const std::byte> body);
  json services_json() const;

  // --- mesh.cpp ---
  std::optional<std::string> start_proxy();  // an error message, or nullopt
  Result<void> check_upstream_as(const UpstreamSpec& u) const;
  Result<void> add_upstream(const UpstreamSpec& u);
  Result<bool> remove_upstream(const std::string& name);
  void publish_routes();
  json upstreams_json() const;
  json routes_json() const;
  json proxy_stats_json() const;

  // --- policy_state.cpp ---
  // The stored policy at start: re-verified (its version is not compared; an expired one is kept,
  // see the file's comment). An unreadable row is an error; one that no longer verifies is logged
  // and not enforced.
  Result<void> load_policy();  // and the revocation list (load_revocations)
  Result<void> load_policy_doc();
  Result<void> load_revocations();
  // Verifies a signed policy envelope (from `weft policy apply` or a peer) against the trust
  // root, this cluster and the version held, counts the outcome, stores it durably, then
  // enforces and advertises it. Returns the version, or why it was refused (one line).
  Result<std::uint64_t> accept_policy(TimePoint now, std::span<const std::byte> envelope, const std::string& source);
  void publish_trust();  // a new ProxyTrust snapshot to the proxy (with a trust root only)
  void on_member_policy(const std::string& name);
  void send_doc_fetches(TimePoint now);
  void on_doc_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body);
  void on_doc_response(TimePoint now, const Endpoint& from, std::span<const std::byte> body);
  void rpc_policy_apply(TimePoint now, const std::string& peer, const json& params);
  // The revocation list: the same path as the policy (verify, store, enforce, advertise "rev").
  Result<std::uint64_t> accept_revocations(TimePoint now, std::span<const std::byte> envelope,
                                           const std::string& source);
  void rpc_revocations_apply(TimePoint now, const std::string& peer, const json& params);
  json revocations_rpc_json() const;
  json revocations_stats_json() const;
  TimePoint next_doc_fetch() const;
  json policy_rpc_json() const;   // the `policy` RPC: what `weft policy show` prints
  json policy_stats_json() const; // version and counters, in `weft stats`

  // --- keyops.cpp ---
  // `signed_text`: the armored operator-signed document from the CLI (empty: none).
  void start_key_op(TimePoint now, const std::string& peer, const std::string& op, const std::string& key,
                    const std::string& signed_text);
  void on_key_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body);
  void on_key_response(std::span<const std::byte> body);
  Result<void> apply_key_op(const std::string& op, const std::string& key, std::span<const std::byte> signed_op);
  Result<transport::KeyId> resolve_key(const std::string& key) const;
  json key_ids_json() const;
  void begin_key_round(TimePoint now, Waiter waiter, const std::string& op, const std::string& key,
                       std::vector<std::byte> signed_op, const std::string& precheck_id);
  void finish_key_op(TimePoint now);

  // --- keyop_trust.cpp ---
  // With a trust root, `op` on `key` needs `signed_op` (transport/keyop.h) to verify; `record`
  // (when the step is applied) remembers its nonce. Refusals are counted and logged; the error is
  // "key operation refused (<reason>): ...". Without a trust root, or for "list": always ok.
  Result<void> authorize_key_op(const std::string& op, const std::string& key, std::span<const std::byte> signed_op,
                                bool record);
  json key_ops_stats_json() const;

  AgentConfig cfg_;
  AgentFlags flags_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<spdlog::logger> gossip_log_;
  std::shared_ptr<spdlog::logger> proxy_log_;

  zmq::context_t ctx_{1};
  transport::UdpSocket udp_;
  transport::ReliableChannel reliable_;
  transport::Keyring ring_;
  transport::NodeIdentity identity_;
  // With a trust root configured (--operator-pub, --cert): the trusted operator keys and this
  // node's verified certificate, as its exact bytes (forwarded as they are) and parsed.
  struct Trust {
    std::vector<transport::SignPublicKey> operators;
    std::vector<std::byte> cert_envelope;
    transport::NodeCert cert;
  };
  std::optional<Trust> trust_;
  // Signed gossip claims over node certificates (with a trust root only); its revoked set follows
  // the revocation list (publish_trust).
  std::shared_ptr<CertClaimAuthority> claims_;
  [[nodiscard]] CertClaimAuthority::Revoked revoked_set() const;
  // The signed policy this agent enforces (issue 5): parsed, and its envelope byte for byte (what
  // peers fetch). Null: none held.
  std::shared_ptr<const transport::Policy> policy_;
  std::vector<std::byte> policy_envelope_;
  // The highest version stored, even one that no longer verifies (the store never goes back).
  std::optional<std::uint64_t> policy_floor_;
  transport::PolicyStats policy_stats_;  // documents from `weft policy apply` and from peers
  DocSync policy_sync_{std::chrono::seconds(1)};
  std::set<std::string> policy_logged_;  // peer rejections already logged (bounded), both kinds
  // The signed revocation list this agent enforces, like the policy above.
  std::optional<transport::RevocationList> revocations_;
  std::vector<std::byte> revocations_envelope_;
  std::optional<std::uint64_t> revocations_floor_;
  transport::PolicyStats revocation_stats_;  // the same failure kinds (kExpired never occurs)
  DocSync revocation_sync_{std::chrono::seconds(1)};
  [[nodiscard]] Result<Trust> load_trust() const;
  [[nodiscard]] nlohmann::json trust_json() const;
  store::Store store_;
  std::optional<gossip::Node> node_;
  zmq::socket_t rpc_;
  // Something was received or sent on rpc_ since the loop last read its ZMQ_EVENTS (run()).
  bool rpc_touched_ = true;
  int signal_fd_ = -1;
  int lock_fd_ = -1;
  std::string db_path_;
  bool rpc_bound_ = false;

  AgentStats stats_;
  std::vector<gossip::Datagram> out_;
  std::vector<gossip::MemberEvent> events_;
  std::vector<std::byte> buf_;
  std::vector<std::byte> plain_;
  std::vector<std::byte> sealed_;

  std::set<std::string> dirty_members_;
  std::uint64_t persisted_incarnation_ = 0;
  bool persisted_members_once_ = false;
  TimePoint next_persist_{};
  std::vector<Endpoint> rejoin_seeds_;
  TimePoint next_rejoin_{};
  TimePoint next_idle_close_{};
  TimePoint next_trim_{};

  std::map<std::string, LocalService> local_services_;
  std::uint64_t catalog_version_ = 0;
  bool catalog_dirty_ = false;
  TimePoint publish_at_ = TimePoint::max();
  HealthChecker health_;
  std::unique_ptr<transport::Proxy> proxy_;  // its own thread; stopped in ~Agent before the rest
  std::map<std::string, UpstreamSpec> upstreams_;
  bool routes_dirty_ = false;
  RemoteCatalogs remote_;

  std::vector<Waiter> join_waiters_;
  std::vector<Waiter> leave_waiters_;
  std::optional<KeyOp> key_op_;
  std::array<std::uint64_t, transport::kKeyOpErrorCount> key_ops_refused_{};  // by KeyOpError
  std::uint64_t key_ops_authorized_ = 0;
  transport::KeyOpReplayGuard key_op_nonces_;
  std::uint32_t next_key_op_id_ = 1;

  bool leaving_ = false;
  TimePoint leave_deadline_{};
  bool stop_ = false;
  int exit_code_ = 0;
};

}  // namespace weft::agent
