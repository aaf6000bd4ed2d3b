// Health checks: parsing the check text, and the non-blocking checker (health.h).

#include "health.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace weft::agent {

namespace {

// The status line is all we judge by; a server that sends more before it is complete is broken.
constexpr std::size_t kMaxResponse = 4096;
constexpr std::size_t kRecvChunk = 1024;
// An orphan without a pidfd (pidfd_open failed) is polled for with waitpid at this pace.
constexpr Duration kOrphanRetry = std::chrono::milliseconds(100);
constexpr std::string_view kHttpScheme = "http://";
constexpr std::string_view kExecPrefix = "exec:";

struct HttpUrl {
  std::uint32_t addr = 0;  // host order
  std::uint16_t port = 80;
  std::string authority;  // the Host header
  std::string path;
};

Result<HttpUrl> parse_http_url(std::string_view url) {
  std::string_view rest = url.substr(kHttpScheme.size());
  const auto slash = rest.find('/');
  HttpUrl u;
  u.authority = std::string(rest.substr(0, slash));
  u.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string host = u.authority;
  const auto not_ipv4 = [&] {
    return fail("http check: host \"" + host + "\" must be an IPv4 address or localhost");
  };
  if (host.starts_with('[')) return not_ipv4();  // an IPv6 literal: its colons are not a port
  if (const auto colon = host.find(':'); colon != std::string::npos) {
    const std::string_view p = std::string_view(host).substr(colon + 1);
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (p.empty() || ec != std::errc() || end != p.data() + p.size() || port == 0 || port > 65535) {
      return fail("http check: bad port \"" + std::string(p) + "\" (1-65535)");
    }
    u.port = static_cast<std::uint16_t>(port);
    host.resize(colon);
  }
  in_addr a{};
  if (host == "localhost") {
    u.addr = INADDR_LOOPBACK;
  } else if (::inet_pton(AF_INET, host.c_str(), &a) == 1) {
    u.addr = ntohl(a.s_addr);
  } else {
    return not_ipv4();
  }
  // The path goes into the request line verbatim: no spaces, no line breaks, no control bytes.
  for (const char c : u.path) {
    if (c <= ' ' || c > '~') return fail("http check: the path must be printable ASCII without spaces");
  }
  return u;
}

std::string connect_error(int err) {
  if (err == ECONNREFUSED) return "connect refused";
  return std::string("connect: ") + std::strerror(err);
}

// "HTTP/1.1 200 OK" -> 200; anything else -> nullopt.
std::optional<int> status_code(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const auto sp = line.find(' ');
  if (!line.starts_with("HTTP/") || sp == std::string_view::npos || line.size() < sp + 4) return std::nullopt;
  const std::string_view code = line.substr(sp + 1, 3);
  if (line.size() > sp + 4 && line[sp + 4] != ' ') return std::nullopt;
  int v = 0;
  for (const char c : code) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

const char* to_string(Health h) { return h == Health::kPassing ? "passing" : "critical"; }

Result<CheckSpec> CheckSpec::parse(std::string_view text, Duration interval) {
  CheckSpec s;
  if (text.empty()) return s;  // no check: the interval does not matter
  if (text.size() > kMaxCheckText) return fail("check: too long (at most 4096 bytes)");
  if (text == "tcp") {
    s.kind = Kind::kTcp;
  } else if (text.starts_with(kHttpScheme)) {
    if (auto u = parse_http_url(text); !u) return fail(u.error().message);
    s.kind = Kind::kHttp;
    s.target = std::string(text);
  } else if (text.starts_with("https://")) {
    return fail("check: https is not supported, use http://");
  } else if (text.starts_with(kExecPrefix)) {
    const std::string_view cmd = text.substr(kExecPrefix.size());
    if (cmd.find_first_not_of(" \t") == std::string_view::npos) return fail("exec check: empty command");
    if (cmd.find('\0') != std::string_view::npos) return fail("exec check: NUL byte in the command");
    s.kind = Kind::kExec;
    s.target = std::string(cmd);
  } else {
    const std::string shown(text.substr(0, 64));
    return fail("check: unknown \"" + shown + "\", expected tcp, http://HOST[:PORT]/PATH or exec:COMMAND");
  }
  if (interval < kMinCheckInterval) return fail("check: the interval must be at least 100ms");
  s.interval = interval;
  s.timeout = std::min(s.timeout, interval);
  return s;
}

std::string CheckSpec::text() const {
  switch (kind) {
    case Kind::kNone:
      return "";
    case Kind::kTcp:
      return "tcp";
    case Kind::kHttp:
      return target;
    case Kind::kExec:
      return std::string(kExecPrefix) + target;
  }
  return "";
}

HealthChecker::~HealthChecker() {
  for (auto& [service, e] : entries_) cancel(e);
  // SIGKILLed processes go within milliseconds: wait for them here, bounded (~1 s in 10 ms polls)
  // so that an unkillable one (uninterruptible sleep) cannot hang the agent's shutdown.
  for (int i = 0; i < 100; ++i) {
    reap_orphans();
    if (orphans_.empty()) return;
    std::vector<pollfd> fds;
    for (const Orphan& o : orphans_) {
      if (o.pidfd >= 0) fds.push_back({o.pidfd, POLLIN, 0});
    }
    ::poll(fds.data(), fds.size(), 10);
  }
  for (const Orphan& o : orphans_) close_fd(o.pidfd);  // init reaps them once we exit
}

void HealthChecker::set(TimePoint now, const std::string& service, std::uint16_t port, CheckSpec spec) {
  // The fields are public: keep them sane whatever the caller built.
  spec.interval = std::max(spec.interval, kMinCheckInterval);
  spec.timeout = std::clamp<Duration>(spec.timeout, std::chrono::milliseconds(1), spec.interval);
  auto [it, inserted] = entries_.try_emplace(service);
  Entry& e = it->second;
  const bool had_check = !inserted && e.spec.kind != CheckSpec::Kind::kNone;
  cancel(e);
  e.port = port;
  e.spec = std::move(spec);
  e.output.clear();
  e.next_start = now;
  const bool has_check = e.spec.kind != CheckSpec::Kind::kNone;
  const Health initial = has_check ? Health::kCritical : Health::kPassing;
  if (inserted) {
    e.health = initial;
  } else if (!has_check || !had_check) {
    set_health(service, e, initial);
  }
}

void HealthChecker::remove(const std::string& service) {
  const auto it = entries_.find(service);
  if (it == entries_.end()) return;
  cancel(it->second);
  entries_.erase(it);
  std::erase_if(changes_, [&](const auto& c) { return c.first == service; });
}

void HealthChecker::append_pollfds(std::vector<pollfd>& fds) const {
  for (const auto& [fd, service] : by_fd_) {
    const Entry& e = entries_.find(service)->second;
    short events = POLLIN;
    if (e.phase == Phase::kConnecting || e.phase == Phase::kSending) events = POLLOUT;
    fds.push_back({fd, events, 0});
  }
  for (const Orphan& o : orphans_) {
    if (o.pidfd >= 0) fds.push_back({o.pidfd, POLLIN, 0});
  }
}

void HealthChecker::on_poll(TimePoint /*now*/, std::span<const pollfd> fds) {
  bool orphan_ready = false;
  for (const pollfd& p : fds) {
    if (p.revents == 0 || p.fd < 0) continue;
    // A descriptor is looked up afresh each time: advancing one check may close its descriptor,
    // and nothing here opens one, so a number cannot come to mean another check in this pass.
    if (const auto f = by_fd_.find(p.fd); f != by_fd_.end()) {
      const std::string service = f->second;
      advance(service, entries_.find(service)->second, p.revents);
    } else if (std::any_of(orphans_.begin(), orphans_.end(),
                           [&](const Orphan& o) { return o.pidfd == p.fd; })) {
      orphan_ready = true;
    }
  }
  if (orphan_ready) reap_orphans();
}

TimePoint HealthChecker::tick(TimePoint now) {
  reap_orphans();
  TimePoint next = TimePoint::max();
  for (auto& [service, e] : entries_) {
    if (e.spec.kind == CheckSpec::Kind::kNone) continue;
    if (e.phase != Phase::kIdle && now >= e.deadline) {
      ++stats_.by_kind[static_cast<std::size_t>(e.spec.kind)].timeouts;
      cancel_process(e);
      finish(service, e, false, "timeout");
    }
    if (e.phase == Phase::kIdle && now >= e.next_start) start(now, service, e);
    next = std::min(next, e.phase == Phase::kIdle ? e.next_start : e.deadline);
  }
  if (std::any_of(orphans_.begin(), orphans_.end(), [](const Orphan& o) { return o.pidfd < 0; })) {
    next = std::min(next, now + kOrphanRetry);
  }
  return next;
}

std::vector<std::pair<std::string, Health>> HealthChecker::take_changes() {
  return std::exchange(changes_, {});
}

std::optional<Health> HealthChecker::health(const std::string& service) const {
  const auto it = entries_.find(service);
  if (it == entries_.end()) return std::nullopt;
  return it->second.health;
}

std::string HealthChecker::last_output(const std::string& service) const {
  const auto it = entries_.find(service);
  return it == entries_.end() ? std::string() : it->second.output;
}

// --- checks in flight ---

void HealthChecker::start(TimePoint now, const std::string& service, Entry& e) {
  // Start to start, from when the check really started: a late loop never causes a burst.
  e.next_start = now + e.spec.interval;
  e.deadline = now + e.spec.timeout;
  ++stats_.by_kind[static_cast<std::size_t>(e.spec.kind)].run;
  switch (e.spec.kind) {
    case CheckSpec::Kind::kNone:
      break;
    case CheckSpec::Kind::kTcp:
      start_connect(service, e, INADDR_LOOPBACK, e.port);
      break;
    case CheckSpec::Kind::kHttp: {
      auto u = parse_http_url(e.spec.target);
      if (!u) return finish(service, e, false, u.error().message);
      e.io = "GET " + u->path + " HTTP/1.0\r\nHost: " + u->authority +
             "\r\nUser-Agent: weft-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n";
      start_connect(service, e, u->addr, u->port);
      break;
    }
    case CheckSpec::Kind::kExec:
      start_exec(service, e);
      break;
  }
}

void HealthChecker::start_connect(const std::string& service, Entry& e, std::uint32_t addr,
                                  std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return finish(service, e, false, std::string("socket: ") + std::strerror(errno));
  e.fd = fd;
  by_fd_[fd] = service;
  e.phase = Phase::kConnecting;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(addr);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) {
    advance(service, e, POLLOUT);  // connected at once (loopback may)
  } else if (errno != EINPROGRESS) {
    finish(service, e, false, connect_error(errno));
  }
}

void HealthChecker::start_exec(const std::string& service, Entry& e) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&fa);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  ::posix_spawn_file_actions_adddup2(&fa, 1, 2);
  // Descriptors some library opened without CLOEXEC must not leak into (or be held by) checks.
  ::posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  // Its own process group, so that a timeout kills whatever the shell started; the agent's
  // blocked signals (signalfd) and ignored SIGPIPE must not be inherited by the command.
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  ::posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  ::posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (const int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&defaults, sig);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  std::string sh = "sh", dash_c = "-c", cmd = e.spec.target;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) return finish(service, e, false, std::string("spawn: ") + std::strerror(rc));
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // CLOEXEC by design
  if (pidfd < 0) {
    const std::string why = std::string("pidfd_open: ") + std::strerror(errno);
    ::kill(-pid, SIGKILL);
    ++stats_.killed;
    orphans_.push_back({pid, -1});  // reaped by tick() with waitpid(WNOHANG)
    return finish(service, e, false, why);
  }
  e.pid = pid;
  e.fd = pidfd;
  by_fd_[pidfd] = service;
  e.phase = Phase::kRunning;
}

void HealthChecker::advance(const std::string& service, Entry& e, short revents) {
  switch (e.phase) {
    case Phase::kIdle:
      return;
    case Phase::kConnecting: {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(e.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err != 0) return finish(service, e, false, connect_error(err));
      if ((revents & POLLOUT) == 0) {
        if (revents & (POLLERR | POLLHUP)) finish(service, e, false, "connect failed");
        return;
      }
      if (e.spec.kind == CheckSpec::Kind::kTcp) return finish(service, e, true, "connected");
      e.phase = Phase::kSending;
      return advance_http(service, e);
    }
    case Phase::kSending:
    case Phase::kReceiving:
      return advance_http(service, e);
    case Phase::kRunning: {
      if ((revents & (POLLIN | POLLHUP | POLLERR)) == 0) return;
      // Look without reaping first: while the exited leader is a zombie its pid (the group id)
      // cannot be reused, so killing what the command left behind in its group is safe.
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(e.pid), &info, WEXITED | WNOHANG | WNOWAIT) < 0) {
        const std::string why = std::string("wait: ") + std::strerror(errno);
        e.pid = -1;  // not our child any more (someone else reaped it)
        return finish(service, e, false, why);
      }
      if (info.si_pid == 0) return;  // still running
      ::kill(-e.pid, SIGKILL);
      ::waitpid(e.pid, nullptr, WNOHANG);
      ++stats_.reaped;
      e.pid = -1;
      if (info.si_code == CLD_EXITED) {
        return finish(service, e, info.si_status == 0, "exit " + std::to_string(info.si_status));
      }
      return finish(service, e, false, "signal " + std::to_string(info.si_status));
    }
  }
}

void HealthChecker::advance_http(const std::string& service, Entry& e) {
  if (e.phase == Phase::kSending) {
    const ssize_t n = ::send(e.fd, e.io.data(), e.io.size(), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return finish(service, e, false, std::string("send: ") + std::strerror(errno));
    }
    if (n > 0) e.io.erase(0, static_cast<std::size_t>(n));
    if (!e.io.empty()) return;
    e.phase = Phase::kReceiving;  // POLLIN next; the request is small, the reply comes later
    return;
  }
  bool eof = false;
  while (e.io.size() < kMaxResponse) {
    char buf[kRecvChunk];
    const ssize_t n = ::recv(e.fd, buf, std::min(sizeof buf, kMaxResponse - e.io.size()), 0);
    if (n > 0) {
      e.io.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) eof = true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return finish(service, e, false, std::string("recv: ") + std::strerror(errno));
    }
    break;
  }
  const auto nl = e.io.find('\n');
  if (nl == std::string::npos) {
    if (eof || e.io.size() >= kMaxResponse) finish(service, e, false, "bad HTTP response");
    return;  // the status line is not complete yet
  }
  const auto code = status_code(std::string_view(e.io).substr(0, nl));
  if (!code) return finish(service, e, false, "bad HTTP response");
  finish(service, e, *code >= 200 && *code <= 299, "HTTP " + std::to_string(*code));
}

void HealthChecker::finish(const std::string& service, Entry& e, bool passed, std::string output) {
  release(e);
  auto& c = stats_.by_kind[static_cast<std::size_t>(e.spec.kind)];
  ++(passed ? c.passed : c.failed);
  e.output = std::move(output);
  set_health(service, e, passed ? Health::kPassing : Health::kCritical);
}

// Kills a running exec check's process group; its pidfd moves to the orphans, which keep it in
// the poll set until the process is reaped (SIGKILL is delivered asynchronously: waiting for it
// here could block the loop).
void HealthChecker::cancel_process(Entry& e) {
  if (e.phase != Phase::kRunning || e.pid < 0) return;
  ::kill(-e.pid, SIGKILL);
  ++stats_.killed;
  by_fd_.erase(e.fd);
  orphans_.push_back({e.pid, e.fd});
  e.fd = -1;
  e.pid = -1;
  reap_orphans();
}

void HealthChecker::cancel(Entry& e) {
  if (e.phase == Phase::kIdle) return;
  ++stats_.cancelled;
  cancel_process(e);
  release(e);
}

void HealthChecker::release(Entry& e) {
  if (e.fd >= 0) {
    by_fd_.erase(e.fd);
    close_fd(e.fd);
  }
  e.fd = -1;
  e.pid = -1;
  e.phase = Phase::kIdle;
  e.io.clear();
  e.io.shrink_to_fit();
}

void HealthChecker::set_health(const std::string& service, Entry& e, Health h) {
  if (e.health == h) return;
  e.health = h;
  ++stats_.flips;
  changes_.emplace_back(service, h);
}

void HealthChecker::reap_orphans() {
  std::erase_if(orphans_, [&](const Orphan& o) {
    const pid_t r = ::waitpid(o.pid, nullptr, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return false;
    if (r == o.pid) ++stats_.reaped;  // r < 0 (ECHILD): reaped elsewhere, nothing left to wait for
    close_fd(o.pidfd);
    return true;
  });
}

}  // namespace weft::agent
