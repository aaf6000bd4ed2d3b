// The mesh data plane proxy (transport/proxy.h), end to end in one process on 127.0.0.1: proxies
// "a" (the app side), "b" and "c" (service sides) with fresh Noise keys, small blocking test
// services on b / c, and apps that are plain blocking sockets. Every wait polls with a deadline;
// every socket has a receive/send timeout, so a hang fails the test instead of blocking it (the
// shared helpers: proxy_harness.h; the trust root's tests: proxy_trust_test.cpp).

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "proxy_harness.h"
#include "proxy_impl.h"  // the payload codecs (transport/src)
#include "weft/transport/mux_frame.h"
#include "weft/transport/noise.h"
#include "weft/transport/proxy.h"
#include "weft/transport/record.h"

namespace weft::transport {
namespace {

using namespace std::chrono_literals;
using Digest = std::array<unsigned char, crypto_hash_sha256_BYTES>;

class Sha256 {
 public:
  Sha256() { crypto_hash_sha256_init(&state_); }
  void update(const void* p, std::size_t n) {
    crypto_hash_sha256_update(&state_, static_cast<const unsigned char*>(p), n);
  }
  Digest final() {
    Digest d{};
    crypto_hash_sha256_final(&state_, d.data());
    return d;
  }

 private:
  crypto_hash_sha256_state state_{};
};

// 64 MiB through a -> b -> echo -> b -> a, written in random sizes (1 B .. 1 MiB) while the echo
// comes back; SHA-256 of what was sent and of what came back must agree, and the counters too.
TEST_F(ProxyTest, BulkBothWaysByteExact) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  constexpr std::size_t kTotal = 64u << 20;
  Digest sent{};
  std::thread writer([&] {
    Sha256 h;
    std::mt19937_64 rng(42);
    std::vector<unsigned char> buf(1u << 20);
    std::size_t done = 0;
    while (done < kTotal) {
      const std::size_t n = std::min<std::size_t>(kTotal - done, 1 + rng() % buf.size());
      for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(buf.data() + i, &v, std::min<std::size_t>(8, n - i));
      }
      h.update(buf.data(), n);
      if (!send_all(fd, buf.data(), n)) break;
      done += n;
    }
    ::shutdown(fd, SHUT_WR);
    sent = h.final();
  });
  Sha256 h;
  std::size_t got = 0;
  std::vector<char> buf(1u << 20);
  bool eof = false;
  for (;;) {
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r <= 0) {
      eof = r == 0;
      break;
    }
    h.update(buf.data(), static_cast<std::size_t>(r));
    got += static_cast<std::size_t>(r);
  }
  writer.join();
  ::close(fd);
  EXPECT_TRUE(eof);
  EXPECT_EQ(got, kTotal);
  EXPECT_EQ(h.final(), sent);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].active == 0; }));
  const auto sa = a_.proxy->stats();
  const auto sb = b_.proxy->stats();
  EXPECT_EQ(sa.upstreams.at("echo").bytes_out, kTotal);
  EXPECT_EQ(sa.upstreams.at("echo").bytes_in, kTotal);
  EXPECT_EQ(sa.upstreams.at("echo").connections, 1u);
  EXPECT_EQ(sa.upstreams.at("echo").failures, 0u);
  EXPECT_EQ(sb.services.at("echo").bytes_in, kTotal);
  EXPECT_EQ(sb.services.at("echo").bytes_out, kTotal);
  EXPECT_EQ(sa.sessions_initiated, 1u);
  EXPECT_EQ(sb.sessions_accepted, 1u);
  EXPECT_EQ(sa.records_rejected + sb.records_rejected + sa.protocol_errors + sb.protocol_errors, 0u);
}

// 200 app connections at once (most arrive while the session is still handshaking), each with
// its own bytes; every one comes back intact over one pooled session.
TEST_F(ProxyTest, TwoHundredConcurrentConnections) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  constexpr int kConns = 200;
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) {
    fds.push_back(dial(port));
    ASSERT_GE(fds.back(), 0);
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kConns; ++i) {
    clients.emplace_back([&, i] {
      std::string msg(4096 + static_cast<std::size_t>(i) * 37, static_cast<char>('A' + i % 26));
      msg += std::to_string(i);
      if (!send_all(fds[static_cast<std::size_t>(i)], msg.data(), msg.size())) return;
      ::shutdown(fds[static_cast<std::size_t>(i)], SHUT_WR);
      std::string back;
      if (read_all(fds[static_cast<std::size_t>(i)], back) && back == msg) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(ok.load(), kConns);
  EXPECT_EQ(echo.accepted.load(), kConns);
  ASSERT_TRUE(wait_until([&] {
    const auto s = a_.proxy->stats();
    return s.upstreams.at("echo").active == 0 && s.connections_open == 0;
  }));
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.sessions_initiated, 1u);
  EXPECT_EQ(s.upstreams.at("echo").connections, static_cast<std::uint64_t>(kConns));
  EXPECT_EQ(s.upstreams.at("echo").failures, 0u);
  EXPECT_EQ(s.bytes_buffered, 0u);
}

// The app shuts down its write side; the service sees EOF only then, and its answer still
// reaches the app.
TEST_F(ProxyTest, HalfCloseCarriesTheReply) {
  TestService svc(TestService::Mode::kCountThenReply);
  pair("count", svc.port());
  const std::uint16_t port = add_upstream(a_, "count");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  const std::string msg(100000, 'z');
  ASSERT_TRUE(send_all(fd, msg.data(), msg.size()));
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  std::string reply;
  EXPECT_TRUE(read_all(fd, reply));
  EXPECT_EQ(reply, "n=100000");
  ::close(fd);
}

// The peer does not serve the service: the app's connection is closed, not left hanging, and
// both ends count it.
TEST_F(ProxyTest, UnknownServiceClosesTheConnection) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  a_.proxy->set_routes(table({{"nosuch", {instance(b_)}}}, {&b_}));
  const std::uint16_t port = add_upstream(a_, "nosuch");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  send_all(fd, "hello", 5);
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["nosuch"].failures == 1; }));
  EXPECT_EQ(b_.proxy->stats().streams_refused, 1u);
  EXPECT_EQ(echo.accepted.load(), 0);
}

// b was told a different key for "a": the handshake is refused, counted, and nothing reaches
// the service.
TEST_F(ProxyTest, MismatchedPeerKeyIsRefused) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  Node impostor;
  impostor.name = "a";
  impostor.kp = NoiseKeyPair::generate();
  b_.proxy->set_routes(table({}, {&impostor}, {{"echo", echo.port()}}));
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  send_all(fd, "secret", 6);
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().handshakes_failed >= 1; }));
  EXPECT_EQ(echo.accepted.load(), 0);
  EXPECT_EQ(b_.proxy->stats().services.count("echo"), 0u);
  EXPECT_GE(a_.proxy->stats().upstreams["echo"].failures, 1u);
}

// The service's listener is gone: new connections end at once (RESET connect_failed), counted
// on both sides.
TEST_F(ProxyTest, DeadServiceFailsNewConnectionsCleanly) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  {
    const int fd = dial(port);  // works first
    ASSERT_GE(fd, 0);
    send_all(fd, "ping", 4);
    ::shutdown(fd, SHUT_WR);
    std::string back;
    EXPECT_TRUE(read_all(fd, back));
    EXPECT_EQ(back, "ping");
    ::close(fd);
  }
  echo.close_listener();
  for (int i = 0; i < 3; ++i) {
    const int fd = dial(port);
    ASSERT_GE(fd, 0);
    send_all(fd, "ping", 4);
    EXPECT_NE(wait_end(fd), End::kTimeout);
    ::close(fd);
  }
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 3; }));
  EXPECT_EQ(b_.proxy->stats().services["echo"].failures, 3u);
}


// Two instances; the one marked unhealthy in a new route table gets no new connection.
TEST_F(ProxyTest, UnhealthyInstanceLeavesTheRotation) {
  Three t;
  t.b.proxy->set_routes(table({}, {&t.a}, {{"echo", t.sb.port()}}));
  t.c.proxy->set_routes(table({}, {&t.a}, {{"echo", t.sc.port()}}));
  t.a.proxy->set_routes(table({{"echo", {instance(t.b), instance(t.c, false)}}}, {&t.b, &t.c}));
  const std::uint16_t port = add_upstream(t.a, "echo", Balance::kRoundRobin);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(round_trip(port, "x" + std::to_string(i)));
  EXPECT_EQ(t.sb.accepted.load(), 10);
  EXPECT_EQ(t.sc.accepted.load(), 0);
  t.a.proxy->set_routes(table({{"echo", {instance(t.b, false), instance(t.c)}}}, {&t.b, &t.c}));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(round_trip(port, "y" + std::to_string(i)));
  EXPECT_EQ(t.sb.accepted.load(), 10);
  EXPECT_EQ(t.sc.accepted.load(), 10);
  const auto s = t.a.proxy->stats();
  ASSERT_EQ(s.routes.at("echo").size(), 2u);
  EXPECT_FALSE(s.routes.at("echo")[0].healthy);
}

// b's service port refuses: connections that try b first are retried on c (the bytes sent
// before the RESET are replayed), succeed, and count as retries.
TEST_F(ProxyTest, RefusedInstanceIsRetriedOnAnother) {
  Three t;
  std::uint16_t dead_port = 0;
  {
    TestService gone(TestService::Mode::kEcho);
    dead_port = gone.port();
  }  // closed: connect() to it is refused
  t.b.proxy->set_routes(table({}, {&t.a}, {{"echo", dead_port}}));
  t.c.proxy->set_routes(table({}, {&t.a}, {{"echo", t.sc.port()}}));
  t.a.proxy->set_routes(table({{"echo", {instance(t.b), instance(t.c)}}}, {&t.b, &t.c}));
  const std::uint16_t port = add_upstream(t.a, "echo", Balance::kRoundRobin);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(round_trip(port, std::string(1000, 'r') + std::to_string(i)));
  EXPECT_EQ(t.sc.accepted.load(), 6);
  const auto s = t.a.proxy->stats();
  EXPECT_GE(s.upstreams.at("echo").retries, 1u);
  EXPECT_EQ(s.upstreams.at("echo").failures, 0u);
  EXPECT_GE(t.b.proxy->stats().services["echo"].failures, 1u);
}

// An app that never reads while the service writes 64 MiB: the proxies hold at most about a
// stream window and a session backlog, and the service is held back by TCP.
TEST_F(ProxyTest, SlowReaderKeepsMemoryBounded) {
  constexpr std::size_t kSource = 64u << 20;
  TestService src(TestService::Mode::kSource, kSource);
  pair("src", src.port());
  const std::uint16_t port = add_upstream(a_, "src");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  int small = 64 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  send_all(fd, "go", 2);
  // Wait until the service is stuck: nothing written for a while.
  std::size_t last = 0;
  auto stable_since = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] {
    const std::size_t w = src.written.load();
    if (w != last) {
      last = w;
      stable_since = std::chrono::steady_clock::now();
      return false;
    }
    return w > 0 && std::chrono::steady_clock::now() - stable_since > 300ms;
  }, 20s));
  EXPECT_LT(src.written.load(), kSource / 4);
  constexpr std::uint64_t kBound = 3u << 20;
  EXPECT_LT(a_.proxy->stats().bytes_buffered, kBound);
  EXPECT_LT(b_.proxy->stats().bytes_buffered, kBound);
  EXPECT_GT(a_.proxy->stats().bytes_buffered + b_.proxy->stats().bytes_buffered, 0u);
  // Now read everything: the flow resumes and ends intact.
  std::size_t got = 0;
  std::vector<char> buf(1u << 20);
  for (;;) {
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  EXPECT_EQ(got, kSource);
  ::close(fd);
}

// remove_upstream closes the listener; a connection already through it finishes.
TEST_F(ProxyTest, RemoveUpstreamLetsLiveConnectionsFinish) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  send_all(fd, "one", 3);
  char buf[3];
  ASSERT_EQ(::recv(fd, buf, 3, MSG_WAITALL), 3);
  ASSERT_TRUE(a_.proxy->remove_upstream("echo").has_value());
  EXPECT_EQ(dial(port), -1);
  send_all(fd, "two", 3);
  ::shutdown(fd, SHUT_WR);
  std::string rest;
  EXPECT_TRUE(read_all(fd, rest));
  EXPECT_EQ(rest, "two");
  ::close(fd);
}


// The peer proxy goes away in the middle of a stream: the app sees a reset, never a clean EOF
// that would pass for the end of the data.
TEST_F(ProxyTest, PeerGoneMidStreamResetsTheApp) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  send_all(fd, "one", 3);
  char buf[3];
  ASSERT_EQ(::recv(fd, buf, 3, MSG_WAITALL), 3);
  b_.proxy.reset();
  EXPECT_EQ(wait_end(fd), End::kReset);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  EXPECT_EQ(a_.proxy->stats().sessions_open, 0u);
}

// A mesh endpoint that takes the TCP connection but never answers the handshake: the session
// times out after connect_timeout, and the app's connection is reset.
TEST_F(ProxyTest, SilentPeerTimesOut) {
  ProxyConfig cfg;
  cfg.connect_timeout = 300ms;
  a_ = make_node("a", cfg);
  TestService hole(TestService::Mode::kCountThenReply);  // accepts, reads, never answers in time
  Node fake;
  fake.name = "b";
  fake.kp = NoiseKeyPair::generate();
  a_.proxy->set_routes(table({{"echo", {{"b", Endpoint::v4(127, 0, 0, 1, hole.port()), true}}}}, {&fake}));
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_end(fd), End::kReset);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.handshakes_failed, 1u);
  EXPECT_EQ(s.sessions_failed, 1u);
  EXPECT_EQ(s.sessions_open, 0u);
}

// A proxied connection without traffic for idle_timeout is reset and counted.
TEST_F(ProxyTest, IdleConnectionTimesOut) {
  TestService echo(TestService::Mode::kEcho);
  ProxyConfig cfg;
  cfg.idle_timeout = 300ms;
  pair("echo", echo.port(), cfg);
  const std::uint16_t port = add_upstream(a_, "echo");
  const int fd = dial(port);
  ASSERT_GE(fd, 0);
  send_all(fd, "one", 3);
  char buf[3];
  ASSERT_EQ(::recv(fd, buf, 3, MSG_WAITALL), 3);
  EXPECT_EQ(wait_end(fd), End::kReset);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().connections_open == 0 && b_.proxy->stats().connections_open == 0; }));
}

// A session without streams closes after session_idle with close records both ways (nothing
// counted as an error), and the next connection dials a new one.
TEST_F(ProxyTest, IdleSessionClosesOrderly) {
  TestService echo(TestService::Mode::kEcho);
  ProxyConfig cfg;
  cfg.session_idle = 200ms;
  pair("echo", echo.port(), cfg);
  const std::uint16_t port = add_upstream(a_, "echo");
  EXPECT_TRUE(round_trip(port, "first"));
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().sessions_open == 0 && b_.proxy->stats().sessions_open == 0; }));
  for (const auto& s : {a_.proxy->stats(), b_.proxy->stats()}) {
    EXPECT_EQ(s.sessions_failed, 0u);
    EXPECT_EQ(s.records_rejected, 0u);
    EXPECT_EQ(s.protocol_errors, 0u);
  }
  EXPECT_TRUE(round_trip(port, "second"));
  EXPECT_EQ(a_.proxy->stats().sessions_initiated, 2u);
}

// Consecutive failures eject an instance for eject_for: it shows as ejected and is skipped.
TEST_F(ProxyTest, FailingInstanceIsEjected) {
  ProxyConfig cfg;
  cfg.eject_after_failures = 2;
  Three t;
  t.a = make_node("a", cfg);
  std::uint16_t dead_port = 0;
  {
    TestService gone(TestService::Mode::kEcho);
    dead_port = gone.port();
  }
  t.b.proxy->set_routes(table({}, {&t.a}, {{"echo", dead_port}}));
  t.c.proxy->set_routes(table({}, {&t.a}, {{"echo", t.sc.port()}}));
  t.a.proxy->set_routes(table({{"echo", {instance(t.b), instance(t.c)}}}, {&t.b, &t.c}));
  const std::uint16_t port = add_upstream(t.a, "echo", Balance::kRoundRobin);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(round_trip(port, "e" + std::to_string(i)));
  const auto s = t.a.proxy->stats();
  EXPECT_EQ(s.upstreams.at("echo").ejections, 1u);
  ASSERT_EQ(s.routes.at("echo").size(), 2u);
  EXPECT_TRUE(s.routes.at("echo")[0].ejected);
  EXPECT_FALSE(s.routes.at("echo")[1].ejected);
  // Once ejected, b is not tried: 2 failed tries before the ejection, none after.
  EXPECT_EQ(t.b.proxy->stats().services["echo"].failures, 2u);
}

// Idle proxied connections keep no stream buffers in the proxy.
TEST_F(ProxyTest, IdleConnectionsHoldNoBuffers) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  std::vector<int> fds;
  const std::string msg(300 * 1024, 'i');
  for (int i = 0; i < 20; ++i) {
    const int fd = dial(port);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    ASSERT_TRUE(send_all(fd, msg.data(), msg.size()));
    std::string back(msg.size(), '\0');
    ASSERT_EQ(::recv(fd, back.data(), back.size(), MSG_WAITALL), static_cast<ssize_t>(msg.size()));
  }
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().bytes_buffered == 0 && b_.proxy->stats().bytes_buffered == 0; }));
  EXPECT_EQ(a_.proxy->stats().connections_open, 20u);
  // The room that carried the 300 KiB each way is given back too, within a sweep or two (~1 s
  // each): while they were busy, each stream's send queue held about that much.
  ASSERT_TRUE(wait_until([&] {
    return a_.proxy->stats().buffer_bytes_allocated < 64 * 1024 && b_.proxy->stats().buffer_bytes_allocated < 64 * 1024;
  }));
  for (int fd : fds) ::close(fd);
}


// A hand-made peer "b": completes a real handshake (XChaCha20-Poly1305, which every proxy
// offers), then misbehaves as `act` says. Blocking sockets on its own thread.
class FakePeer {
 public:
  enum class Act { kCutWithoutClose, kGarbage, kBadMuxFrame };
  explicit FakePeer(Act act) : act_(act), kp_(NoiseKeyPair::generate()) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin = loopback(0);
    ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
    ::listen(listen_fd_, 4);
    socklen_t len = sizeof sin;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~FakePeer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  [[nodiscard]] RouteInstance instance() const { return {"b", Endpoint::v4(127, 0, 0, 1, port_), true}; }
  [[nodiscard]] const NoiseKeyPair& kp() const { return kp_; }
  std::atomic<bool> handshake_done{false};

 private:
  static bool read_exact(int fd, std::byte* p, std::size_t n) {
    return n == 0 || ::recv(fd, p, n, MSG_WAITALL) == static_cast<ssize_t>(n);
  }
  void run() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    set_timeouts(fd, 10s);
    serve(fd);
    ::close(fd);
  }
  void serve(int fd) {
    std::array<std::byte, 2> len{};
    if (!read_exact(fd, len.data(), 2)) return;
    std::vector<std::byte> msg1((std::to_integer<std::size_t>(len[0]) << 8) | std::to_integer<std::size_t>(len[1]));
    if (!read_exact(fd, msg1.data(), msg1.size())) return;
    const auto* pro = reinterpret_cast<const std::byte*>(kMeshPrologue.data());
    auto hs = Handshake::responder(kp_, std::span(pro, kMeshPrologue.size()));
    if (!hs.read_message(msg1)) return;
    // msgpack {"v": 1, "node": "b", "cipher": 2}, by hand.
    const unsigned char accept[] = {0x83, 0xa1, 'v', 0x01, 0xa4, 'n', 'o', 'd', 'e', 0xa1, 'b', 0xa6, 'c', 'i', 'p', 'h', 'e', 'r', 0x02};
    auto msg2 = hs.write_message(std::as_bytes(std::span(accept)));
    if (!msg2) return;
    std::vector<std::byte> out(2 + msg2->size());  // [u16 length][message]
    out[0] = static_cast<std::byte>(msg2->size() >> 8);
    out[1] = static_cast<std::byte>(msg2->size() & 0xff);
    std::copy(msg2->begin(), msg2->end(), out.begin() + 2);
    auto keys = hs.split();
    if (!keys) return;
    RecordSealer sealer(Cipher::kXChaCha20Poly1305, keys->send_key(HandshakeRole::kResponder));
    if (!send_all(fd, out.data(), out.size())) return;
    handshake_done = true;
    std::array<std::byte, 64> some{};
    if (::recv(fd, some.data(), some.size(), 0) <= 0) return;  // the OPEN has come
    out.clear();
    switch (act_) {
      case Act::kCutWithoutClose: return;  // close() without the close record
      case Act::kGarbage:
        out.assign(64, std::byte{0x5a});
        break;
      case Act::kBadMuxFrame: {
        const std::vector<std::byte> frame(kFrameHeaderBytes, std::byte{0xff});  // unknown type
        (void)sealer.seal_into(out, RecordType::kData, frame);
        break;
      }
    }
    send_all(fd, out.data(), out.size());
    std::this_thread::sleep_for(50ms);  // let a read it before the FIN
  }

  Act act_;
  NoiseKeyPair kp_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// Runs one app connection against a misbehaving peer; returns how it ended for the app.
End against(FakePeer& peer, Node& a) {
  Node fake;
  fake.name = "b";
  fake.kp = peer.kp();
  a.proxy->set_routes(table({{"echo", {peer.instance()}}}, {&fake}));
  const std::uint16_t port = add_upstream(a, "echo");
  const int fd = dial(port);
  if (fd < 0) return End::kTimeout;
  if (!send_all(fd, "data", 4)) {
    // The reset can beat the app's first write (the OPEN goes out on accept): the send reports it.
    const int e = errno;
    ::close(fd);
    return e == ECONNRESET || e == EPIPE ? End::kReset : End::kTimeout;
  }
  const End end = wait_end(fd);
  ::close(fd);
  return end;
}

TEST_F(ProxyTest, SessionCutWithoutCloseRecordResetsStreams) {
  FakePeer peer(FakePeer::Act::kCutWithoutClose);
  a_ = make_node("a");
  EXPECT_EQ(against(peer, a_), End::kReset);
  EXPECT_TRUE(peer.handshake_done.load());
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.records_rejected, 1u);
  EXPECT_EQ(s.sessions_failed, 1u);
  EXPECT_EQ(s.sessions_open, 0u);
}

TEST_F(ProxyTest, ForgedRecordKillsTheSession) {
  FakePeer peer(FakePeer::Act::kGarbage);
  a_ = make_node("a");
  EXPECT_EQ(against(peer, a_), End::kReset);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  EXPECT_EQ(a_.proxy->stats().records_rejected, 1u);
}

TEST_F(ProxyTest, MuxProtocolErrorKillsTheSession) {
  FakePeer peer(FakePeer::Act::kBadMuxFrame);
  a_ = make_node("a");
  EXPECT_EQ(against(peer, a_), End::kReset);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["echo"].failures == 1; }));
  EXPECT_EQ(a_.proxy->stats().protocol_errors, 1u);
  EXPECT_EQ(a_.proxy->stats().records_rejected, 0u);
}


// The other direction: a service that never reads while the app writes. The app is held back
// by TCP; neither proxy buffers more than about a window and a session backlog.
TEST_F(ProxyTest, StalledServiceKeepsMemoryBounded) {
  TestService stall(TestService::Mode::kStall);
  pair("stall", stall.port());
  const std::uint16_t port = add_upstream(a_, "stall");
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_in sin = loopback(port);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&sin), sizeof sin), 0);
  timeval tv{};
  tv.tv_usec = 300'000;  // a send that blocks this long: the pipe is full
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::vector<char> buf(256 * 1024, 's');
  std::size_t sent = 0;
  for (;;) {
    const ssize_t w = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (w <= 0) break;
    sent += static_cast<std::size_t>(w);
    ASSERT_LT(sent, std::size_t{256} << 20) << "nothing holds the app back";
  }
  EXPECT_GT(sent, 0u);
  constexpr std::uint64_t kBound = 3u << 20;
  EXPECT_LT(a_.proxy->stats().bytes_buffered, kBound);
  EXPECT_LT(b_.proxy->stats().bytes_buffered, kBound);
  ::close(fd);
}

// Latency samples feed the peak-EWMA view and the histogram: one sample per connection that got
// an answer.
TEST_F(ProxyTest, LatencyIsMeasuredPerInstance) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(round_trip(port, "lat" + std::to_string(i)));
  const auto s = a_.proxy->stats();
  std::uint64_t samples = 0;
  for (auto n : s.upstreams.at("echo").latency_us_log2) samples += n;
  EXPECT_EQ(samples, 5u);
  ASSERT_EQ(s.routes.at("echo").size(), 1u);
  const auto& v = s.routes.at("echo")[0];
  EXPECT_EQ(v.node, "b");
  EXPECT_GT(v.rtt_ms, 0.0);
  EXPECT_GT(v.weight, 0.0);
  EXPECT_EQ(v.active, 0u);
  EXPECT_FALSE(v.ejected);
}

// The peer's handshake and OPEN payloads are untrusted: every prefix of a valid one and random
// bytes give "no value", never an exception or a crash.
TEST(ProxyWire, PayloadDecodersRejectPrefixesAndNoise) {
  const std::vector<std::byte> cert(300, std::byte{0xc7});  // any bytes: the codec does not look inside
  const auto hello = encode_hello({"node-a", {Cipher::kAes256Gcm, Cipher::kXChaCha20Poly1305}, cert});
  const auto accept = encode_accept({"node-b", Cipher::kXChaCha20Poly1305, cert});
  const auto open = encode_open("web", "client");
  ASSERT_TRUE(decode_hello(hello).has_value());
  EXPECT_EQ(decode_hello(hello)->node, "node-a");
  EXPECT_EQ(decode_hello(hello)->ciphers.size(), 2u);
  ASSERT_TRUE(decode_accept(accept).has_value());
  EXPECT_EQ(decode_accept(accept)->cipher, Cipher::kXChaCha20Poly1305);
  ASSERT_EQ(decode_open(open).value_or(""), "web");
  EXPECT_EQ(decode_hello(hello)->cert, cert);
  EXPECT_EQ(decode_accept(accept)->cert, cert);
  ASSERT_TRUE(decode_open_request(open).has_value());
  EXPECT_EQ(decode_open_request(open)->from, "client");
  EXPECT_EQ(decode_open_request(encode_open("web"))->from, "");  // anonymous: no "from" key
  // Without a certificate the maps are as before issue 5 (an older peer reads them).
  EXPECT_TRUE(decode_hello(encode_hello({"node-a", {Cipher::kXChaCha20Poly1305}, {}}))->cert.empty());
  EXPECT_TRUE(decode_accept(encode_accept({"node-b", Cipher::kXChaCha20Poly1305, {}}))->cert.empty());
  // A certificate over kMaxCertBytes is refused before anything is kept.
  EXPECT_FALSE(decode_hello(encode_hello({"node-a", {Cipher::kXChaCha20Poly1305}, std::vector<std::byte>(kMaxCertBytes + 1)})));
  for (std::size_t n = 0; n < hello.size(); ++n) EXPECT_FALSE(decode_hello(std::span(hello).first(n))) << n;
  for (std::size_t n = 0; n < accept.size(); ++n) EXPECT_FALSE(decode_accept(std::span(accept).first(n))) << n;
  for (std::size_t n = 0; n < open.size(); ++n) EXPECT_FALSE(decode_open(std::span(open).first(n))) << n;
  EXPECT_FALSE(decode_open(accept));  // no "service"
  std::mt19937_64 rng(7);
  std::vector<std::byte> noise;
  for (int i = 0; i < 20000; ++i) {
    noise.resize(rng() % 64);
    for (auto& b : noise) b = static_cast<std::byte>(rng());
    if (!noise.empty() && i % 2 == 0) noise[0] = std::byte{0x82};  // a fixmap header, to go deeper
    (void)decode_hello(noise);
    (void)decode_accept(noise);
    (void)decode_open(noise);
    (void)decode_open_request(noise);
  }
}


// A peer whose handshake hangs does not hold up traffic to another peer.
TEST_F(ProxyTest, HungHandshakeDoesNotBlockOtherSessions) {
  TestService echo(TestService::Mode::kEcho);
  TestService hole(TestService::Mode::kStall);  // takes the TCP connection, never answers
  pair("echo", echo.port());
  Node fake;
  fake.name = "z";
  fake.kp = NoiseKeyPair::generate();
  a_.proxy->set_routes(table({{"echo", {instance(b_)}}, {"hole", {{"z", Endpoint::v4(127, 0, 0, 1, hole.port()), true}}}},
                             {&b_, &fake}));
  const std::uint16_t hole_port = add_upstream(a_, "hole");
  const std::uint16_t echo_port = add_upstream(a_, "echo");
  const int stuck = dial(hole_port);
  ASSERT_GE(stuck, 0);
  ASSERT_TRUE(wait_until([&] { return hole.accepted.load() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(round_trip(echo_port, "free" + std::to_string(i)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(a_.proxy->stats().upstreams["hole"].active, 1u);  // still waiting, bounded by connect_timeout
  ::close(stuck);
}

// Peak-EWMA P2C: once both instances have been measured, new connections go to the faster one.
TEST_F(ProxyTest, PeakEwmaPrefersTheFasterInstance) {
  TestService slow(TestService::Mode::kSlowEcho);
  TestService fast(TestService::Mode::kEcho);
  Node a = make_node("a");
  Node b = make_node("b");
  Node c = make_node("c");
  b.proxy->set_routes(table({}, {&a}, {{"echo", slow.port()}}));
  c.proxy->set_routes(table({}, {&a}, {{"echo", fast.port()}}));
  a.proxy->set_routes(table({{"echo", {instance(b), instance(c)}}}, {&b, &c}));
  const std::uint16_t port = add_upstream(a, "echo", Balance::kPeakEwma);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(round_trip(port, "p" + std::to_string(i)));
  EXPECT_GE(fast.accepted.load(), 18);
  EXPECT_LE(slow.accepted.load(), 2);
  const auto s = a.proxy->stats();
  ASSERT_EQ(s.routes.at("echo").size(), 2u);
  EXPECT_GT(s.routes.at("echo")[1].weight, s.routes.at("echo")[0].weight);
}


// The slow instance is not starved for good: while it gets no traffic its estimate decays, so under
// steady traffic it is sampled again now and then (and, still slow, loses again).
TEST_F(ProxyTest, PeakEwmaSamplesAnIdleSlowInstanceAgain) {
  TestService slow(TestService::Mode::kSlowEcho);
  TestService fast(TestService::Mode::kEcho);
  ProxyConfig cfg;
  cfg.ewma_decay = 150ms;
  Node a = make_node("a", cfg);
  Node b = make_node("b");
  Node c = make_node("c");
  b.proxy->set_routes(table({}, {&a}, {{"echo", slow.port()}}));
  c.proxy->set_routes(table({}, {&a}, {{"echo", fast.port()}}));
  a.proxy->set_routes(table({{"echo", {instance(b), instance(c)}}}, {&b, &c}));
  const std::uint16_t port = add_upstream(a, "echo", Balance::kPeakEwma);
  const auto end = std::chrono::steady_clock::now() + 2s;
  int i = 0;
  while (std::chrono::steady_clock::now() < end) EXPECT_TRUE(round_trip(port, "p" + std::to_string(i++)));
  EXPECT_GE(slow.accepted.load(), 3) << "sampled again after its estimate decayed";
  EXPECT_GT(fast.accepted.load(), 3 * slow.accepted.load()) << "and still the less chosen";
}

// A flood of silent TCP connections to the mesh port costs at most kMaxHandshaking sessions;
// once they go, real peers get through again.
TEST_F(ProxyTest, HandshakeFloodIsBounded) {
  TestService echo(TestService::Mode::kEcho);
  pair("echo", echo.port());
  const std::uint16_t port = add_upstream(a_, "echo");
  std::vector<int> silent;
  for (int i = 0; i < 300; ++i) {
    silent.push_back(dial(b_.proxy->mesh_endpoint().port));
    ASSERT_GE(silent.back(), 0);
  }
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().handshakes_failed == 300 - kMaxHandshaking; }));
  EXPECT_EQ(b_.proxy->stats().sessions_open, kMaxHandshaking);
  for (int fd : silent) ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().sessions_open == 0; }));
  EXPECT_TRUE(round_trip(port, "after the flood"));
}

}  // namespace
}  // namespace weft::transport
