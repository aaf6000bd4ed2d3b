// The proxy's public class, its thread and event loop, the command queue from the agent thread,
// listeners and timers. Sessions: proxy_session.cpp; app/service sockets: proxy_conn.cpp;
// instance choice: proxy_balance.cpp; payloads and socket helpers: proxy_wire.cpp.
//
// Threads: the agent calls the public methods; they queue a Command under mu_ and write the
// eventfd. Route tables are swapped under mu_ and read once per loop turn. Every other member is
// touched by the proxy thread only. The loop reads steady_clock once per turn (now_).

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "proxy_impl.h"

namespace weft::transport {
namespace {

std::uint64_t random_seed() {
  std::uint64_t s = 0;
  randombytes_buf(&s, sizeof s);
  return s;
}

}  // namespace

Proxy::Impl::Impl(ProxyConfig c, std::shared_ptr<spdlog::logger> l)
    : cfg_(std::move(c)), log_(std::move(l)), rng_(random_seed()) {
  kp_.public_key = cfg_.kx_pk;
  kp_.secret_key = cfg_.kx_sk;
  if (!log_) log_ = std::make_shared<spdlog::logger>("proxy");  // no sinks: silent
  scratch_.resize(kIoChunk);
}

Proxy::Impl::~Impl() {
  kp_.wipe();
  sodium_memzero(cfg_.kx_sk.data(), cfg_.kx_sk.size());
  if (mesh_fd_ >= 0) ::close(mesh_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (ep_ >= 0) ::close(ep_);
}

Result<std::unique_ptr<Proxy>> Proxy::start(ProxyConfig cfg, std::shared_ptr<spdlog::logger> log) {
  if (sodium_init() < 0) return fail("proxy: libsodium failed to initialise");
  if (cfg.node.empty() || cfg.node.size() > 255) return fail("proxy: node name must be 1..255 bytes");
  auto impl = std::make_unique<Impl>(std::move(cfg), std::move(log));
  impl->ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  impl->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->ep_ < 0 || impl->wake_fd_ < 0) return fail("proxy: epoll/eventfd failed");
  std::string err;
  impl->mesh_fd_ = listen_tcp(impl->cfg_.mesh_bind, impl->mesh_ep_, err);
  if (impl->mesh_fd_ < 0) return fail("proxy: mesh listener: " + err);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = token(Kind::kWake, 0);
  ::epoll_ctl(impl->ep_, EPOLL_CTL_ADD, impl->wake_fd_, &ev);
  ev.data.u64 = token(Kind::kMeshListener, 0);
  ::epoll_ctl(impl->ep_, EPOLL_CTL_ADD, impl->mesh_fd_, &ev);
  Impl* raw = impl.get();
  try {
    impl->thread_ = std::thread([raw] { raw->run(); });
  } catch (const std::system_error& e) {
    return fail(std::string("proxy: thread: ") + e.what());
  }
  return std::unique_ptr<Proxy>(new Proxy(std::move(impl)));
}

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Proxy::~Proxy() {
  auto cmd = std::make_unique<Command>();
  cmd->type = Command::Type::kStop;
  {
    std::lock_guard lock(impl_->mu_);
    impl_->commands_.push_back(std::move(cmd));
  }
  impl_->wake();
  if (impl_->thread_.joinable()) impl_->thread_.join();
}

Endpoint Proxy::mesh_endpoint() const { return impl_->mesh_ep_; }

void Proxy::set_routes(std::shared_ptr<const RouteTable> routes) {
  {
    std::lock_guard lock(impl_->mu_);
    impl_->shared_routes_ = std::move(routes);
  }
  impl_->wake();
}

void Proxy::set_trust(std::shared_ptr<const ProxyTrust> trust) {
  {
    std::lock_guard lock(impl_->mu_);
    impl_->shared_trust_ = std::move(trust);
  }
  impl_->wake();
}

namespace {

// Queues `cmd` and waits for the proxy thread's answer; refused once the thread has stopped.
template <typename T>
std::optional<T> submit(Proxy::Impl& impl, std::unique_ptr<Command> cmd, std::future<T> fut) {
  {
    std::lock_guard lock(impl.mu_);
    if (impl.stopped_) return std::nullopt;
    impl.commands_.push_back(std::move(cmd));
  }
  impl.wake();
  return fut.get();
}

}  // namespace

Result<void> Proxy::add_upstream(const UpstreamConfig& u) {
  auto cmd = std::make_unique<Command>();
  cmd->type = Command::Type::kAddUpstream;
  cmd->upstream = u;
  auto fut = cmd->done.get_future();
  auto r = submit(*impl_, std::move(cmd), std::move(fut));
  if (!r) return fail("proxy stopped");
  return std::move(*r);
}

Result<void> Proxy::remove_upstream(const std::string& name) {
  auto cmd = std::make_unique<Command>();
  cmd->type = Command::Type::kRemoveUpstream;
  cmd->name = name;
  auto fut = cmd->done.get_future();
  auto r = submit(*impl_, std::move(cmd), std::move(fut));
  if (!r) return fail("proxy stopped");
  return std::move(*r);
}

ProxyStats Proxy::stats() const {
  auto cmd = std::make_unique<Command>();
  cmd->type = Command::Type::kStats;
  auto fut = cmd->stats.get_future();
  auto r = submit(*impl_, std::move(cmd), std::move(fut));
  return r ? std::move(*r) : ProxyStats{};
}

void Proxy::Impl::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
}

void Proxy::Impl::run() {
  // Nothing escapes the thread (std::terminate): an exception here can only be an allocation
  // failure; the proxy then stops, closes every socket and answers every caller.
  try {
    loop();
  } catch (const std::exception& e) {
    log_->critical("proxy_stopped error={}", e.what());
  } catch (...) {
    log_->critical("proxy_stopped error=unknown");
  }
  try {
    shutdown_all();
  } catch (...) {
    log_->critical("proxy_shutdown_failed");
  }
  std::deque<std::unique_ptr<Command>> left;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    left.swap(commands_);
  }
  for (auto& c : left) {  // nobody waits forever on a stopped proxy
    c->done.set_value(fail("proxy stopped"));
    c->stats.set_value(stats_);
  }
}

void Proxy::Impl::loop() {
  std::vector<epoll_event> evs(256);
  while (!stop_) {
    int timeout_ms = -1;
    if (!timers_.empty()) {
      const auto wait = timers_.begin()->at - Clock::now();
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
      timeout_ms = ms <= 0 ? 0 : static_cast<int>(std::min<long long>(ms, 60'000));
    }
    if (sweep_wanted_) {
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next_sweep_ - Clock::now()).count();
      const int sweep_ms = ms <= 0 ? 0 : static_cast<int>(std::min<long long>(ms, 60'000));
      timeout_ms = timeout_ms < 0 ? sweep_ms : std::min(timeout_ms, sweep_ms);
    }
    if (trust_ && !sessions_.empty()) {  // peers' certificates expire while their sessions are up
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next_cert_check_ - Clock::now()).count();
      const int check_ms = ms <= 0 ? 0 : static_cast<int>(std::min<long long>(ms, 60'000));
      timeout_ms = timeout_ms < 0 ? check_ms : std::min(timeout_ms, check_ms);
    }
    const int n = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), timeout_ms);
    now_ = Clock::now();
    {
      std::lock_guard lock(mu_);
      routes_ = shared_routes_;
    }
    refresh_trust();  // a new snapshot re-checks the live sessions and connections
    for (int i = 0; i < n; ++i) {
      const std::uint64_t tok = evs[static_cast<std::size_t>(i)].data.u64;
      const std::uint32_t events = evs[static_cast<std::size_t>(i)].events;
      const auto kind = static_cast<Kind>(tok >> 56);
      const std::uint64_t id = tok & ((std::uint64_t{1} << 56) - 1);
      switch (kind) {
        case Kind::kWake: {
          std::uint64_t v = 0;
          [[maybe_unused]] const auto r = ::read(wake_fd_, &v, sizeof v);
          handle_commands();
          break;
        }
        case Kind::kMeshListener: on_accept_mesh(); break;
        case Kind::kUpstream: {
          auto it = upstream_ids_.find(id);
          if (it != upstream_ids_.end()) on_accept_app(upstreams_.at(it->second));
          break;
        }
        case Kind::kSession:
          if (Session* s = session(id)) on_session_event(*s, events);
          break;
        case Kind::kConn:
          if (Conn* c = conn(id)) on_conn_event(*c, events);
          break;
      }
    }
    run_timers();
    if (sweep_wanted_ && now_ >= next_sweep_) sweep_buffers();
    if (trust_ && now_ >= next_cert_check_) {
      next_cert_check_ = now_ + kCertCheck;
      check_cert_expiry();
    }
    // Output queued while handling the events goes out in one large write per session.
    while (!dirty_sessions_.empty()) {
      const std::uint64_t id = dirty_sessions_.back();
      dirty_sessions_.pop_back();
      if (Session* s = session(id)) flush_session(*s);  // a session since destroyed: none
    }
  }
}

void Proxy::Impl::handle_commands() {
  std::deque<std::unique_ptr<Command>> cmds;
  {
    std::lock_guard lock(mu_);
    cmds.swap(commands_);
  }
  for (auto& c : cmds) {
    switch (c->type) {
      case Command::Type::kAddUpstream: c->done.set_value(do_add_upstream(c->upstream)); break;
      case Command::Type::kRemoveUpstream:
        do_remove_upstream(c->name);
        c->done.set_value({});
        break;
      case Command::Type::kStats: c->stats.set_value(snapshot()); break;
      case Command::Type::kStop:
        stop_ = true;
        c->done.set_value({});
        break;
    }
  }
}

Result<void> Proxy::Impl::do_add_upstream(const UpstreamConfig& u) {
  if (u.name.empty()) return fail("upstream: empty name");
  if (upstreams_.count(u.name) != 0) return fail("upstream " + u.name + ": already listening");
  std::string err;
  Endpoint bound;
  const int fd = listen_tcp(u.listen, bound, err);
  if (fd < 0) return fail("upstream " + u.name + ": " + err);
  Upstream up;
  up.cfg = u;
  up.cfg.listen = bound;  // port 0 resolved: stats and tests see the real port
  up.id = new_id();
  up.fd = fd;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = token(Kind::kUpstream, up.id);
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  upstream_ids_[up.id] = u.name;
  upstreams_[u.name] = std::move(up);
  stats_.upstreams[u.name];  // listed at once, even before the first connection
  log_->info("upstream_added name={} listen={}", u.name, bound.to_string());
  return {};
}

void Proxy::Impl::do_remove_upstream(const std::string& name) {
  auto it = upstreams_.find(name);
  if (it == upstreams_.end()) return;
  ::close(it->second.fd);  // also leaves the epoll set; live conns keep their own sockets
  upstream_ids_.erase(it->second.id);
  upstreams_.erase(it);
  log_->info("upstream_removed name={}", name);
}

void Proxy::Impl::on_accept_app(Upstream& u) {
  // accept4 below may take connections made after this turn's epoll_wait returned, so after a
  // set_routes that the turn's snapshot missed: "takes effect for new connections at once".
  // The same for set_trust.
  {
    std::lock_guard lock(mu_);
    routes_ = shared_routes_;
  }
  refresh_trust();
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    const int fd = ::accept4(u.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE...): try at the next event
    // The initiator refuses early what the policy (or our certificate) does not allow: RST at
    // once, no session dialled. Counted as a connection that failed.
    const PolicyRule* rule = nullptr;
    if (trust_ && !admit(Side::kInitiator, u.cfg.as, u.cfg.name, {}, nullptr, &rule)) {
      auto& tc = stats_.upstreams[u.cfg.name];
      ++tc.connections;
      ++tc.failures;
      close_with_reset(fd);
      continue;
    }
    set_nodelay(fd);
    auto c = std::make_unique<Conn>();
    c->id = new_id();
    c->fd = fd;
    c->client = true;
    c->name = u.cfg.name;
    c->from = u.cfg.as;
    c->last_activity = now_;
    apply_limits(*c, rule);
    Conn& ref = *c;
    conns_[c->id] = std::move(c);
    auto& tc = stats_.upstreams[u.cfg.name];
    ++tc.connections;
    ++tc.active;
    arm_timer(Kind::kConn, ref.id, ref.timer_at, now_ + ref.idle_timeout);
    dispatch(ref);  // may fail and close it
  }
}

void Proxy::Impl::on_accept_mesh() {
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    const int fd = ::accept4(mesh_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (handshaking_ >= kMaxHandshaking) {
      ++stats_.handshakes_failed;
      close_with_reset(fd);
      continue;
    }
    set_nodelay(fd);
    set_peer_timeout(fd, cfg_.peer_timeout);
    ++handshaking_;
    auto s = std::make_unique<Session>();
    s->id = new_id();
    s->fd = fd;
    s->initiator = false;
    s->state = Session::State::kHandshake;
    s->started = now_;
    s->hs.emplace(Handshake::responder(kp_, mesh_prologue()));
    Session& ref = *s;
    sessions_[s->id] = std::move(s);
    ++stats_.sessions_accepted;
    ++stats_.sessions_open;
    arm_session_timer(ref, now_ + cfg_.connect_timeout);
    update_session_interest(ref);
  }
}

void Proxy::Impl::sweep_buffers() {
  std::size_t holding = 0;
  for (auto& [id, s] : sessions_) {
    if (s->mux) holding += s->mux->release_idle_buffers();
    if (s->wbuf.empty() && s->wbuf.capacity() > 0) s->wbuf.release();  // nothing to send since the last sweep
  }
  sweep_wanted_ = false;
  if (holding > 0) want_sweep();
}

void Proxy::Impl::run_timers() {
  while (!timers_.empty() && timers_.begin()->at <= now_) {
    const Timer t = *timers_.begin();
    timers_.erase(timers_.begin());
    if (t.kind == Kind::kSession) {
      if (Session* s = session(t.id)) {
        s->timer_at = TimePoint::max();
        session_timer(*s);
      }
    } else if (t.kind == Kind::kConn) {
      if (Conn* c = conn(t.id)) {
        c->timer_at = TimePoint::max();
        conn_timer(*c);
      }
    }
  }
}

void Proxy::Impl::arm_timer(Kind k, std::uint64_t id, TimePoint& slot, TimePoint at) {
  disarm_timer(k, id, slot);
  slot = at;
  timers_.insert({at, k, id});
}

void Proxy::Impl::disarm_timer(Kind k, std::uint64_t id, TimePoint& slot) {
  if (slot != TimePoint::max()) timers_.erase({slot, k, id});
  slot = TimePoint::max();
}

void Proxy::Impl::set_interest(int fd, std::uint32_t& current, std::uint32_t want, std::uint64_t tok) {
  if (want == current) return;
  // A socket without interest leaves the set: EPOLLHUP / EPOLLERR are reported whatever the
  // mask, and a level-triggered HUP on a socket we do not want to read would spin the loop.
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = tok;
  if (want == 0) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  } else if (current == 0) {
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  } else {
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
  }
  current = want;
}

void Proxy::Impl::forget_fd(int fd) { ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr); }

ProxyStats Proxy::Impl::snapshot() {
  ProxyStats s = stats_;
  std::uint64_t buffered = 0;
  for (const auto& [id, c] : conns_) buffered += c->out_bytes + c->replay.size();
  for (const auto& [id, ss] : sessions_) buffered += ss->backlog();
  s.bytes_buffered = buffered;
  std::uint64_t allocated = 0;
  for (const auto& [id, c] : conns_) allocated += c->out.capacity() + c->replay.capacity();
  for (const auto& [id, ss] : sessions_) {
    allocated += ss->wbuf.capacity();
    if (ss->mux) allocated += ss->mux->send_buffer_bytes();
  }
  s.buffer_bytes_allocated = allocated;
  s.connections_open = conns_.size();
  fill_routes(s);
  for (const auto& [name, u] : upstreams_) s.listening[name] = u.cfg.listen;
  return s;
}

void Proxy::Impl::shutdown_all() {
  for (auto& [name, u] : upstreams_) ::close(u.fd);
  upstreams_.clear();
  upstream_ids_.clear();
  while (!conns_.empty()) destroy_conn(*conns_.begin()->second, true);
  while (!sessions_.empty()) {
    Session& s = *sessions_.begin()->second;
    if (s.state == Session::State::kUp) close_session_orderly(s);  // best effort close record
    else destroy_session(s);
  }
}

}  // namespace weft::transport
