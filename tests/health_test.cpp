// weft::agent health checks: parsing, and the checker driven by a small poll loop against real
// sockets on 127.0.0.1 and real processes. Every test ends with no child process left (zombies
// included) and exactly the descriptors it started with.

#include "health.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

namespace weft::agent {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using Kind = CheckSpec::Kind;
using Changes = std::vector<std::pair<std::string, Health>>;

int count_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Gone for good: reaped (ours must be). A grandchild is reaped by init, which in a container
// may never do it: dead is enough for it.
bool process_gone(pid_t pid) { return ::kill(pid, 0) < 0 && errno == ESRCH; }
bool process_dead(pid_t pid) {
  if (process_gone(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
}

// A loopback TCP server driven by the same poll loop as the checker. With an answer it reads the
// request head, records the first one, sends the answer and closes; without one it holds every
// connection open until the client closes it.
class Server {
 public:
  explicit Server(std::optional<std::string> answer = std::nullopt, std::uint16_t port = 0)
      : answer_(std::move(answer)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bound_ = ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0 &&
             ::listen(listen_fd_, 64) == 0;
    socklen_t len = sizeof sa;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
  }
  ~Server() {
    for (const Conn& c : conns_) ::close(c.fd);
    ::close(listen_fd_);
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  bool bound() const { return bound_; }
  std::uint16_t port() const { return port_; }
  std::size_t open_connections() const { return conns_.size(); }
  std::size_t accepted() const { return accepted_; }
  const std::string& first_request() const { return first_request_; }

  void append(std::vector<pollfd>& fds) const {
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Conn& c : conns_) fds.push_back({c.fd, POLLIN, 0});
  }
  void on_poll(std::span<const pollfd> fds) {
    for (const pollfd& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == listen_fd_) {
        for (int fd; (fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          conns_.push_back({fd, {}});
          ++accepted_;
        }
        continue;
      }
      const auto it = std::find_if(conns_.begin(), conns_.end(), [&](const Conn& c) { return c.fd == p.fd; });
      if (it != conns_.end() && !serve(*it)) {
        ::close(it->fd);
        conns_.erase(it);
      }
    }
  }

 private:
  struct Conn {
    int fd;
    std::string in;
  };
  // Returns false once the connection is done with.
  bool serve(Conn& c) {
    char buf[1024];
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n <= 0) return n < 0 && errno == EAGAIN;
    c.in.append(buf, static_cast<std::size_t>(n));
    if (!answer_ || c.in.find("\r\n\r\n") == std::string::npos) return true;
    if (first_request_.empty()) first_request_ = c.in;
    ::send(c.fd, answer_->data(), answer_->size(), MSG_NOSIGNAL);
    return false;
  }

  std::optional<std::string> answer_;
  int listen_fd_ = -1;
  bool bound_ = false;
  std::uint16_t port_ = 0;
  std::vector<Conn> conns_;
  std::size_t accepted_ = 0;
  std::string first_request_;
};

CheckSpec spec(std::string_view text, Duration interval = 1s,
               std::optional<Duration> timeout = std::nullopt) {
  auto s = CheckSpec::parse(text, interval);
  EXPECT_TRUE(s) << text << ": " << s.error().message;
  if (timeout) s->timeout = *timeout;
  return *s;
}

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fds_before_ = count_fds();
    hc_.emplace();
  }
  void TearDown() override {
    hc_.reset();
    servers_.clear();
    EXPECT_EQ(count_fds(), fds_before_) << "a descriptor leaked";
    EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1) << "a child process (or zombie) is left";
  }

  Server& server(std::optional<std::string> answer = std::nullopt, std::uint16_t port = 0) {
    servers_.push_back(std::make_unique<Server>(std::move(answer), port));
    EXPECT_TRUE(servers_.back()->bound());
    return *servers_.back();
  }
  HealthChecker& hc() { return *hc_; }
  void set(const std::string& service, std::uint16_t port, CheckSpec s) {
    hc().set(Clock::now(), service, port, std::move(s));
  }

  // The agent's loop in small: tick, poll on the checker's and the servers' descriptors (never
  // longer than 20 ms, to look at `done` again), hand every entry back. Bounded by `limit`.
  bool run_until(const std::function<bool()>& done, Duration limit = 3s) {
    const TimePoint end = Clock::now() + limit;
    while (!done()) {
      const TimePoint now = Clock::now();
      if (now >= end) return false;
      const TimePoint next = std::min({hc().tick(now), end, now + 20ms});
      collect();
      std::vector<pollfd> fds;
      hc().append_pollfds(fds);
      for (const auto& s : servers_) s->append(fds);
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now());
      ::poll(fds.data(), fds.size(), static_cast<int>(std::max(wait.count(), std::int64_t{0})));
      hc().on_poll(Clock::now(), fds);
      for (const auto& s : servers_) s->on_poll(fds);
      collect();
    }
    return true;
  }
  void run_for(Duration d) {
    const TimePoint end = Clock::now() + d;
    EXPECT_TRUE(run_until([&] { return Clock::now() >= end; }, d + 1s));
  }
  bool run_until_output(const std::string& service, const std::string& output, Duration limit = 3s) {
    return run_until([&] { return hc().last_output(service) == output; }, limit);
  }
  void collect() {
    for (auto& c : hc().take_changes()) changes_.push_back(std::move(c));
  }

  int fds_before_ = 0;
  std::optional<HealthChecker> hc_;
  std::vector<std::unique_ptr<Server>> servers_;
  Changes changes_;
};

pid_t read_pid(const std::string& path) {
  std::ifstream in(path);
  pid_t pid = -1;
  in >> pid;
  return in ? pid : -1;
}

std::string pid_file() {
  static int n = 0;
  return (std::filesystem::temp_directory_path() /
          ("weft-health-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".pid"))
      .string();
}

// --- parsing ---

TEST(CheckSpecParse, Accepts) {
  EXPECT_EQ(CheckSpec::parse("", 0s)->kind, Kind::kNone);
  EXPECT_EQ(CheckSpec::parse("tcp", 10s)->kind, Kind::kTcp);
  EXPECT_EQ(CheckSpec::parse("tcp", 10s)->target, "");
  for (const char* url : {"http://127.0.0.1:8080/health", "http://localhost/", "http://127.0.0.1",
                          "http://10.1.2.3:9000/v1/status?full=1", "http://localhost:1/x"}) {
    auto s = CheckSpec::parse(url, 10s);
    ASSERT_TRUE(s) << url << ": " << s.error().message;
    EXPECT_EQ(s->kind, Kind::kHttp);
    EXPECT_EQ(s->target, url);
    EXPECT_EQ(s->text(), url);
  }
  auto e = CheckSpec::parse("exec:/usr/bin/check --deep 'a b'", 10s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, Kind::kExec);
  EXPECT_EQ(e->target, "/usr/bin/check --deep 'a b'");
  EXPECT_EQ(e->text(), "exec:/usr/bin/check --deep 'a b'");
  EXPECT_EQ(CheckSpec::parse("tcp", 10s)->text(), "tcp");
  EXPECT_EQ(CheckSpec::parse("", 10s)->text(), "");
}

TEST(CheckSpecParse, IntervalAndTimeout) {
  auto s = CheckSpec::parse("tcp", 30s);
  EXPECT_EQ(s->interval, Duration(30s));
  EXPECT_EQ(s->timeout, Duration(5s));
  s = CheckSpec::parse("tcp", 2s);
  EXPECT_EQ(s->timeout, Duration(2s));  // capped at the interval
  EXPECT_THAT(CheckSpec::parse("tcp", 50ms).error().message, HasSubstr("interval"));
  EXPECT_THAT(CheckSpec::parse("exec:true", 0s).error().message, HasSubstr("interval"));
}

TEST(CheckSpecParse, Rejects) {
  const std::pair<const char*, const char*> bad[] = {
      {"udp", "unknown"},
      {"TCP", "unknown"},
      {" tcp", "unknown"},
      {"tcp:80", "unknown"},
      {"https://127.0.0.1/", "https"},
      {"http://[::1]:80/", "IPv4"},
      {"http://example.com/", "IPv4"},
      {"http:///x", "IPv4"},
      {"http://127.0.0.1:0/", "port"},
      {"http://127.0.0.1:65536/", "port"},
      {"http://127.0.0.1:8o/", "port"},
      {"http://127.0.0.1:/", "port"},
      {"http://127.0.0.1/a b", "path"},
      {"http://127.0.0.1/a\r\nX-Injected: 1", "path"},
      {"exec:", "empty command"},
      {"exec:   ", "empty command"},
  };
  for (const auto& [text, why] : bad) {
    auto s = CheckSpec::parse(text, 10s);
    ASSERT_FALSE(s) << text;
    EXPECT_THAT(s.error().message, HasSubstr(why)) << text;
  }
  EXPECT_FALSE(CheckSpec::parse(std::string("exec:a\0b", 8), 10s));
  EXPECT_THAT(CheckSpec::parse("exec:" + std::string(5000, 'x'), 10s).error().message, HasSubstr("too long"));
}

// --- the checker ---

TEST_F(HealthTest, NoCheckIsPassingAndNeverChecked) {
  set("web", 1, CheckSpec{});
  EXPECT_EQ(hc().health("web"), Health::kPassing);
  EXPECT_EQ(hc().tick(Clock::now()), TimePoint::max());
  std::vector<pollfd> fds;
  hc().append_pollfds(fds);
  EXPECT_TRUE(fds.empty());
  EXPECT_TRUE(hc().take_changes().empty());  // the initial health is not a flip
  EXPECT_EQ(hc().health("nope"), std::nullopt);
}

TEST_F(HealthTest, TcpPassesWithAListenerAndFailsOnceItCloses) {
  Server& s = server();
  const std::uint16_t port = s.port();
  set("db", port, spec("tcp", 100ms));
  EXPECT_EQ(hc().health("db"), Health::kCritical);  // until the first check passes
  ASSERT_TRUE(run_until([&] { return hc().health("db") == Health::kPassing; }));
  EXPECT_EQ(hc().last_output("db"), "connected");
  servers_.clear();
  ASSERT_TRUE(run_until([&] { return hc().health("db") == Health::kCritical; }));
  EXPECT_EQ(hc().last_output("db"), "connect refused");
  EXPECT_EQ(changes_, (Changes{{"db", Health::kPassing}, {"db", Health::kCritical}}));
  const CheckCounters& c = hc().stats().of(Kind::kTcp);
  EXPECT_GE(c.passed, 1u);
  EXPECT_GE(c.failed, 1u);
  EXPECT_GE(c.run, c.passed + c.failed);
  EXPECT_EQ(c.timeouts, 0u);
}

TEST_F(HealthTest, Http200Passes) {
  Server& s = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port()) + "/v1/health?x=1";
  set("api", 1, spec(url));
  ASSERT_TRUE(run_until([&] { return hc().health("api") == Health::kPassing; }));
  EXPECT_EQ(hc().last_output("api"), "HTTP 200");
  EXPECT_THAT(s.first_request(), ::testing::StartsWith("GET /v1/health?x=1 HTTP/1.0\r\n"));
  EXPECT_THAT(s.first_request(), HasSubstr("\r\nHost: 127.0.0.1:" + std::to_string(s.port()) + "\r\n"));
  EXPECT_EQ(hc().stats().of(Kind::kHttp).passed, 1u);
}

TEST_F(HealthTest, HttpFailures) {
  Server& unavailable = server("HTTP/1.0 503 Service Unavailable\r\n\r\n");
  Server& limited = server("HTTP/1.1 429 Too Many Requests\r\n\r\n");
  Server& garbage = server("SSH-2.0-OpenSSH_9.2\r\n");
  Server& closed = server("");  // reads the request, closes without a word
  std::uint16_t nobody = 0;
  {
    Server gone;
    nobody = gone.port();
  }
  auto url = [](std::uint16_t port) { return "http://localhost:" + std::to_string(port) + "/"; };
  set("unavailable", 1, spec(url(unavailable.port())));
  set("limited", 1, spec(url(limited.port())));
  set("garbage", 1, spec(url(garbage.port())));
  set("closed", 1, spec(url(closed.port())));
  set("nobody", 1, spec(url(nobody)));
  ASSERT_TRUE(run_until([&] { return hc().stats().of(Kind::kHttp).failed >= 5; }))
      << hc().stats().of(Kind::kHttp).failed;
  EXPECT_EQ(hc().last_output("unavailable"), "HTTP 503");
  EXPECT_EQ(hc().last_output("limited"), "HTTP 429");
  EXPECT_EQ(hc().last_output("garbage"), "bad HTTP response");
  EXPECT_EQ(hc().last_output("closed"), "bad HTTP response");
  EXPECT_EQ(hc().last_output("nobody"), "connect refused");
  for (const char* s : {"unavailable", "limited", "garbage", "closed", "nobody"})
    EXPECT_EQ(hc().health(s), Health::kCritical) << s;
  EXPECT_TRUE(changes_.empty());  // critical from the start: no flip
  EXPECT_EQ(hc().stats().of(Kind::kHttp).passed, 0u);
}

TEST_F(HealthTest, HttpServerThatNeverAnswersTimesOut) {
  Server& s = server();
  set("slow", 1, spec("http://127.0.0.1:" + std::to_string(s.port()) + "/", 2s, 300ms));
  const TimePoint start = Clock::now();
  ASSERT_TRUE(run_until_output("slow", "timeout"));
  EXPECT_GE(Clock::now() - start, Duration(300ms));
  EXPECT_EQ(hc().health("slow"), Health::kCritical);
  EXPECT_EQ(hc().stats().of(Kind::kHttp).timeouts, 1u);
  EXPECT_EQ(s.accepted(), 1u);
  // The timed-out socket is closed: the server sees the end of its connection.
  EXPECT_TRUE(run_until([&] { return s.open_connections() == 0; }, 1s));
}

TEST_F(HealthTest, ExecExitStatus) {
  set("ok", 1, spec("exec:true"));
  set("bad", 1, spec("exec:echo noise; echo more >&2; exit 3"));
  set("missing", 1, spec("exec:/nonexistent/check"));
  ASSERT_TRUE(run_until([&] { return hc().stats().of(Kind::kExec).run == 3 && hc().stats().reaped == 3; }));
  ASSERT_TRUE(run_until([&] { return hc().health("ok") == Health::kPassing; }));
  EXPECT_EQ(hc().last_output("ok"), "exit 0");
  EXPECT_EQ(hc().last_output("bad"), "exit 3");
  EXPECT_EQ(hc().last_output("missing"), "exit 127");
  EXPECT_EQ(hc().health("bad"), Health::kCritical);
  EXPECT_EQ(changes_, (Changes{{"ok", Health::kPassing}}));
  EXPECT_EQ(hc().stats().killed, 0u);
}

TEST_F(HealthTest, ExecTimeoutKillsTheProcessGroup) {
  const std::string pids = pid_file();
  // The shell's pid and a grandchild's: the whole group goes.
  set("stuck", 1, spec("exec:sleep 30 & echo $$ $! > " + pids + "; wait", 2s, 300ms));
  ASSERT_TRUE(run_until_output("stuck", "timeout"));
  std::ifstream in(pids);
  pid_t shell = -1, grandchild = -1;
  in >> shell >> grandchild;
  ASSERT_GT(shell, 0);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(run_until([&] { return process_gone(shell) && process_dead(grandchild); }, 1s));
  EXPECT_EQ(hc().health("stuck"), Health::kCritical);
  EXPECT_EQ(hc().stats().of(Kind::kExec).timeouts, 1u);
  EXPECT_EQ(hc().stats().killed, 1u);
  std::filesystem::remove(pids);
}

TEST_F(HealthTest, RemoveMidCheckLeavesNoChildAndNoDescriptor) {
  Server& silent = server();
  const int fds = count_fds();
  const std::string pidf = pid_file();
  set("script", 1, spec("exec:echo $$ > " + pidf + "; exec sleep 30", 10s));
  set("http", 1, spec("http://127.0.0.1:" + std::to_string(silent.port()) + "/", 10s));
  pid_t pid = -1;
  ASSERT_TRUE(run_until([&] { return (pid = read_pid(pidf)) > 0 && silent.open_connections() == 1; }));
  EXPECT_GT(count_fds(), fds);
  hc().remove("script");
  hc().remove("http");
  EXPECT_EQ(hc().health("script"), std::nullopt);
  std::vector<pollfd> in_flight;
  hc().append_pollfds(in_flight);
  ASSERT_LE(in_flight.size(), 1u);  // at most the killed process's pidfd, until it is reaped
  EXPECT_TRUE(run_until([&] { return process_gone(pid) && silent.open_connections() == 0; }, 2s));
  EXPECT_EQ(count_fds(), fds);
  EXPECT_EQ(hc().stats().cancelled, 2u);
  EXPECT_EQ(hc().stats().reaped, 1u);
  EXPECT_EQ(hc().tick(Clock::now()), TimePoint::max());
  std::filesystem::remove(pidf);
}

TEST_F(HealthTest, FlappingReportsEachFlipOnce) {
  // The port is bound and released three times. One below the ephemeral range (32768..60999):
  // a test running beside this one (ctest -j) that binds port 0 is never given it while it is
  // free, which once made an extra "passing" appear after the last release.
  std::uint16_t port = 0;
  for (int i = 0; i < 200 && port == 0; ++i) {
    const auto candidate = static_cast<std::uint16_t>(20000 + (::getpid() + i * 37) % 10000);
    Server probe(std::nullopt, candidate);
    if (probe.bound()) port = candidate;
  }
  ASSERT_NE(port, 0);
  set("flappy", port, spec("tcp", 100ms));
  Changes expected;
  for (int i = 0; i < 3; ++i) {
    server(std::nullopt, port);
    ASSERT_TRUE(run_until([&] { return hc().health("flappy") == Health::kPassing; })) << i;
    run_for(350ms);  // several more checks: no repeated report
    servers_.clear();
    ASSERT_TRUE(run_until([&] { return hc().health("flappy") == Health::kCritical; })) << i;
    run_for(350ms);
    expected.insert(expected.end(), {{"flappy", Health::kPassing}, {"flappy", Health::kCritical}});
  }
  EXPECT_EQ(changes_, expected);
  EXPECT_EQ(hc().stats().flips, 6u);
  EXPECT_GE(hc().stats().of(Kind::kTcp).run, 12u);
}

TEST_F(HealthTest, ResetKeepsOrChangesHealthAsTheCatalogDoes) {
  Server& s = server();
  set("svc", s.port(), spec("tcp", 100ms));
  ASSERT_TRUE(run_until([&] { return hc().health("svc") == Health::kPassing; }));
  set("svc", s.port(), spec("tcp", 200ms));  // still checked: keeps its health
  EXPECT_EQ(hc().health("svc"), Health::kPassing);
  set("svc", s.port(), CheckSpec{});          // no check: passing
  set("svc", s.port(), spec("exec:exit 1"));  // a first check again: critical until it passes
  EXPECT_EQ(hc().health("svc"), Health::kCritical);
  hc().remove("svc");
  collect();
  EXPECT_EQ(changes_, (Changes{{"svc", Health::kPassing}}));  // the critical one went with the service
}

}  // namespace
}  // namespace weft::agent
