#pragma once
// The mesh data plane: local apps connect to an upstream listener of their local agent; the proxy
// carries each connection to a healthy instance of the wanted service on another node, over one
// pooled, mutually authenticated, encrypted connection per peer node (Noise_IK handshake,
// AEAD records, stream multiplexer: noise.h, record.h, mux.h), and the peer's proxy hands it to
// the local service there.
//
// Threads: the proxy runs its own event loop (epoll) on its own thread; the bulk path never
// waits on the agent's gossip loop and the other way round. The agent talks to it only through
// this class: route snapshots (immutable, swapped atomically), upstream commands and counters.
//
//   app --TCP--> upstream listener 127.0.0.1:P ==(session to node X: TCP + Noise + records + mux)==>
//        mesh listener of X --> 127.0.0.1:<service port> on X
//
// Session handshake on a new mesh TCP connection (initiator = the connecting proxy):
//   each handshake message is framed as [u16 big-endian length][Noise message]
//   msg1 payload (initiator -> responder): msgpack map {"v": 1, "node": <initiator node name>,
//                                          "ciphers": [1, 2],   (record.h Cipher values offered)
//                                          "cert": bin}         (with a trust root only)
//   msg2 payload (responder -> initiator): msgpack map {"v": 1, "node": <responder node name>,
//                                          "cipher": <chosen>,
//                                          "cert": bin}         (with a trust root only)
//   "cert" is the sender's node certificate envelope (trust.h), byte for byte, 1..kMaxCertBytes.
//   Without a trust root (ProxyTrust): the responder accepts msg1 only if RouteTable::peer_keys
//   holds exactly the remote static key it saw for the node name claimed in msg1; the initiator
//   checks the name in msg2 against the node it dialled (the key itself is authenticated by IK).
//   With a trust root each end instead requires the peer's "cert" and accepts it only if
//   verify_cert passes (trusted operator, signature, not_before - skew <= wall clock <
//   not_after + skew), its node is the name claimed in msg1 (responder) or the node dialled
//   (initiator), its kx_pk is the Noise static key the peer proved, and its (issuer, serial) is
//   not revoked. Refusal kills the session with the reason handshake_cert_missing,
//   handshake_cert_<malformed | unknown_issuer | bad_signature | not_yet_valid | expired>,
//   handshake_cert_mismatch or handshake_cert_revoked (counted, one info line). Then records
//   (record.h) with split() keys, and the stream multiplexer (mux.h; initiator =
//   MuxRole::kInitiator) inside them.
//   Stream OPEN payload: msgpack map {"v": 1, "service": <destination service name>,
//                                     "from": <source service>}   ("from" omitted: anonymous)
//   The Noise prologue is kMeshPrologue below (both ends: another version fails message 1).
//   The responder picks AES-256-GCM if it was offered and the responder has AES-NI, else
//   XChaCha20-Poly1305; the initiator refuses a cipher it did not offer or a name it did not dial.
//   Unknown map keys are ignored (a newer peer's additions); names are 1..255 bytes.
//
// Authorization with a trust root (ProxyTrust; proxy_trust.cpp):
//   app connects (initiator)  our certificate must grant the upstream's `as` (if set) and the
//                             policy must allow as -> service; else the app's connection is
//                             closed with RST at once and no session is dialled
//   stream start (initiator)  the session's peer certificate must grant the service; else that
//                             instance counts as failed and another is tried
//   OPEN (responder)          before routing: the initiator's certificate must grant "from"
//                             (if set), ours the service, the policy must allow from -> service
//                             (anonymous matches only from = "*" rules), and the matched rule's
//                             rate limit must have a token for the pair; else
//                             RESET(policy_denied), which the initiator does not retry
//   shadow-deny               counted and logged as denied, let through
//   limits                    the rule that allowed a connection replaces ProxyConfig's limits
//                             for it: idle_timeout (both sides), connect_timeout (initiator, per
//                             instance tried: the session must be up within it, when shorter
//                             than ProxyConfig's) and retries (initiator: at most retries + 1
//                             instances tried)
//   our certificate renewed   the sessions we initiated leave the pool (they finish their
//                             streams): new connections go over new sessions that carry it
//   new snapshot              sessions whose peer certificate no longer verifies (revoked,
//                             expired, operator no longer trusted) or that have none are closed
//                             (orderly; their connections get RST); every live connection is
//                             re-decided and closed with RST if now denied; peer certificates
//                             are also checked for expiry every second (kCertCheck)
//   Every decision is counted (ProxyStats::policy, policy_pairs) and every refusal logged at
//   info: `policy_deny from=client to=web node=n2 rule=0 side=responder` (rule: index or
//   "default"; from "-" when anonymous), at most kMaxPolicyLogsPerSecond lines a second.
//
// Pooling: the sessions this proxy initiates are pooled, one per peer node (by node name), and
// carry all our app connections to that node. A session a peer initiated carries only that
// peer's streams (each side dials its own; no tie-breaking between crossing dials). Only the
// initiator closes an idle session (after session_idle); the responder waits twice as long.
//
// Failure semantics: a session that fails (connect, handshake, a record that does not open, an
// end without the close record, a mux protocol error, a timeout) is closed at once; its app
// connections are closed with RST (SO_LINGER 0), or retried on another instance while nothing
// came back yet and the bytes they sent fit the 64 KiB replay buffer. A peer's RESET(no_route /
// connect_failed) before any byte came back is retried the same way (max_attempts in all).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/transport/policy.h"
#include "weft/transport/trust.h"

namespace spdlog {
class logger;
}

namespace weft::transport {

using KxPublicKey = std::array<unsigned char, 32>;

// Hashed into both ends of every mesh handshake (noise.h prologue).
inline constexpr std::string_view kMeshPrologue = "weft mesh v1";

// One instance of a service, as the agent's catalog and gossip see it.
struct RouteInstance {
  std::string node;
  Endpoint mesh;      // the node's mesh listener
  bool healthy = true;  // service check passing and node alive (suspect / failed: false)
};

// An immutable snapshot the agent builds from gossip and the catalog and hands to the proxy.
struct RouteTable {
  std::map<std::string, std::vector<RouteInstance>> services;  // remote instances by service
  std::map<std::string, KxPublicKey> peer_keys;                // node name -> its gossiped kx key
  std::map<std::string, std::uint16_t> local_services;         // served here: name -> 127.0.0.1 port
};

enum class Balance : std::uint8_t { kPeakEwma = 0, kRoundRobin = 1 };  // append-only

struct UpstreamConfig {
  std::string name;     // the destination service
  Endpoint listen;      // where local apps connect (normally 127.0.0.1:PORT)
  Balance balance = Balance::kPeakEwma;
  // The local app's own service (`weft upstream add --as`): the source service policy decides
  // on. Empty: anonymous, matched only by rules with from = "*". The agent checks that this
  // node's certificate grants it before adding the upstream.
  std::string as;
};

// With a trust root configured (issue 5): an immutable snapshot the agent hands to the proxy
// (set_trust) when it starts and whenever the policy or the revocation list changes.
//  - Every session handshake carries the sender's certificate envelope (msg1: the initiator's,
//    msg2: the responder's). Each end verifies the peer's against `operators` (verify_cert with
//    `skew`), and refuses it unless the certificate names the peer's node and the Noise static
//    key the peer proved, and its (issuer, serial) is not in `revoked`.
//  - Stream OPEN carries the source service; the responder refuses it unless the initiator's
//    certificate grants that service and this node's grants the destination, then decide()s
//    with `policy` and takes a token from the pair's RateLimiter bucket. The initiator decides
//    too, when the app connects, and refuses early (RST) what the policy denies.
//  - No policy (nullptr): certified peers and granted services only, every pair allowed.
//  - A new snapshot re-checks the live sessions (revoked, expired) and streams (policy) and
//    closes what is no longer allowed.
// No snapshot (never set, or nullptr): no certificates are exchanged or checked and no policy
// applies, as before issue 5.
struct ProxyTrust {
  std::vector<SignPublicKey> operators;
  std::vector<std::byte> own_cert;   // this node's certificate envelope, byte for byte
  std::set<std::pair<IssuerId, std::uint64_t>> revoked;  // (issuer, serial)
  std::shared_ptr<const Policy> policy;
  std::chrono::seconds skew = kDefaultCertSkew;
};

struct ProxyConfig {
  std::string node;                       // our node name (sent in the handshake)
  Endpoint mesh_bind;                     // where other proxies connect to us
  std::array<unsigned char, 32> kx_pk{};  // our long-term X25519 key pair (NodeIdentity)
  std::array<unsigned char, 32> kx_sk{};
  Duration connect_timeout = std::chrono::seconds(5);   // TCP connect + handshake to a peer
  Duration idle_timeout = std::chrono::minutes(5);      // a proxied connection without traffic
  Duration session_idle = std::chrono::seconds(60);     // a pooled session without streams
  // A session whose peer leaves our data unacknowledged (or, idle, answers no keepalive) this
  // long is closed and its streams reset, so that after a partition new connections get a fresh
  // session instead of one stuck in TCP's retransmission backoff (up to ~15 min). Partitions
  // shorter than this do not break connections.
  Duration peer_timeout = std::chrono::seconds(20);
  Duration ewma_decay = std::chrono::seconds(10);  // peak-EWMA time constant (proxy_balance.cpp)
  unsigned max_attempts = 3;               // instances tried for one app connection
  unsigned eject_after_failures = 5;       // consecutive failures -> ejected
  Duration eject_for = std::chrono::seconds(30);
  std::size_t max_streams_per_session = 4096;
  // Per stream and direction: what a peer may send before the app reads it. Bounds the memory a
  // slow reader costs (about this much per stream) and a fast stream's bytes in flight.
  std::uint32_t stream_window = 1024 * 1024;
};

// Counters (monotonic) per upstream and per local service, and for the proxy as a whole.
struct TrafficCounters {
  std::uint64_t connections = 0;
  std::uint64_t active = 0;        // current, not monotonic
  std::uint64_t bytes_in = 0;      // towards the app / client
  std::uint64_t bytes_out = 0;     // from the app / client
  std::uint64_t failures = 0;      // connections that ended in an error (reset, timeout, no route,
                                   // refused by the trust root or the policy)
  std::uint64_t retries = 0;
  std::uint64_t ejections = 0;
  std::array<std::uint64_t, 16> latency_us_log2{};  // connect/first-byte latency histogram: bucket i < 2^(i+6) us
};

struct InstanceView {
  std::string node;
  Endpoint mesh;
  bool healthy = true;
  bool ejected = false;
  double rtt_ms = 0;      // peak-EWMA estimate
  double weight = 0;      // load-balancing weight (1 / cost)
  std::uint64_t active = 0;
};

// Counted per decision (ProxyStats::policy). allowed: admitted by a policy (no policy: not
// counted); denied: refused by a deny rule or the default; shadow_denied: a shadow-deny matched
// (let through, logged as denied); rate_limited: the pair's bucket was empty (responder);
// not_granted: a certificate does not grant the source or the destination service;
// closed_on_recheck: live connections closed because a new snapshot denies them.
struct PolicyCounters {
  std::uint64_t allowed = 0;
  std::uint64_t denied = 0;
  std::uint64_t shadow_denied = 0;
  std::uint64_t rate_limited = 0;
  std::uint64_t not_granted = 0;
  std::uint64_t closed_on_recheck = 0;
};
inline constexpr std::size_t kMaxPolicyPairs = 256;
inline constexpr unsigned kMaxPolicyLogsPerSecond = 50;

struct ProxyStats {
  std::map<std::string, TrafficCounters> upstreams;  // by upstream (service) name
  std::map<std::string, TrafficCounters> services;   // local services served to other nodes
  std::map<std::string, std::vector<InstanceView>> routes;  // by upstream
  std::map<std::string, Endpoint> listening;  // by upstream: the bound listener (port 0 resolved)
  std::uint64_t sessions_open = 0;
  std::uint64_t sessions_initiated = 0;
  std::uint64_t sessions_accepted = 0;
  std::uint64_t handshakes_failed = 0;   // bad message, wrong key for the name, unknown node,
                                         // timeout, refused (256 accepted handshakes at once), or
                                         // a peer certificate refused (trust root)
  std::uint64_t records_rejected = 0;    // records that failed to open, or an end (EOF, RST) without
                                         // the close record (connection closed)
  std::uint64_t protocol_errors = 0;     // mux errors (connection closed)
  std::uint64_t sessions_failed = 0;     // connect / handshake failed or timed out, or cut mid-way
  std::uint64_t streams_refused = 0;     // peers' OPENs for a service not served here, malformed,
                                         // or refused by the trust root (grant, policy, rate)
  std::uint64_t connections_open = 0;    // current proxied connections (both sides), not monotonic
  // Current bytes held by the proxy for all connections and sessions (stream bytes waiting for a
  // socket, replay buffers, sealed and mux output not yet sent); bounded per connection by the
  // stream window whatever the speeds. Not monotonic.
  std::uint64_t bytes_buffered = 0;
  // Current room allocated for those bytes (stream send queues, conn and session buffers): a
  // stream idle for a sweep period (about 1 s) gives its send queue back. Not monotonic.
  std::uint64_t buffer_bytes_allocated = 0;

  // With a trust root (ProxyTrust). Certificates the peers presented in handshakes, by
  // verify_cert outcome; refusals beyond that outcome (each also counted in handshakes_failed):
  CertStats peer_certs;
  std::uint64_t certs_missing = 0;     // the peer sent no certificate
  std::uint64_t certs_mismatched = 0;  // names another node or another key than the peer proved
  std::uint64_t certs_revoked = 0;     // (issuer, serial) in ProxyTrust::revoked
  // Live sessions closed because a new snapshot or the periodic expiry check no longer accepts
  // their peer (revoked, expired, unknown issuer, no certificate).
  std::uint64_t sessions_closed_on_recheck = 0;
  // Stream decisions, both sides (initiator: when the app connects; responder: on OPEN).
  PolicyCounters policy;
  // The same by "from->to" (from "-" when anonymous), at most kMaxPolicyPairs entries; pairs
  // beyond that are summed under "other".
  std::map<std::string, PolicyCounters> policy_pairs;
  std::uint64_t policy_logs_suppressed = 0;  // decision log lines over kMaxPolicyLogsPerSecond
};

class Proxy {
 public:
  // Binds the mesh listener (port 0: the system picks; see mesh_endpoint()) and starts the thread.
  static Result<std::unique_ptr<Proxy>> start(ProxyConfig cfg, std::shared_ptr<spdlog::logger> log);
  ~Proxy();  // stops the thread, closes every socket
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  [[nodiscard]] Endpoint mesh_endpoint() const;
  // Thread-safe; takes effect for new connections at once. An instance that turned unhealthy
  // leaves the rotation at once (connections in flight to it are not cut).
  void set_routes(std::shared_ptr<const RouteTable> routes);
  // Thread-safe; see ProxyTrust. Takes effect for new handshakes and streams at once, and the
  // proxy re-checks the live ones within its next loop turn.
  void set_trust(std::shared_ptr<const ProxyTrust> trust);
  // Thread-safe; blocks until the proxy thread has bound (or failed to bind) the listener.
  Result<void> add_upstream(const UpstreamConfig& u);
  Result<void> remove_upstream(const std::string& name);  // closes the listener; live connections finish
  // Thread-safe copy.
  [[nodiscard]] ProxyStats stats() const;

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::transport
