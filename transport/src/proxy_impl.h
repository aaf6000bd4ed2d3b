#pragma once
// Private state of the mesh proxy (proxy.h). Everything here lives on the proxy thread, except
// the few members marked "shared" (guarded by mu_).
//
// Ownership. Sessions and connections are kept in maps by a 64-bit id that is never reused, so
// an epoll event or a timer for an object that is already gone finds nothing and is dropped.
// A Conn names its session and stream by id; a Session maps its stream ids back to conns.
//
// Backpressure invariants (memory per connection is bounded whatever the speeds):
//  - a conn reads its socket only while its stream has send credit and its session's backlog
//    (sealed bytes not yet sent + mux output not yet taken) is under kSessionBacklog, and never
//    more than the credit: mux.write() always takes everything that was read;
//  - bytes received on a stream wait in the conn's out_ queue until the socket takes them and are
//    consume()d only then, so out_ never exceeds the stream's receive window (256 KiB);
//  - a session reads its socket only while its backlog is under 2 * kSessionBacklog (the peer
//    can make us queue control frames only by sending).

#include <sys/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "weft/base/time.h"
#include "weft/transport/byte_buffer.h"
#include "weft/transport/mux.h"
#include "weft/transport/noise.h"
#include "weft/transport/proxy.h"
#include "weft/transport/record.h"

namespace weft::transport {

inline constexpr std::size_t kIoChunk = 256 * 1024;          // bytes per read / write syscall
inline constexpr std::size_t kSessionBacklog = 1024 * 1024;  // see the invariants above
inline constexpr std::size_t kReplayLimit = 64 * 1024;       // client bytes kept for a retry
inline constexpr std::size_t kMaxWaiting = 1024;             // conns waiting for one session
// Accepted mesh connections still in their handshake: a flood of silent TCP connections costs
// at most this many sessions (each bounded by connect_timeout); more are closed at once.
inline constexpr std::size_t kMaxHandshaking = 256;
inline constexpr std::size_t kMaxIov = 64;
inline constexpr Duration kBufferSweep = std::chrono::seconds(1);
inline constexpr int kMaxAcceptsPerEvent = 64;
inline constexpr Duration kDefaultRtt = std::chrono::milliseconds(5);  // before any sample
inline constexpr std::size_t kRateLimiterPairs = 4096;
inline constexpr Duration kCertCheck = std::chrono::seconds(1);
inline std::span<const std::byte> mesh_prologue() {
  return {reinterpret_cast<const std::byte*>(kMeshPrologue.data()), kMeshPrologue.size()};
}

// Handshake payloads (msgpack maps, see proxy.h), proxy_wire.cpp.
// `cert`: the sender's certificate envelope (ProxyTrust::own_cert); empty: none sent.
struct Hello {
  std::string node;
  std::vector<Cipher> ciphers;
  std::vector<std::byte> cert;
};
struct Accept {
  std::string node;
  Cipher cipher = Cipher::kXChaCha20Poly1305;
  std::vector<std::byte> cert;
};
// Stream OPEN: the destination service and the source service (empty: anonymous, not sent).
struct OpenRequest {
  std::string service;
  std::string from;
};
std::vector<std::byte> encode_hello(const Hello& h);
std::optional<Hello> decode_hello(std::span<const std::byte> bytes);
std::vector<std::byte> encode_accept(const Accept& a);
std::optional<Accept> decode_accept(std::span<const std::byte> bytes);
std::vector<std::byte> encode_open(const std::string& service, const std::string& from = {});
std::optional<OpenRequest> decode_open_request(std::span<const std::byte> bytes);
std::optional<std::string> decode_open(std::span<const std::byte> bytes);  // the service only

// Socket helpers (proxy_wire.cpp). All sockets are non-blocking and close-on-exec.
int listen_tcp(const Endpoint& at, Endpoint& bound, std::string& err);
int connect_tcp(const Endpoint& to, std::string& err);  // -1 on immediate failure
int socket_error(int fd);                                // SO_ERROR
// Every proxy socket: we write whole batches ourselves, so Nagle only adds a delayed-ACK wait
// (~40 ms on loopback) to small request/response exchanges.
void set_nodelay(int fd);
// Agent-to-agent sockets: a peer that stops acknowledging what we sent, or (idle) stops answering
// keepalives, for `timeout` ends the connection (TCP_USER_TIMEOUT, SO_KEEPALIVE) instead of
// leaving it in retransmission backoff for up to ~15 minutes.
void set_peer_timeout(int fd, Duration timeout);
void close_with_reset(int fd);                           // SO_LINGER 0: the peer sees RST

enum class Kind : std::uint8_t { kWake = 1, kMeshListener = 2, kUpstream = 3, kSession = 4, kConn = 5 };
inline std::uint64_t token(Kind k, std::uint64_t id) { return (std::uint64_t{static_cast<std::uint8_t>(k)} << 56) | id; }

struct Session {
  enum class State : std::uint8_t { kConnecting, kHandshake, kUp, kClosing };
  std::uint64_t id = 0;
  int fd = -1;
  std::uint32_t interest = 0;   // epoll events registered
  bool initiator = false;
  State state = State::kConnecting;
  std::string node;              // the peer (initiator: the node dialled; responder: as claimed)
  bool pooled = false;           // in Impl::pool_ (initiated, not going away)
  TimePoint started{};
  TimePoint idle_since{};        // last time the stream count dropped to zero
  TimePoint timer_at = TimePoint::max();  // its entry in Impl::timers_; max(): none
  std::optional<Handshake> hs;
  std::vector<std::byte> hs_in;  // handshake bytes received, framed [u16 len][message]
  std::optional<RecordSealer> sealer;
  std::optional<RecordOpener> opener;
  std::optional<MuxSession> mux;
  // The peer's static key as the handshake proved it, and with a trust root its verified
  // certificate (and the envelope, to verify it again when the operators change).
  KxPublicKey peer_static{};
  std::optional<NodeCert> peer_cert;
  std::vector<std::byte> peer_cert_bytes;
  ByteBuffer wbuf;               // sealed bytes not yet sent
  bool close_sealed = false;     // our close record is in wbuf
  std::map<StreamId, std::uint64_t> streams;  // -> conn id
  std::vector<std::uint64_t> waiting;         // conns waiting for the session to come up
  bool backlog_blocked = false;  // a conn stopped reading on backlog(): wake them when it drains
  // Conns that stopped reading for want of stream credit. The mux reports StreamWritable only
  // after a write() was cut short, and we never write more than the credit, so these are
  // re-checked after each batch of frames from the peer.
  std::set<std::uint64_t> credit_blocked;

  [[nodiscard]] std::size_t backlog() const {
    return wbuf.size() + (mux ? mux->pending_output() : 0);
  }
};

struct Conn {
  std::uint64_t id = 0;
  int fd = -1;
  std::uint32_t interest = 0;
  bool client = false;           // true: an app connection to an upstream listener (we opened
                                 // the stream); false: to a local service for a peer's stream
  bool connecting = false;       // server side: non-blocking connect to the service in progress
  std::string name;              // upstream (client) or local service (server)
  std::string node;              // client: the instance's node currently tried
  std::string from;              // the source service (client: the upstream's `as`; server: the
                                 // OPEN's "from"); empty: anonymous
  std::uint64_t session = 0;     // 0: none (client: not picked yet / waiting)
  StreamId stream = 0;           // 0: not open
  bool read_eof = false;         // socket EOF seen; FIN queued on the stream
  bool peer_fin = false;         // the stream's FIN arrived
  bool shut_wr = false;          // shutdown(SHUT_WR) done after peer_fin and out_ drained
  bool got_reply = false;        // client: a byte or FIN came back (no retry after that)
  bool counted_instance = false; // client: instance active count was incremented
  unsigned attempts = 0;
  std::set<std::string> tried;
  std::vector<std::byte> replay;  // client bytes sent so far, while replay_ok
  bool replay_ok = true;
  std::vector<std::byte> out;   // received on the stream, not yet written: out[out_head..]
  std::size_t out_head = 0;
  std::size_t out_bytes = 0;    // out.size() - out_head
  TimePoint last_activity{};
  TimePoint opened_at{};
  TimePoint timer_at = TimePoint::max();  // its entry in Impl::timers_ (idle check); max(): none
  // This connection's limits: ProxyConfig's, or those of the policy rule that allowed it.
  Duration idle_timeout{};
  Duration connect_timeout{};     // client, per instance tried: its session must be up within it
  unsigned max_attempts = 0;      // client
  TimePoint connect_deadline = TimePoint::max();  // client, while waiting for a session; max(): none
};

struct InstanceState {
  double ewma_ms = 0;            // peak-EWMA of latency; 0 = no sample yet
  TimePoint ewma_at{};
  std::uint64_t active = 0;
  unsigned failures = 0;         // consecutive
  TimePoint ejected_until{};
};

struct Upstream {
  UpstreamConfig cfg;
  std::uint64_t id = 0;
  int fd = -1;
  std::size_t rr_next = 0;
};

// One entry per armed object (its timer_at says which): destroying the object erases it, so
// the set never holds more entries than live sessions and conns, whatever the churn.
struct Timer {
  TimePoint at;
  Kind kind;
  std::uint64_t id;
  friend bool operator<(const Timer& a, const Timer& b) {
    return std::tie(a.at, a.kind, a.id) < std::tie(b.at, b.kind, b.id);
  }
};

struct Command {
  enum class Type : std::uint8_t { kAddUpstream, kRemoveUpstream, kStats, kStop };
  Type type = Type::kStop;
  UpstreamConfig upstream;
  std::string name;
  std::promise<Result<void>> done;
  std::promise<ProxyStats> stats;
};

struct Proxy::Impl {
  Impl(ProxyConfig c, std::shared_ptr<spdlog::logger> l);
  ~Impl();

  // --- shared with other threads (mu_) ---
  std::mutex mu_;
  std::deque<std::unique_ptr<Command>> commands_;
  std::shared_ptr<const RouteTable> shared_routes_;
  std::shared_ptr<const ProxyTrust> shared_trust_;
  bool stopped_ = false;  // the thread has left its loop: commands are refused

  // --- immutable after start ---
  ProxyConfig cfg_;
  std::shared_ptr<spdlog::logger> log_;
  NoiseKeyPair kp_;
  Endpoint mesh_ep_;
  int ep_ = -1;
  int wake_fd_ = -1;
  int mesh_fd_ = -1;
  std::thread thread_;

  // --- proxy thread only ---
  TimePoint now_{};
  std::shared_ptr<const RouteTable> routes_;
  // The trust snapshot of this turn (shared_trust_), this node's certificate decoded from it,
  // and the token buckets of its policy (new ones when the policy changes).
  std::shared_ptr<const ProxyTrust> trust_;
  std::optional<NodeCert> own_cert_;
  std::shared_ptr<const Policy> limiter_policy_;
  RateLimiter limiter_{kRateLimiterPairs};
  TimePoint next_cert_check_{};  // live sessions' certificates expire: checked every kCertCheck
  TimePoint log_window_{};       // decision log lines: at most kMaxPolicyLogsPerSecond per window
  unsigned log_lines_ = 0;
  std::uint64_t log_suppressed_ = 0;  // in this window
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  std::map<std::string, std::uint64_t> pool_;  // node -> initiated session
  std::map<std::uint64_t, std::unique_ptr<Conn>> conns_;
  std::size_t handshaking_ = 0;  // accepted sessions in kHandshake (kMaxHandshaking)
  std::map<std::string, Upstream> upstreams_;
  std::map<std::uint64_t, std::string> upstream_ids_;
  std::map<std::string, std::map<std::string, InstanceState>> balance_;  // service -> node ->
  std::set<Timer> timers_;  // by deadline
  // Streams' idle send queues are freed by a sweep every kBufferSweep while any may hold one.
  bool sweep_wanted_ = false;
  TimePoint next_sweep_{};
  void want_sweep() {
    if (!sweep_wanted_) {
      sweep_wanted_ = true;
      next_sweep_ = now_ + kBufferSweep;
    }
  }
  void sweep_buffers();
  std::vector<std::uint64_t> dirty_sessions_;  // to flush at the end of the turn (few: no set)
  void mark_dirty(std::uint64_t id) {
    if (std::find(dirty_sessions_.begin(), dirty_sessions_.end(), id) == dirty_sessions_.end()) dirty_sessions_.push_back(id);
  }
  std::vector<std::byte> scratch_;  // one read buffer for every socket (kIoChunk)
  ByteBuffer rx_plain_;  // opened plaintext (mux events point into it while handled)
  // The mux output of a flush, gathered (its DATA stays in the streams' queues) and sealed from there.
  std::vector<std::byte> tx_small_;
  std::vector<std::span<const std::byte>> tx_pieces_;
  std::vector<MuxEvent> spare_events_;                 // recycled by session_mux_events
  std::vector<std::span<const std::byte>> parts_;      // one conn's consecutive StreamData
  std::mt19937_64 rng_;
  ProxyStats stats_;
  bool stop_ = false;

  // proxy.cpp: loop, commands, listeners, timers
  void run();   // the thread: loop() and, however it ends, shutdown
  void loop();
  void wake();
  void handle_commands();
  Result<void> do_add_upstream(const UpstreamConfig& u);
  void do_remove_upstream(const std::string& name);
  ProxyStats snapshot();
  void on_accept_app(Upstream& u);
  void on_accept_mesh();
  void run_timers();
  // Replaces the object's timer (slot = its timer_at) by one at `at`; disarm removes it.
  void arm_timer(Kind k, std::uint64_t id, TimePoint& slot, TimePoint at);
  void disarm_timer(Kind k, std::uint64_t id, TimePoint& slot);
  void set_interest(int fd, std::uint32_t& current, std::uint32_t want, std::uint64_t tok);
  void forget_fd(int fd);
  std::uint64_t new_id() { return next_id_++; }
  void shutdown_all();

  // proxy_trust.cpp: certificates, grants, policy decisions, re-checks
  void refresh_trust();  // takes shared_trust_; a changed snapshot re-checks what is live
  [[nodiscard]] static UnixTime wall_now();
  // The peer's certificate in a handshake (trust_ set): the kill reason, or empty if accepted
  // (then s.peer_cert is set). `node`: the name it must carry.
  std::string check_peer_cert(Session& s, std::span<const std::byte> envelope, const std::string& node,
                              std::string& detail);
  // Is this peer still acceptable under trust_ (revoked, expired, operators)? Empty: yes.
  std::string recheck_session(const Session& s, UnixTime now);
  void renew_sessions();  // our certificate changed: initiated sessions leave the pool
  void recheck_sessions();
  void recheck_conns();
  void check_cert_expiry();
  enum class Side : std::uint8_t { kInitiator, kResponder };
  // Decides a new stream from -> to (trust_ set); false: refuse it. Counts and logs.
  // `rule`: set to the policy rule that allowed it (nullptr: none), valid until trust_ changes.
  bool admit(Side side, const std::string& from, const std::string& to, const std::string& node,
             const NodeCert* peer_cert, const PolicyRule** rule = nullptr);
  // The limits of a new conn: ProxyConfig's, overridden by the rule's (connect_timeout,
  // idle_timeout, retries: max_attempts = retries + 1).
  void apply_limits(Conn& c, const PolicyRule* rule) const;
  void count_policy(const std::string& from, const std::string& to, std::uint64_t PolicyCounters::*field);
  void log_policy(std::string_view event, Side side, const std::string& from, const std::string& to,
                  const std::string& node, std::string_view rule);

  // proxy_handshake.cpp
  void session_connected(Session& s);
  bool session_handshake_input(Session& s);  // false: the session was killed
  void session_up(Session& s);

  // proxy_session.cpp
  Session* session(std::uint64_t id);
  Session* session_for(const RouteInstance& inst, std::string& err);
  void detach_stream(Session& s, StreamId id);
  void on_session_event(Session& s, std::uint32_t events);
  void session_read(Session& s);
  void session_mux_events(Session& s);
  void flush_session(Session& s);
  // Seals up to `budget` bytes of the mux's output into s.wbuf, straight from the streams' send
  // queues (no copy of the payload before the cipher); false if sealing failed.
  bool seal_mux_output(Session& s, std::size_t budget);
  void update_session_interest(Session& s);
  void kill_session(Session& s, std::string_view why, std::string_view detail = {});
  void close_session_orderly(Session& s);
  void session_timer(Session& s);
  void arm_session_timer(Session& s, TimePoint at);
  void destroy_session(Session& s);

  // proxy_conn.cpp
  Conn* conn(std::uint64_t id);
  void on_conn_event(Conn& c, std::uint32_t events);
  void conn_read(Conn& c);
  // Writes c.out, then `extra` (not yet queued), as far as the socket takes them; the rest of
  // `extra` is copied to c.out. May destroy c.
  void conn_write(Conn& c, std::span<const std::span<const std::byte>> extra = {});
  // Stream bytes for the conn's socket: written at once as far as it takes them (one sendmsg
  // for all parts), the rest copied to c.out. May destroy c.
  void conn_deliver(Conn& c, std::span<const std::span<const std::byte>> parts);
  void conn_peer_fin(Conn& c);
  void conn_stream_reset(Conn& c, ResetReason reason);
  void conn_session_failed(Conn& c);
  void fail_conn(Conn& c);
  void conn_start_stream(Conn& c, Session& s);
  void conn_open_remote(Session& s, StreamId id, std::span<const std::byte> payload);
  void update_conn_interest(Conn& c);
  void maybe_finish(Conn& c);
  void abort_conn(Conn& c, ResetReason reason);
  void destroy_conn(Conn& c, bool reset);  // reset: RST to the socket and RESET on the stream
  void conn_timer(Conn& c);
  TrafficCounters& counters(const Conn& c);

  // proxy_balance.cpp
  // Picks an instance for `c` (not one it tried) and attaches it to that node's session (waiting
  // if it is not up yet); with no instance left, or after max_attempts, fails `c` (RST).
  void dispatch(Conn& c);  // may destroy c
  std::optional<RouteInstance> pick(const std::string& service, const UpstreamConfig& u, const std::set<std::string>& exclude);
  void record_latency(const std::string& service, const std::string& node, Duration d);
  void record_success(const std::string& service, const std::string& node);
  void record_failure(const std::string& service, const std::string& node);
  void instance_active(const std::string& service, const std::string& node, bool up);
  void fill_routes(ProxyStats& s);
};

}  // namespace weft::transport
