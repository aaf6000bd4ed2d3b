#pragma once
// Shared by the proxy tests (proxy_test.cpp, proxy_trust_test.cpp): proxies "a", "b", "c" on
// 127.0.0.1 with fresh Noise keys, small blocking test services, and apps that are plain
// blocking sockets. Every wait polls with a deadline; every socket has a receive/send timeout,
// so a hang fails the test instead of blocking it.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "weft/transport/noise.h"
#include "weft/transport/proxy.h"

namespace weft::transport {

using namespace std::chrono_literals;

inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

inline void set_timeouts(int fd, std::chrono::seconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(t.count());
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

inline sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sin;
}

// A blocking client socket connected to 127.0.0.1:port; -1 if refused.
inline int dial(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  set_timeouts(fd, 20s);
  const sockaddr_in sin = loopback(port);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::send(fd, b, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    b += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Reads until EOF (true) or an error / timeout (false).
inline bool read_all(int fd, std::string& out) {
  char buf[65536];
  for (;;) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) return true;
    if (r < 0) return false;
    out.append(buf, static_cast<std::size_t>(r));
  }
}

// How a connection through the proxy ended, seen by the app: EOF, RST, or neither (timeout).
enum class End { kEof, kReset, kTimeout };
inline End wait_end(int fd) {
  char buf[4096];
  for (;;) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) return End::kEof;
    if (r < 0) return errno == ECONNRESET ? End::kReset : End::kTimeout;
  }
}

// How a new app connection to `port` ends, for one the proxy refuses at once: it accepts and
// resets, and that RST can reach the client before its connect() returns (then connect fails
// with ECONNRESET: the same refusal). Any other connect failure is kTimeout (a test failure).
inline End dial_and_wait_end(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  set_timeouts(fd, 20s);
  const sockaddr_in sin = loopback(port);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin) != 0) {
    const int e = errno;
    ::close(fd);
    return e == ECONNRESET ? End::kReset : End::kTimeout;
  }
  const End end = wait_end(fd);
  ::close(fd);
  return end;
}

// A local service: blocking threads, one per connection.
class TestService {
 public:
  enum class Mode {
    kEcho,            // every byte back; EOF -> shutdown(SHUT_WR)
    kCountThenReply,  // reads to EOF, then answers "n=<bytes>" and closes
    kSource,          // writes source_bytes, then closes; never reads
    kStall,           // never reads, never writes (until the test ends)
    kSlowEcho,        // as kEcho, but waits 30 ms before its first answer
  };
  explicit TestService(Mode mode, std::size_t source_bytes = 0) : mode_(mode), source_bytes_(source_bytes) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sin = loopback(0);
    ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
    ::listen(listen_fd_, 512);
    socklen_t len = sizeof sin;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TestService() {
    stopping_ = true;
    close_listener();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : workers_) t.join();
  }
  void close_listener() {
    if (acceptor_.joinable()) {
      ::shutdown(listen_fd_, SHUT_RDWR);
      acceptor_.join();
      ::close(listen_fd_);
    }
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }

  std::atomic<int> accepted{0};
  std::atomic<std::size_t> written{0};

 private:
  void accept_loop() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      set_timeouts(fd, 30s);
      ++accepted;
      std::lock_guard lock(mu_);
      fds_.push_back(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }
  void serve(int fd) {
    std::vector<char> buf(256 * 1024);
    if (mode_ == Mode::kEcho || mode_ == Mode::kSlowEcho) {
      if (mode_ == Mode::kSlowEcho) std::this_thread::sleep_for(30ms);
      for (;;) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r <= 0) break;
        if (!send_all(fd, buf.data(), static_cast<std::size_t>(r))) break;
      }
      ::shutdown(fd, SHUT_WR);
    } else if (mode_ == Mode::kCountThenReply) {
      std::size_t n = 0;
      for (;;) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r <= 0) break;
        n += static_cast<std::size_t>(r);
      }
      const std::string reply = "n=" + std::to_string(n);
      send_all(fd, reply.data(), reply.size());
      ::shutdown(fd, SHUT_WR);
    } else if (mode_ == Mode::kStall) {
      char c = 0;
      while (!stopping_) {  // a peek that times out every 30 s or ends at shutdown
        if (::recv(fd, &c, 1, MSG_PEEK) <= 0) break;
        std::this_thread::sleep_for(5ms);
      }
    } else {
      std::memset(buf.data(), 'x', buf.size());
      while (written < source_bytes_) {
        const ssize_t w = ::send(fd, buf.data(), std::min(buf.size(), source_bytes_ - written), MSG_NOSIGNAL);
        if (w <= 0) break;
        written += static_cast<std::size_t>(w);
      }
      ::shutdown(fd, SHUT_WR);
    }
  }

  Mode mode_;
  std::atomic<bool> stopping_{false};
  std::size_t source_bytes_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
};

struct Node {
  std::string name;
  NoiseKeyPair kp;
  std::unique_ptr<Proxy> proxy;
};

inline Node make_node(const std::string& name, ProxyConfig base = {}) {
  Node n;
  n.name = name;
  n.kp = NoiseKeyPair::generate();
  base.node = name;
  base.mesh_bind = Endpoint::v4(127, 0, 0, 1, 0);
  base.kx_pk = n.kp.public_key;
  base.kx_sk = n.kp.secret_key;
  auto p = Proxy::start(base, nullptr);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
  if (p) n.proxy = std::move(*p);
  return n;
}

inline RouteInstance instance(const Node& n, bool healthy = true) { return {n.name, n.proxy->mesh_endpoint(), healthy}; }

inline std::shared_ptr<const RouteTable> table(std::map<std::string, std::vector<RouteInstance>> services,
                                        const std::vector<const Node*>& peers,
                                        std::map<std::string, std::uint16_t> local = {}) {
  auto t = std::make_shared<RouteTable>();
  t->services = std::move(services);
  for (const Node* p : peers) t->peer_keys[p->name] = p->kp.public_key;
  t->local_services = std::move(local);
  return t;
}

// Adds upstream `service` on a (127.0.0.1, port chosen) and returns its port.
inline std::uint16_t add_upstream(Node& a, const std::string& service, Balance balance = Balance::kPeakEwma) {
  UpstreamConfig u;
  u.name = service;
  u.listen = Endpoint::v4(127, 0, 0, 1, 0);
  u.balance = balance;
  auto r = a.proxy->add_upstream(u);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return a.proxy->stats().listening[service].port;
}


class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }

  // a -> b for `service`, b serving it on `port`.
  void pair(const std::string& service, std::uint16_t port, ProxyConfig cfg = {}) {
    a_ = make_node("a", cfg);
    b_ = make_node("b", cfg);
    ASSERT_TRUE(a_.proxy && b_.proxy);
    a_.proxy->set_routes(table({{service, {instance(b_)}}}, {&b_}));
    b_.proxy->set_routes(table({}, {&a_}, {{service, port}}));
  }

  Node a_;
  Node b_;
  Node c_;
};

struct Three {
  TestService sb{TestService::Mode::kEcho};
  TestService sc{TestService::Mode::kEcho};
  Node a = make_node("a");
  Node b = make_node("b");
  Node c = make_node("c");
};

inline bool round_trip(std::uint16_t port, const std::string& msg) {
  const int fd = dial(port);
  if (fd < 0) return false;
  std::string back;
  const bool ok = send_all(fd, msg.data(), msg.size()) && ::shutdown(fd, SHUT_WR) == 0 && read_all(fd, back) && back == msg;
  ::close(fd);
  return ok;
}

}  // namespace weft::transport
