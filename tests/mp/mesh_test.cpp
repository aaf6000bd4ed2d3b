// Multi-process tests of the data plane: app -> agent -> agent -> service through real `weft agent`
// processes on 127.0.0.x, bounded in time.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "cluster.h"
#include "harness.h"
#include "weft/agent/rpc.h"

namespace weft::mptest {
namespace {

// An echo service on 127.0.0.1 (port chosen by the system): every byte goes back, and once the
// client half-closes and everything is echoed, the server half-closes too. One epoll thread;
// bounded buffers (it stops reading a connection while 1 MiB is waiting to go back).
class EchoServer {
 public:
  EchoServer() {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(lfd_, 4096), 0);
    socklen_t len = sizeof sa;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK);
    add(lfd_, EPOLLIN);
    add(wake_[0], EPOLLIN);
    thread_ = std::thread([this] { loop(); });
  }
  ~EchoServer() {
    stop_ = true;
    (void)::write(wake_[1], "x", 1);
    thread_.join();
    for (auto& [fd, c] : conns_) ::close(fd);
    ::close(lfd_);
    ::close(ep_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  std::uint16_t port = 0;
  // Connections that sent at least one byte: app traffic, not the agents' tcp health checks
  // (which connect and close).
  std::atomic<std::size_t> served{0};

 private:
  struct Conn {
    std::vector<char> pending;
    bool eof = false;
    bool shut = false;
    bool served = false;
  };
  void add(int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void update(int fd, const Conn& c) {
    epoll_event ev{};
    ev.events = (c.pending.size() < (1u << 20) && !c.eof ? EPOLLIN : 0u) | (c.pending.empty() ? 0u : EPOLLOUT);
    ev.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
  }
  void close_conn(int fd) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns_.erase(fd);
  }
  void loop() {
    std::vector<char> buf(256 * 1024);
    epoll_event evs[64];
    while (!stop_) {
      const int n = ::epoll_wait(ep_, evs, 64, 200);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == wake_[0]) continue;
        if (fd == lfd_) {
          for (;;) {
            const int c = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0) break;
            conns_[c] = Conn{};
            add(c, EPOLLIN);
          }
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        Conn& c = it->second;
        bool dead = false;
        if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c.eof) {
          while (c.pending.size() < (1u << 20)) {
            const ssize_t r = ::read(fd, buf.data(), buf.size());
            if (r > 0) {
              if (!c.served) {
                c.served = true;
                ++served;
              }
              c.pending.insert(c.pending.end(), buf.data(), buf.data() + r);
            } else if (r == 0) {
              c.eof = true;
              break;
            } else {
              if (errno != EAGAIN) dead = true;
              break;
            }
          }
        }
        while (!dead && !c.pending.empty()) {
          const ssize_t w = ::send(fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
          if (w > 0) {
            c.pending.erase(c.pending.begin(), c.pending.begin() + w);
          } else {
            if (errno != EAGAIN) dead = true;
            break;
          }
        }
        if (!dead && c.eof && c.pending.empty() && !c.shut) {
          ::shutdown(fd, SHUT_WR);
          c.shut = true;
        }
        if (dead || (c.shut && (evs[i].events & EPOLLHUP))) {
          close_conn(fd);
        } else {
          update(fd, c);
        }
      }
    }
  }
  int lfd_ = -1;
  int ep_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::map<int, Conn> conns_;
};

int connect_to(const std::string& ip, std::uint16_t port, std::chrono::seconds io_timeout = 20s) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{static_cast<time_t>(io_timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// One echo round trip of `n` bytes; false on any error, short read or timeout.
bool echo_round(int fd, std::size_t n) {
  std::vector<char> out(n), in(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>(i * 7 + 3);
  if (::send(fd, out.data(), n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) return false;
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, in.data() + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return in == out;
}

std::string ip_of(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

// A cluster whose agent 0 has an upstream for "echo" at <n0's IP>:9000 and whose agents 1.. each
// serve an EchoServer as "echo".
struct MeshFixture {
  MeshFixture(int test_no, int n, std::string netns_name = "")
      : c(test_no, n, (write_key(keys, "key"), keys.path + "/key"), {}, netns_name), netns(std::move(netns_name)) {
    c.start_all();
    EXPECT_TRUE(wait_until([&] { return c.all_count_alive(static_cast<std::size_t>(n)); }, 15s)) << c.logs();
    for (int i = 1; i < n; ++i) {
      servers.push_back(in_netns(netns, [] { return std::make_unique<EchoServer>(); }));
      auto r = c.agents[static_cast<std::size_t>(i)]->call(
          "service.register", json{{"name", "echo"}, {"port", servers.back()->port}, {"check", "tcp"}, {"interval", "500ms"}});
      EXPECT_TRUE(r && r->contains("registered")) << (r ? r->dump() : "no reply");
    }
    upstream_ip = ip_of(c.agents[0]->addr);
    auto r = c.agents[0]->call("upstream.add", json{{"name", "echo"}, {"listen", upstream_ip + ":9000"}});
    EXPECT_TRUE(r && r->contains("added")) << (r ? r->dump() : "no reply");
    EXPECT_TRUE(wait_until([&] { return passing_instances() == static_cast<std::size_t>(n - 1); }, 15s))
        << c.agents[0]->call("routes")->dump() << c.logs();
  }
  std::size_t passing_instances() {
    auto r = c.agents[0]->call("routes");
    std::size_t k = 0;
    if (!r) return 0;
    for (const json& u : (*r)["routes"]) {
      for (const json& i : u["instances"]) k += i["health"] == "passing" && !i["ejected"].get<bool>() ? 1u : 0u;
    }
    return k;
  }
  int connect(std::chrono::seconds io_timeout = 20s) {
    return in_netns(netns, [&] { return connect_to(upstream_ip, 9000, io_timeout); });
  }
  TempDir keys;
  Cluster c;
  std::string netns;
  std::vector<std::unique_ptr<EchoServer>> servers;
  std::string upstream_ip;
};

// Sends `total` seeded random bytes on `fd` from a second thread, half-closes, and reads the echo
// to EOF; true if everything came back byte for byte (SHA-256 of both streams).
bool bulk_echo(int fd, std::size_t total, std::uint64_t seed) {
  crypto_hash_sha256_state sent_h, recv_h;
  crypto_hash_sha256_init(&sent_h);
  crypto_hash_sha256_init(&recv_h);
  std::atomic<bool> send_ok{true};
  std::thread writer([&] {
    std::mt19937_64 rng(seed);
    std::vector<std::uint64_t> chunk(32 * 1024);
    std::size_t left = total;
    while (left > 0) {
      for (auto& w : chunk) w = rng();
      const std::size_t n = std::min(left, chunk.size() * 8 - (left % 977));  // uneven write sizes
      const auto* p = reinterpret_cast<const char*>(chunk.data());
      crypto_hash_sha256_update(&sent_h, reinterpret_cast<const unsigned char*>(p), n);
      std::size_t off = 0;
      while (off < n) {
        const ssize_t w = ::send(fd, p + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
          send_ok = false;
          return;
        }
        off += static_cast<std::size_t>(w);
      }
      left -= n;
    }
    ::shutdown(fd, SHUT_WR);  // half-close: the echo of what is in flight must still arrive
  });
  std::vector<unsigned char> buf(256 * 1024);
  std::size_t got = 0;
  for (;;) {
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r <= 0) break;
    crypto_hash_sha256_update(&recv_h, buf.data(), static_cast<std::size_t>(r));
    got += static_cast<std::size_t>(r);
  }
  writer.join();
  unsigned char a[32], b[32];
  crypto_hash_sha256_final(&sent_h, a);
  crypto_hash_sha256_final(&recv_h, b);
  EXPECT_TRUE(send_ok);
  EXPECT_EQ(got, total);
  return send_ok && got == total && std::memcmp(a, b, 32) == 0;
}

// Random bytes each way through app -> agent -> agent -> service, SHA-256 equal at both ends; the
// client half-closes and still receives the rest of the echo.
TEST(MeshProcess, BulkBytesExactBothWaysWithHalfClose) {
  MeshFixture f(7, 2);
#ifdef NDEBUG
  constexpr std::size_t kTotal = std::size_t{1} << 30;  // 1 GiB each way
#else
  constexpr std::size_t kTotal = std::size_t{128} << 20;  // sanitizer / debug builds are ~10x slower
#endif
  const int fd = f.connect(60s);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(bulk_echo(fd, kTotal, 42)) << f.c.logs();
  ::close(fd);
  auto stats = f.c.agents[0]->call("stats");
  ASSERT_TRUE(stats);
  EXPECT_GE((*stats)["upstreams"]["echo"]["bytes_out"].get<std::uint64_t>(), kTotal);
}

// 5 % of the packets on the agent-to-agent link (the mesh port, both directions) dropped by
// nftables in a network namespace: TCP recovers, and every transfer completes byte-exact.
TEST(MeshNetns, FivePercentLossOnTheMeshLinkEveryTransferExact) {
  if (!have_root_tools()) GTEST_SKIP() << "needs root and nft (CI runs as root)";
  NetNs ns;
  ASSERT_TRUE(ns.ok);
  MeshFixture f(11, 2, ns.name);
  ASSERT_TRUE(ns.input_rules("weft_mesh_loss",
                             "    tcp dport 7947 numgen random mod 100 < 5 counter drop\n"
                             "    tcp sport 7947 numgen random mod 100 < 5 counter drop\n"));
  std::vector<std::thread> clients;
  std::atomic<int> exact{0};
  for (int k = 0; k < 4; ++k) {
    clients.emplace_back([&, k] {
      const int fd = f.connect(60s);
      if (fd < 0) return;
      if (bulk_echo(fd, std::size_t{8} << 20, 100 + static_cast<std::uint64_t>(k))) ++exact;
      ::close(fd);
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(exact.load(), 4) << f.c.logs();
  // The rules did drop packets of these transfers.
  RunResult listed = run({"ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", "weft_mesh_loss"});
  std::uint64_t dropped = 0;
  for (std::size_t at = listed.out.find("packets "); at != std::string::npos; at = listed.out.find("packets ", at + 1)) {
    dropped += std::stoull(listed.out.substr(at + 8));
  }
  EXPECT_GT(dropped, 10u) << listed.out;  // ~80 under ASan, hundreds in release
}

// The agent-to-agent link cut while a connection is sending (nftables drops the mesh port's TCP
// both ways; gossip still flows, so nobody is marked failed): the session's data stays
// unacknowledged, and after ProxyConfig::peer_timeout (20 s) the session is closed and the app
// sees a reset, instead of a connection that hangs in TCP's retransmission backoff. After the
// heal a new connection gets a fresh session and is answered at once, not after the backoff.
TEST(MeshNetns, CutMeshLinkResetsStuckConnectionsAndTheHealIsImmediate) {
  if (!have_root_tools()) GTEST_SKIP() << "needs root and nft (CI runs as root)";
  NetNs ns;
  ASSERT_TRUE(ns.ok);
  MeshFixture f(12, 2, ns.name);
  const int a = f.connect(60s);
  ASSERT_GE(a, 0);
  ASSERT_TRUE(echo_round(a, 100));
  ASSERT_TRUE(ns.input_rules("weft_mesh_cut", "    tcp dport 7947 counter drop\n    tcp sport 7947 counter drop\n"));
  const auto cut = std::chrono::steady_clock::now();
  std::vector<char> chunk(64 * 1024, 'x');
  ASSERT_EQ(::send(a, chunk.data(), chunk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(chunk.size()));
  std::vector<char> in(chunk.size());
  ssize_t r = 0;
  int err = 0;
  do {
    r = ::recv(a, in.data(), in.size(), 0);
    err = errno;
  } while (r > 0);  // nothing should arrive; stop at the reset (or the 60 s receive timeout)
  const double ended_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut).count();
  EXPECT_EQ(r, -1);
  EXPECT_EQ(err, ECONNRESET) << "the app connection must end in a reset, not hang or look complete";
  EXPECT_GT(ended_after, 10.0) << "the link was cut for a while before the session gave up";
  EXPECT_LT(ended_after, 35.0) << "peer_timeout is 20 s";
  ::close(a);
  ASSERT_TRUE(ns.nft("delete table inet weft_mesh_cut\n"));
  const auto healed = std::chrono::steady_clock::now();
  const int b = f.connect(30s);
  ASSERT_GE(b, 0);
  EXPECT_TRUE(echo_round(b, 100));
  EXPECT_LT(std::chrono::steady_clock::now() - healed, 3s) << "a new connection after the heal waited";
  ::close(b);
  auto stats = f.c.agents[0]->call("stats");
  ASSERT_TRUE(stats);
  EXPECT_GE((*stats)["upstreams"]["echo"]["failures"].get<std::uint64_t>(), 1u) << stats->dump();
}

// 1000 connections open at once, each with its own echo.
TEST(MeshProcess, ThousandConcurrentConnections) {
  MeshFixture f(8, 2);
  std::vector<int> fds;
  for (int i = 0; i < 1000; ++i) {
    const int fd = f.connect();
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  std::size_t ok = 0;
  for (int fd : fds) ok += echo_round(fd, 1000) ? 1u : 0u;
  EXPECT_EQ(ok, fds.size());
  auto stats = f.c.agents[0]->call("stats");
  ASSERT_TRUE(stats);
  EXPECT_GE((*stats)["upstreams"]["echo"]["active"].get<std::uint64_t>(), 1000u) << stats->dump();
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(wait_until(
      [&] {
        auto s = f.c.agents[0]->call("stats");
        return s && (*s)["upstreams"]["echo"]["active"] == 0;
      },
      10s));
  EXPECT_EQ(f.c.agents[0]->call("stats").value()["upstreams"]["echo"]["failures"], 0u);

  // Bad upstream requests are errors naming the problem; the upstream keeps serving.
  auto& a0 = *f.c.agents[0];
  for (const auto& [params, mentions] :
       {std::pair{json{{"name", "echo"}, {"listen", f.upstream_ip + ":9001"}}, "exists"},
        std::pair{json{{"name", "other"}, {"listen", f.upstream_ip + ":9000"}}, "already upstream"},
        std::pair{json{{"name", "x"}, {"listen", "nowhere"}}, "IP:PORT"},
        std::pair{json{{"name", "x"}, {"listen", f.upstream_ip + ":9002"}, {"balance", "random"}}, "random"},
        std::pair{json{{"name", "a b"}, {"listen", f.upstream_ip + ":9003"}}, "letters"}}) {
    auto r = agent::RpcClient(a0.rpc()).call("upstream.add", params, 5s);
    ASSERT_FALSE(r) << params.dump() << " was accepted";
    EXPECT_NE(r.error().message.find(mentions), std::string::npos) << r.error().message;
  }
  RunResult rm = run({weft_bin(), "upstream", "remove", "nope", "--rpc", a0.rpc()});
  EXPECT_NE(rm.code, 0);
  EXPECT_EQ(rm.out.rfind("weft: ", 0), 0u) << rm.out;
  const int fd = f.connect();
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(echo_round(fd, 10));
  ::close(fd);
  // Removed, the listener is gone.
  RunResult gone = run({weft_bin(), "upstream", "remove", "echo", "--rpc", a0.rpc()});
  EXPECT_EQ(gone.code, 0) << gone.out;
  EXPECT_EQ(f.connect(), -1);
}

// Two instances; the agent behind one is killed mid-run: connections through it fail cleanly
// (an error or EOF, never a hang), new connections go to the other once gossip has seen the crash.
TEST(MeshProcess, KilledAgentFailsOverToTheOtherInstance) {
  MeshFixture f(9, 3);
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    const int fd = f.connect(15s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(echo_round(fd, 100)) << i;
    fds.push_back(fd);
  }
  ASSERT_GT(f.servers[1]->served.load(), 0u) << "both instances were used";
  ASSERT_GT(f.servers[0]->served.load(), 0u) << "both instances were used";
  f.c.agents[2]->kill9();
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t broken = 0;
  std::size_t alive = 0;
  for (int fd : fds) (echo_round(fd, 100) ? alive : broken) += 1;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 14s) << "a broken connection hung";
  EXPECT_GT(broken, 0u);
  EXPECT_EQ(alive + broken, fds.size());
  for (int fd : fds) ::close(fd);
  ASSERT_TRUE(wait_until([&] { return f.passing_instances() == 1; }, 10s)) << f.c.agents[0]->call("routes")->dump();
  // Every new connection reaches the surviving instance (counted by the bytes it carried: the
  // agents' tcp health checks connect too, every 500 ms, and send nothing).
  const std::size_t before = f.servers[0]->served;
  const std::size_t before_dead = f.servers[1]->served;
  for (int i = 0; i < 30; ++i) {
    const int fd = f.connect(10s);
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(echo_round(fd, 100)) << i;
    ::close(fd);
  }
  EXPECT_EQ(f.servers[0]->served - before, 30u);
  EXPECT_EQ(f.servers[1]->served.load(), before_dead);
}

// The service (not its agent) behind one of two instances dies: new connections still succeed,
// first through retries on the other instance, then because the health check takes it out of the
// rotation.
TEST(MeshProcess, KilledServiceFailsOverByRetryThenByHealthCheck) {
  MeshFixture f(10, 3);
  f.servers[1].reset();  // agent n2's echo service: its port now refuses
  for (int i = 0; i < 30; ++i) {
    const int fd = f.connect(10s);
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(echo_round(fd, 100)) << i;
    ::close(fd);
  }
  EXPECT_TRUE(wait_until([&] { return f.passing_instances() == 1; }, 10s)) << f.c.agents[0]->call("routes")->dump();
  auto stats = f.c.agents[0]->call("stats");
  ASSERT_TRUE(stats);
  EXPECT_EQ((*stats)["upstreams"]["echo"]["failures"], 0u) << stats->dump();
}

}  // namespace
}  // namespace weft::mptest
