// Agent start-up, the event loop, datagrams and streams, persistence and shutdown.

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <random>
#include <spdlog/spdlog.h>

#include "agent_impl.h"
#include "logging.h"
#include "node_identity.h"
#include "paths.h"

namespace weft::agent {

namespace {

constexpr auto kTrimEvery = std::chrono::seconds(30);
constexpr auto kFirstTrim = std::chrono::seconds(2);  // after start: the first joins are done
// Member changes are written this long after the first one: batched, yet on disk before a
// kill -9 shortly after a join could lose them.
constexpr auto kPersistDelay = std::chrono::milliseconds(200);
constexpr auto kLeaveTimeout = std::chrono::seconds(3);
constexpr std::size_t kMaxDatagram = 65536;
constexpr std::size_t kMaxRejoinSeeds = 16;

// Code and read-only data that only the start needed (argument and config parsing, schema
// checks, the first joins) stay mapped, and the kernel maps whole 64 KiB neighbourhoods around
// every page touched. Once the agent has settled, unmap this process's pristine file-backed pages:
// read-only or executable private mappings of a file that hold no private (copied-on-write)
// page, so dropping a page loses nothing and the next touch maps the same file bytes again. Pages
// other processes map stay in the page cache (co-located agents share the code); this process
// only stops counting them until it needs them. Mappings with private copies (relocated data,
// RELRO) are never touched. Best effort: errors are only logged.
void unmap_pristine_file_pages(spdlog::logger& log) {
  std::FILE* smaps = std::fopen("/proc/self/smaps", "re");
  if (smaps == nullptr) return;
  char line[4096];
  std::size_t ranges = 0;
  unsigned long lo = 0, hi = 0;
  bool candidate = false;  // the current mapping: private, file-backed, not writable
  auto finish = [&](unsigned long anonymous_kb) {
    if (candidate && anonymous_kb == 0 && ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) == 0) {
      ++ranges;
    }
    candidate = false;
  };
  while (std::fgets(line, sizeof line, smaps) != nullptr) {
    unsigned long a = 0, b = 0, offset = 0, inode = 0, kb = 0;
    char perms[8] = {};
    char dev[16] = {};
    if (std::sscanf(line, "%lx-%lx %7s %lx %15s %lu", &a, &b, perms, &offset, dev, &inode) == 6) {
      lo = a;
      hi = b;
      candidate = inode != 0 && perms[1] != 'w' && perms[3] == 'p';
    } else if (std::sscanf(line, "Anonymous: %lu kB", &kb) == 1) {
      finish(kb);  // the field comes once per mapping, after the header
    }
  }
  std::fclose(smaps);
  log.debug("unmapped_pristine_file_pages ranges={}", ranges);
}

Result<std::vector<transport::Key>> read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail("--key-file " + path + ": " + std::strerror(errno));
  std::vector<transport::Key> keys;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const auto e = line.find_last_not_of(" \t\r");
    auto k = transport::parse_key(line.substr(b, e - b + 1));
    if (!k) return fail("--key-file " + path + ":" + std::to_string(n) + ": " + k.error().message);
    keys.push_back(*k);
  }
  if (keys.empty()) return fail("--key-file " + path + ": no key in the file (weft keygen prints one)");
  return keys;
}


}  // namespace

Agent::Agent(AgentConfig cfg, AgentFlags flags) : cfg_(std::move(cfg)), flags_(std::move(flags)) {
  log_ = make_logger("agent", cfg_.log_level, cfg_.log_json);
  gossip_log_ = make_logger("gossip", cfg_.log_level, cfg_.log_json);
  proxy_log_ = make_logger("proxy", cfg_.log_level, cfg_.log_json);
  buf_.resize(kMaxDatagram);
}

Agent::~Agent() {
  proxy_.reset();  // stop the data plane's thread first
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (rpc_bound_) ::unlink(cfg_.rpc.c_str());
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::optional<int> Agent::start() {
  ::umask(077);  // every file and directory the agent makes is owner-only
  // One line, as the rest of the CLI prints errors; a JSON log gets it as a JSON line instead.
  auto fail_start = [&](const std::string& msg, int code) -> std::optional<int> {
    if (cfg_.log_json) {
      log_->error("start failed: {}", msg);
    } else {
      std::fprintf(stderr, "weft: %s\n", msg.c_str());
    }
    return code;
  };
  if (auto r = prepare_data_dir(cfg_.data_dir); !r) return fail_start(r.error().message, 1);
  auto lock = lock_data_dir(cfg_.data_dir);
  if (!lock) return fail_start(lock.error().message, 1);
  lock_fd_ = *lock;

  db_path_ = cfg_.data_dir + "/weft.db";
  auto st = store::Store::open(db_path_);
  if (!st) return fail_start(st.error().message, 1);
  store_ = std::move(*st);

  // Keyring: the data dir's ring wins; --key-file seeds a new one.
  auto stored_keys = store_.keys();
  if (!stored_keys) return fail_start(stored_keys.error().message, 1);
  for (const auto& k : *stored_keys) {
    transport::Key key{};
    if (!from_bytes(k, key)) return fail_start(db_path_ + ": a stored cluster key is damaged", 1);
    ring_.install(key);
  }
  if (!cfg_.key_file.empty()) {
    auto keys = read_key_file(cfg_.key_file);
    if (!keys) return fail_start(keys.error().message, 2);
    if (ring_.plaintext()) {
      for (const auto& k : *keys) ring_.install(k);
      persist_keys();
    } else if (!ring_.find(transport::key_id(keys->front()))) {
      log_->warn("key_file ignored: the keyring in the data dir is used (rotate with weft keys) file={}",
                 cfg_.key_file);
    }
  }
  if (ring_.plaintext()) {
    if (!cfg_.insecure_plaintext) {
      return fail_start("no cluster key: give --key-file FILE (weft keygen prints a key) or --insecure-plaintext", 2);
    }
    log_->warn("INSECURE: gossip runs in plaintext (--insecure-plaintext): anyone on the network can read and "
               "forge membership");
    if (!cfg_.log_json) {
      std::fprintf(stderr, "weft: WARNING: --insecure-plaintext: gossip is neither encrypted nor authenticated\n");
    }
  }

  // Identity: created at first start (node_identity.cpp, shared with `weft identity init`).
  auto id = load_or_create_identity(store_, db_path_);
  if (!id) return fail_start(id.error().message, 1);
  identity_ = id->id;
  if (id->created) log_->info("identity created fingerprint={}", transport::fingerprint(identity_));
  // The public keys for `weft cert sign`, also while this agent holds the data dir's lock.
  if (auto r = write_node_pub(cfg_.data_dir, identity_); !r) return fail_start(r.error().message, 1);
  if (!cfg_.operator_pubs.empty()) {
    auto t = load_trust();
    if (!t) return fail_start(t.error().message, 2);
    trust_ = std::move(*t);
    log_->info("certificate loaded serial={} issuer={} not_after={} services={}", trust_->cert.serial,
               transport::to_hex(trust_->cert.issuer), transport::format_rfc3339(trust_->cert.not_after),
               trust_->cert.services.size());
  }
  if (auto r = load_policy(); !r) return fail_start(r.error().message, 1);
  if (auto old = store_.node_name(); old && *old && **old != cfg_.node) {
    log_->warn("node renamed old={} new={}", **old, cfg_.node);
  }
  if (auto r = store_.set_node_name(cfg_.node); !r) return fail_start(r.error().message, 1);

  // Incarnation: continue above the last one, durably, before saying anything.
  auto inc = store_.incarnation();
  if (!inc) return fail_start(inc.error().message, 1);
  const std::uint64_t incarnation = *inc + 1;
  if (auto r = store_.set_incarnation(incarnation); !r) return fail_start(r.error().message, 1);
  persisted_incarnation_ = incarnation;

  // Sockets.
  auto udp = transport::UdpSocket::bind(cfg_.bind);
  if (!udp) return fail_start(udp.error().message, 1);
  udp_ = std::move(*udp);
  auto rel = transport::ReliableChannel::bind(ctx_, cfg_.bind);
  if (!rel) return fail_start(rel.error().message, 1);
  reliable_ = std::move(*rel);
  if (auto r = prepare_rpc_path(cfg_.rpc); !r) return fail_start(r.error().message, 1);
  try {
    rpc_ = zmq::socket_t(ctx_, zmq::socket_type::router);
    rpc_.set(zmq::sockopt::linger, 0);
    rpc_.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(16 * kMaxRequestBytes));
    rpc_.bind("ipc://" + cfg_.rpc);
    rpc_bound_ = true;
  } catch (const zmq::error_t& e) {
    return fail_start("cannot listen for the CLI at " + cfg_.rpc + ": " + e.what(), 1);
  }
  if (::chmod(cfg_.rpc.c_str(), 0600) != 0) return fail_start("chmod " + cfg_.rpc + ": " + std::strerror(errno), 1);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  signal_fd_ = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) return fail_start(std::string("signalfd: ") + std::strerror(errno), 1);

  // The gossip core.
  gossip::Config gc = cfg_.gossip;
  gc.max_packet_bytes -= transport::kSealOverhead;  // room for the seal in every datagram
  if (auto r = load_services(); !r) return fail_start(r.error().message, 1);
  gossip::Self self{cfg_.node, cfg_.advertised(), incarnation, own_meta()};
  if (self.meta.size() > gc.max_meta_bytes) {
    return fail_start("tags take " + std::to_string(self.meta.size()) + " bytes encoded; the limit is " +
                          std::to_string(gc.max_meta_bytes),
                      2);
  }
  if (trust_) {
    // With a trust root, gossip claims are signed (gossip/claims.h): only certified nodes are
    // members, and only a node's own key speaks for it.
    claims_ = std::make_shared<CertClaimAuthority>(
        trust_->operators, cfg_.cluster, trust_->cert_envelope, identity_,
        [] { return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()); });
    claims_->set_revoked(revoked_set());
    gc.claims = claims_;
  }
  std::random_device rd;
  const std::uint64_t seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  node_.emplace(gc, std::move(self), seed, gossip_log_);
  if (auto err = start_proxy()) return fail_start(*err, 1);

  // Seeds: --join, then members we knew before a restart.
  rejoin_seeds_ = cfg_.join;
  if (auto known = store_.members()) {
    std::vector<Endpoint> past;
    for (const store::StoredMember& m : *known) {
      if (m.name == cfg_.node || m.state == static_cast<std::uint8_t>(gossip::MemberState::kLeft)) continue;
      auto e = Endpoint::parse(m.addr);
      if (e && e->port != 0 && std::find(past.begin(), past.end(), *e) == past.end()) past.push_back(*e);
    }
    std::shuffle(past.begin(), past.end(), std::mt19937_64(seed));
    if (past.size() > kMaxRejoinSeeds) past.resize(kMaxRejoinSeeds);
    for (const Endpoint& e : past) {
      if (std::find(rejoin_seeds_.begin(), rejoin_seeds_.end(), e) == rejoin_seeds_.end()) rejoin_seeds_.push_back(e);
    }
    if (!past.empty()) log_->info("rejoining known members={}", past.size());
  } else {
    log_->warn("stored members unreadable, starting without them: {}", known.error().message);
  }
  const TimePoint now = Clock::now();
  share_wall_clock();
  node_->join(now, rejoin_seeds_);
  next_persist_ = TimePoint::max();
  next_trim_ = now + kFirstTrim;
  next_rejoin_ = now + cfg_.rejoin_interval;
  next_idle_close_ = now + std::chrono::seconds(1);
  log_->info("started node={} bind={} advertise={} incarnation={} seeds={} keys={} rpc={}", cfg_.node,
             cfg_.bind.to_string(), cfg_.advertised().to_string(), incarnation, rejoin_seeds_.size(),
             ring_.ids().size(), cfg_.rpc);
  // Parsing, the store's checks and the set-up are done: their code need not stay mapped.
  unmap_pristine_file_pages(*log_);
  return std::nullopt;
}

void Agent::send_frame(TimePoint now, const Endpoint& to, FrameKind kind, std::span<const std::byte> body) {
  encode_frame(kind, cfg_.advertised(), body, plain_);
  sealed_.clear();
  ring_.seal(transport::Purpose::kStream, plain_, sealed_);
  reliable_.send(now, to, sealed_);
}

void Agent::flush_outgoing(TimePoint now) {
  out_.clear();
  node_->drain_outgoing(out_);
  for (const gossip::Datagram& d : out_) {
    if (d.channel == gossip::Channel::kReliable) {
      send_frame(now, d.to, FrameKind::kGossipStream, d.bytes);
    } else {
      sealed_.clear();
      ring_.seal(transport::Purpose::kDatagram, d.bytes, sealed_);
      udp_.send_to(d.to, sealed_);
    }
  }
}

void Agent::on_datagram(TimePoint now, const Endpoint& from, std::span<const std::byte> bytes) {
  auto r = ring_.open(transport::Purpose::kDatagram, bytes, plain_);
  if (!r) {
    ++stats_.rejected_datagrams[static_cast<std::size_t>(r.error())];
    log_->debug("datagram rejected from={} why={}", from.to_string(), transport::to_string(r.error()));
    return;
  }
  node_->handle_packet(now, from, plain_);
}

void Agent::on_stream(TimePoint now, std::span<const std::byte> bytes) {
  std::vector<std::byte> plain;
  auto r = ring_.open(transport::Purpose::kStream, bytes, plain);
  if (!r) {
    ++stats_.rejected_streams[static_cast<std::size_t>(r.error())];
    log_->debug("stream rejected why={}", transport::to_string(r.error()));
    return;
  }
  auto f = decode_frame(plain);
  if (!f) {
    ++stats_.bad_frames;
    log_->debug("stream dropped why={}", f.error().message);
    return;
  }
  switch (f->kind) {
    case FrameKind::kGossipStream: node_->handle_stream(now, f->from, f->body); break;
    case FrameKind::kKeyRequest: on_key_request(now, f->from, f->body); break;
    case FrameKind::kKeyResponse: on_key_response(f->body); break;
    case FrameKind::kCatalogRequest: on_catalog_request(now, f->from, f->body); break;
    case FrameKind::kCatalogResponse: on_catalog_response(f->from, f->body); break;
    case FrameKind::kSignedDocRequest: on_doc_request(now, f->from, f->body); break;
    case FrameKind::kSignedDocResponse: on_doc_response(now, f->from, f->body); break;
  }
}

void Agent::on_events(TimePoint now) {
  events_.clear();
  node_->drain_events(events_);
  for (const gossip::MemberEvent& e : events_) {
    log_->info("member {} name={} addr={} incarnation={}", gossip::to_string(e.type), e.name, e.addr.to_string(),
               e.incarnation);
    if (e.name != cfg_.node) {
      dirty_members_.insert(e.name);
      on_member_catalog(now, e.name);
      on_member_policy(e.name);
    }
  }
  // A refutation raises our incarnation without an event: it is written like a member change.
  if (!dirty_members_.empty() || node_->incarnation() != persisted_incarnation_) {
    // The first members we learn (the join) are written at once: they are how a restart rejoins.
    next_persist_ = std::min(next_persist_, persisted_members_once_ ? Clock::now() + kPersistDelay : Clock::now());
  }
}

void Agent::persist_members() {
  if (node_->incarnation() != persisted_incarnation_) {
    if (auto r = store_.set_incarnation(node_->incarnation()); r) {
      persisted_incarnation_ = node_->incarnation();
    } else {
      ++stats_.persist_errors;
      log_->error("persist incarnation failed: {}", r.error().message);
    }
  }
  if (dirty_members_.empty()) return;
  std::vector<store::StoredMember> changed;
  std::vector<std::string> removed;
  const auto wall = static_cast<std::int64_t>(std::time(nullptr));
  for (const std::string& name : dirty_members_) {
    auto m = node_->member(name);
    if (!m) {
      removed.push_back(name);
      continue;
    }
    changed.push_back(store::StoredMember{m->name, m->addr.to_string(), static_cast<std::uint8_t>(m->state),
                                          m->incarnation, m->meta, wall});
  }
  if (auto r = store_.save_members(changed, removed); r) {
    dirty_members_.clear();
    persisted_members_once_ = true;
  } else {
    ++stats_.persist_errors;
    log_->error("persist members failed: {}", r.error().message);
  }
}

void Agent::persist_keys() {
  std::vector<std::vector<std::byte>> keys;
  for (const transport::Key& k : ring_.keys()) keys.push_back(to_bytes(k));
  if (auto r = store_.set_keys(keys); !r) {
    ++stats_.persist_errors;
    log_->error("persist keyring failed: {}", r.error().message);
  }
}

void Agent::begin_leave(TimePoint now) {
  if (leaving_) return;
  leaving_ = true;
  leave_deadline_ = now + kLeaveTimeout;
  log_->info("leaving");
  node_->leave(now);
}

// Seeds and pre-restart members that are not live members now get a join again, so that two
// halves of a healed partition (or a cluster restarted around us) merge.
void Agent::rejoin_round(TimePoint now) {
  next_rejoin_ = now + cfg_.rejoin_interval;
  if (leaving_ || rejoin_seeds_.empty()) return;
  std::set<Endpoint> live;
  for (const gossip::MemberInfo& m : node_->members()) {
    if (m.state == gossip::MemberState::kAlive || m.state == gossip::MemberState::kSuspect) live.insert(m.addr);
  }
  std::vector<Endpoint> retry;
  for (const Endpoint& e : rejoin_seeds_) {
    if (!live.contains(e)) retry.push_back(e);
  }
  if (retry.empty()) return;
  log_->debug("rejoin seeds={}", retry.size());
  node_->join(now, retry);
}

void Agent::on_signal(TimePoint now) {
  signalfd_siginfo si{};
  while (::read(signal_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (si.ssi_signo == SIGHUP) {
      reload();
    } else if (leaving_) {
      log_->warn("second signal: exiting without waiting for the leave");
      stop_ = true;
    } else {
      begin_leave(now);
    }
  }
}

void Agent::reload() {
  if (cfg_.config_file.empty() && flags_.tags.empty()) {
    log_->info("reload: nothing to reload (no --config)");
    return;
  }
  auto c = reload_config(flags_);
  if (!c) {
    log_->error("reload failed, keeping the running settings: {}", c.error().message);
    return;
  }
  set_level(*log_, c->log_level);
  set_level(*gossip_log_, c->log_level);
  set_level(*proxy_log_, c->log_level);
  cfg_.log_level = c->log_level;
  if (c->tags != cfg_.tags) {
    const auto old_tags = cfg_.tags;
    cfg_.tags = c->tags;
    if (auto r = node_->set_meta(Clock::now(), own_meta()); !r) {
      cfg_.tags = old_tags;
      log_->error("reload: tags not applied: {}", r.error().message);
    }
  }
  log_->info("reloaded log_level={} tags={}", cfg_.log_level, cfg_.tags.size());
}

void Agent::share_wall_clock() {
  // Members count probe periods on the wall clock (NTP keeps hosts within milliseconds), so that
  // they share one probe rotation: see gossip::Node::set_shared_clock.
  const auto wall = std::chrono::duration_cast<Duration>(std::chrono::system_clock::now().time_since_epoch());
  node_->set_shared_clock(wall - Clock::now().time_since_epoch());
}

TimePoint Agent::next_wakeup(TimePoint node_deadline) const {
  TimePoint t = std::min({node_deadline, next_persist_, next_rejoin_, next_idle_close_, next_trim_, remote_.next_fetch(), publish_at_,
                          next_doc_fetch()});
  if (leaving_) t = std::min(t, leave_deadline_);
  for (const Waiter& w : join_waiters_) t = std::min(t, w.deadline);
  if (key_op_) t = std::min(t, key_op_->waiter.deadline);
  return t;
}

namespace {

// ZeroMQ's descriptor (ZMQ_FD) only signals that the socket's state may have changed: a message
// already queued (left over, or made readable while we sent on the socket) does not wake poll
// again. So the loop asks the socket itself before it sleeps and after it wakes.
bool readable(zmq::socket_t& s) {
  try {
    return (s.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t&) {
    return false;
  }
}

}  // namespace

int Agent::run() {
  // Plain poll(2) on every descriptor, ZeroMQ's included: zmq_poll costs a zero-timeout pass and
  // a mailbox check per socket on every wake-up, and an idle agent wakes a few times a second.
  // The four descriptors the agent always watches, then those of health checks in flight.
  const pollfd base[] = {
      {udp_.fd(), POLLIN, 0},
      {signal_fd_, POLLIN, 0},
      {reliable_.socket().get(zmq::sockopt::fd), POLLIN, 0},
      {rpc_.get(zmq::sockopt::fd), POLLIN, 0},
  };
  constexpr std::size_t kBase = std::size(base);
  std::vector<pollfd> fds(std::begin(base), std::end(base));
  TimePoint now = Clock::now();
  bool reliable_touched = true;  // as rpc_touched_, for the ROUTER (only this loop receives on it)
  while (!stop_) {
    publish_catalog(now);
    publish_routes();
    const TimePoint deadline = node_->tick(now);
    flush_outgoing(now);
    on_events(now);
    send_catalog_fetches(now);
    send_doc_fetches(now);
    if (leaving_ && (node_->leave_done() || now >= leave_deadline_)) break;

    const TimePoint wake = std::min(next_wakeup(deadline), health_.tick(now));
    apply_health_changes();  // a check that timed out in tick()
    fds.resize(kBase);
    for (pollfd& p : fds) p.revents = 0;
    health_.append_pollfds(fds);
    now = Clock::now();
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - now);
    wait = std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(1000));
    // ZMQ_EVENTS is read only when the descriptor may have been consumed without a look: it was
    // readable, or the loop received or sent on the socket since the last read. Otherwise anything
    // new makes the descriptor readable, and poll sees it. Each read costs two syscalls (a fork
    // check and a poll of the socket's mailbox), and an idle agent's wake-ups touch neither socket.
    const bool reliable_ready = reliable_touched && readable(reliable_.socket());
    const bool rpc_ready = rpc_touched_ && readable(rpc_);
    reliable_touched = false;
    rpc_touched_ = false;
    if (reliable_ready || rpc_ready) wait = std::chrono::milliseconds(0);
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait.count())) < 0 && errno != EINTR) {
      log_->error("poll failed: {}", std::strerror(errno));
      exit_code_ = 1;
      break;
    }
    now = Clock::now();
    ++stats_.loop_wakeups;

    if (fds[0].revents & POLLIN) {
      for (int i = 0; i < 256; ++i) {
        std::size_t n = 0;
        auto from = udp_.recv_into(buf_, n);  // buf_ keeps its kMaxDatagram bytes
        if (!from) break;
        on_datagram(now, *from, std::span<const std::byte>(buf_).first(n));
      }
    }
    if (fds[0].revents & POLLERR) {  // ICMP reports (IP_RECVERR): drained, or poll would spin
      while (auto u = udp_.recv_error()) {
        if (u->port) node_->handle_unreachable(now, u->to);
      }
    }
    if (reliable_ready || (fds[2].revents & POLLIN)) {
      reliable_touched = true;
      for (int i = 0; i < 64; ++i) {
        auto msg = reliable_.recv();
        if (!msg) break;
        on_stream(now, *msg);
      }
    }
    if (rpc_ready || (fds[3].revents & POLLIN)) on_rpc();  // sets rpc_touched_
    if (fds[1].revents & POLLIN) on_signal(now);
    if (fds.size() > kBase) {
      health_.on_poll(now, std::span<const pollfd>(fds).subspan(kBase));
      apply_health_changes();
    }

    if (now >= next_persist_) {
      next_persist_ = TimePoint::max();
      persist_members();
      // A failed write is retried a second later (the dirty set is kept).
      if (!dirty_members_.empty()) next_persist_ = now + std::chrono::seconds(1);
    }
    if (now >= next_trim_) {
      // The join burst and state syncs leave freed heap behind: give it back to the system. And
      // the code and data that only the start (or a burst since) needed stop counting: what
      // the loop needs faults back in, a few hundred minor faults per period at most.
      ::malloc_trim(0);
      unmap_pristine_file_pages(*log_);
      next_trim_ = now + kTrimEvery;
      share_wall_clock();  // follows a stepped wall clock
      // Certificates expire: members whose certificate did are expelled (a cached check per
      // member, no signature verified).
      if (claims_) node_->recheck_credentials(now);
    }
    if (now >= next_rejoin_) rejoin_round(now);
    if (now >= next_idle_close_) next_idle_close_ = reliable_.close_idle(now);
    check_waiters(now);
  }
  flush_outgoing(now);  // the last leave datagrams go out before the socket closes
  on_events(now);
  persist_members();
  for (const Waiter& w : leave_waiters_) reply(w.peer, json{{"left", true}});
  leave_waiters_.clear();
  log_->info("stopped exit_code={}", exit_code_);
  return exit_code_;
}

int run_agent(const AgentConfig& cfg, const AgentFlags& flags) {
  // Block the signals before ZeroMQ starts its threads, so that only the signalfd sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // ZeroMQ's threads would each get a malloc arena of their own; one arena keeps an idle agent's
  // private memory small (its threads allocate little).
  ::mallopt(M_ARENA_MAX, 1);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    Agent a(cfg, flags);
    if (auto code = a.start()) return *code;
    return a.run();
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "weft: agent: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "weft: agent: out of memory\n");
    return 1;
  }
}

}  // namespace weft::agent
