#pragma once
// Shared by the trust and policy tests (tests/mp/): a trusted cluster (an operator key, agents
// with certificates for "web" and "client") and a tiny echo service for end-to-end enforcement
// checks.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster.h"
#include "harness.h"

namespace weft::mptest {

// A TCP port on 127.0.0.1 that nothing holds now, for an upstream listener. Below the ephemeral
// range (32768..60999): a test running beside this one (ctest -j) that binds port 0 is never
// given it (CI once found a fixed port in that range taken).
inline std::uint16_t free_low_port(int base) {
  for (int i = 0; i < 4000; ++i) {
    const auto p = static_cast<std::uint16_t>(base + (::getpid() + i) % 4000);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(p);
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(fd);
    if (free) return p;
  }
  return 0;
}

// An operator, and agents n0..n(N-1) each with a certificate for services "web" and "client".
struct TrustedCluster {
  TrustedCluster(int test_no, int n) {
    init();
    for (int i = 0; i < n; ++i) add(addr_for(test_no, i), "");
  }
  // Agent i at addrs[i], run in network namespace netns[i] ("": this one), with `extra` flags.
  TrustedCluster(const std::vector<std::string>& addrs, std::vector<std::string> netns,
                 std::vector<std::string> extra)
      : extra_(std::move(extra)) {
    init();
    for (std::size_t i = 0; i < addrs.size(); ++i) add(addrs[i], i < netns.size() ? netns[i] : "");
  }
  void init() {
    write_key(keys, "key");
    op = dir.path + "/op";
    EXPECT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  }
  void add(const std::string& addr, const std::string& ns) {
    const std::string name = "n" + std::to_string(agents.size());
    const std::string data = dir.path + "/" + name;
    EXPECT_EQ(run({weft_bin(), "identity", "init", "--data-dir", data}).code, 0);
    const std::string cert = dir.path + "/" + name + ".cert";
    RunResult r = run({weft_bin(), "cert", "sign", "--operator-key", op + "/operator.key", "--node", name,
                       "--node-key", data + "/node.pub", "--service", "web", "--service", "client", "--ttl",
                       "1h", "--out", cert});
    EXPECT_EQ(r.code, 0) << r.out;
    certs.push_back(cert);
    agents.push_back(std::make_unique<AgentProc>(name, addr, data));
    netns_.push_back(ns);
  }
  // Agent i's flags; it joins through agent `seed` (none if it is the seed itself).
  std::vector<std::string> args(std::size_t i, std::size_t seed = 0) const {
    std::vector<std::string> a = {"--key-file",         keys.path + "/key", "--operator-pub",
                                  op + "/operator.pub", "--cert",           certs[i]};
    if (i != seed) a.insert(a.end(), {"--join", agents[seed]->addr});
    a.insert(a.end(), extra_.begin(), extra_.end());
    return a;
  }
  void start(std::size_t i) { agents[i]->start(args(i), netns_[i]); }
  void start_all() {
    start(0);
    ASSERT_TRUE(agents[0]->wait_ready()) << agents[0]->log();
    for (std::size_t i = 1; i < agents.size(); ++i) start(i);
    for (auto& a : agents) ASSERT_TRUE(a->wait_ready()) << a->log();
  }
  // Signs a policy with `version`; returns the signed file.
  std::string sign(std::uint64_t version, const std::string& extra = "",
                   const std::string& cluster = "default", const std::string& key_dir = "") {
    const std::string base = dir.path + "/p" + std::to_string(version) + "-" + std::to_string(signed_++);
    write_file(base + ".toml", "cluster = \"" + cluster + "\"\nversion = " + std::to_string(version) +
                                   "\ndefault = \"deny\"\n" + extra +
                                   "[[rule]]\nfrom = \"client\"\nto = \"web\"\naction = \"allow\"\n");
    RunResult r = run({weft_bin(), "policy", "sign", base + ".toml", "--operator-key",
                       (key_dir.empty() ? op : key_dir) + "/operator.key", "--out", base + ".signed"});
    EXPECT_EQ(r.code, 0) << r.out;
    return base + ".signed";
  }
  // Signs the policy `toml` (the whole text); returns the signed file.
  std::string sign_text(const std::string& toml) {
    const std::string base = dir.path + "/t" + std::to_string(signed_++);
    write_file(base + ".toml", toml);
    RunResult r = run({weft_bin(), "policy", "sign", base + ".toml", "--operator-key", op + "/operator.key",
                       "--out", base + ".signed"});
    EXPECT_EQ(r.code, 0) << r.out;
    return base + ".signed";
  }
  RunResult apply(std::size_t i, const std::string& file) {
    return run({weft_bin(), "policy", "apply", file, "--rpc", agents[i]->rpc()});
  }
  // The version agent i enforces (0: none or no answer).
  std::uint64_t version_of(std::size_t i) {
    auto r = agents[i]->call("policy", json::object(), 1s);
    if (!r || !(*r)["policy"].is_object()) return 0;
    return (*r)["policy"]["version"].get<std::uint64_t>();
  }
  std::string logs() {
    std::string s;
    for (auto& a : agents) s += "---- " + a->name + "\n" + a->log();
    return s;
  }

  TempDir dir;
  TempDir keys;
  std::string op;
  std::vector<std::string> certs;
  std::vector<std::unique_ptr<AgentProc>> agents;
  std::vector<std::string> netns_;  // per agent; "" = the test's own namespace
  std::vector<std::string> extra_;  // flags for every agent
  int signed_ = 0;
};

// A thread per connection echoing bytes back (enough for a handful of test connections).
class TinyEcho {
 public:
  TinyEcho() {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(lfd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(lfd_, 64), 0);
    socklen_t len = sizeof sa;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    accepter_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(lfd_, nullptr, nullptr);
        if (c < 0) return;  // shut down
        std::thread([c] {
          char buf[4096];
          for (;;) {
            const ssize_t n = ::recv(c, buf, sizeof buf, 0);
            if (n <= 0 || ::send(c, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) break;
          }
          ::close(c);
        }).detach();
      }
    });
  }
  ~TinyEcho() {
    ::shutdown(lfd_, SHUT_RDWR);
    accepter_.join();
    ::close(lfd_);
  }
  TinyEcho(const TinyEcho&) = delete;
  TinyEcho& operator=(const TinyEcho&) = delete;
  std::uint16_t port = 0;

 private:
  int lfd_ = -1;
  std::thread accepter_;
};

// A TCP socket to 127.0.0.1:port whose receives time out after `timeout_s` seconds: the socket
// (always; the caller closes it) and connect's errno (0: connected).
inline std::pair<int, int> dial_loopback(std::uint16_t port, int timeout_s) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  return {fd, rc == 0 ? 0 : errno};
}

// A connection to 127.0.0.1:port over which "ping" came back within 2 s (receives time out
// after 2 s), or -1.
inline int echo_connection(std::uint16_t port) {
  const auto [fd, connect_errno] = dial_loopback(port, 2);
  bool ok = false;
  if (connect_errno == 0 && ::send(fd, "ping", 4, MSG_NOSIGNAL) == 4) {
    char buf[4];
    std::size_t got = 0;
    while (got < 4) {
      const ssize_t n = ::recv(fd, buf + got, 4 - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    ok = got == 4 && std::string(buf, 4) == "ping";
  }
  if (ok) return fd;
  ::close(fd);
  return -1;
}

// One connection to 127.0.0.1:port: true if "ping" comes back within 2 s.
inline bool echoes(std::uint16_t port) {
  const int fd = echo_connection(port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

}  // namespace weft::mptest
