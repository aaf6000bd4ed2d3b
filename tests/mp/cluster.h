#pragma once
// A cluster of real agents for the multi-process tests (tests/mp/): each test gets its own
// 127.A.B.0/24, agents n0..n(N-1), n0 the seed.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace weft::mptest {

// Each test gets its own 127.A.B.0/24 so that tests (and concurrent ctest runs) never collide.
inline std::string addr_for(int test, int i) {
  return "127." + std::to_string(40 + test) + "." + std::to_string(::getpid() % 250 + 1) + "." + std::to_string(i + 1) +
         ":7946";
}

inline std::string write_key(const TempDir& t, const std::string& file) {
  RunResult k = run({weft_bin(), "keygen"});
  EXPECT_EQ(k.code, 0) << k.out;
  std::string key = k.out.substr(0, k.out.find('\n'));
  std::ofstream(t.path + "/" + file) << key << "\n";
  return key;
}

struct Cluster {
  explicit Cluster(int test_no, int n, const std::string& key_file, std::vector<std::string> extra = {},
                   std::string netns = "")
      : test(test_no), netns_(std::move(netns)) {
    for (int i = 0; i < n; ++i) {
      agents.push_back(std::make_unique<AgentProc>("n" + std::to_string(i), addr_for(test, i),
                                                   dir.path + "/n" + std::to_string(i)));
    }
    base = {"--key-file", key_file};
    base.insert(base.end(), extra.begin(), extra.end());
  }
  void start(int i, bool join = true) {
    std::vector<std::string> args = base;
    if (join && i != 0) {
      args.push_back("--join");
      args.push_back(agents[0]->addr);
    }
    agents[static_cast<std::size_t>(i)]->start(args, netns_);
  }
  void start_all() {
    start(0);
    ASSERT_TRUE(agents[0]->wait_ready()) << agents[0]->log();
    for (std::size_t i = 1; i < agents.size(); ++i) start(static_cast<int>(i));
    for (auto& a : agents) ASSERT_TRUE(a->wait_ready()) << a->log();
  }
  // Every running agent sees `name` in `status`, or, with name empty, sees `alive` members alive.
  bool all_see(const std::string& name, const std::string& status, std::set<std::size_t> skip = {}) {
    for (std::size_t i = 0; i < agents.size(); ++i) {
      if (skip.contains(i) || !agents[i]->running()) continue;
      if (agents[i]->status_of(name) != status) return false;
    }
    return true;
  }
  bool all_count_alive(std::size_t n, std::set<std::size_t> skip = {}) {
    for (std::size_t i = 0; i < agents.size(); ++i) {
      if (skip.contains(i) || !agents[i]->running()) continue;
      if (agents[i]->count("alive") != n) return false;
    }
    return true;
  }
  std::string logs() {
    std::string s;
    for (auto& a : agents) s += "---- " + a->name + "\n" + a->log();
    return s;
  }

  int test;
  std::string netns_;
  TempDir dir;
  std::vector<std::unique_ptr<AgentProc>> agents;
  std::vector<std::string> base;
};

// A network namespace with only lo (up), removed at destruction. `suffix` tells apart several
// namespaces of one test process (the pid tells apart the processes).
struct NetNs {
  explicit NetNs(const std::string& suffix = "")
      : name("weft-mp-" + std::to_string(::getpid()) + (suffix.empty() ? "" : "-" + suffix)) {
    ok = run({"ip", "netns", "add", name}).code == 0 && run({"ip", "-n", name, "link", "set", "lo", "up"}).code == 0;
  }
  ~NetNs() { run({"ip", "netns", "delete", name}); }
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  // Runs `nft -f -` inside the namespace with `rules` as the script.
  bool nft(const std::string& rules) {
    TempDir t;
    std::ofstream(t.path + "/rules.nft") << rules;
    RunResult r = run({"ip", "netns", "exec", name, "nft", "-f", t.path + "/rules.nft"});
    EXPECT_EQ(r.code, 0) << r.out;
    return r.code == 0;
  }
  // A table `name` whose input hook runs `rules` (one per line): loss and partitions on lo.
  bool input_rules(const std::string& table, const std::string& rules) {
    return nft("table inet " + table + " {\n  chain input {\n    type filter hook input priority 0; policy accept;\n" +
               rules + "  }\n}\n");
  }
  std::string name;
  bool ok = false;
};

// Hosts on one LAN, each a network namespace of its own (lo up, eth0 at lan_ip(i)/24) whose veth
// peer is a port of a bridge in one more namespace: nothing is added to the test's own namespace,
// every name carries the pid, and everything goes at destruction (a veth with its namespace).
// Each host has its own 127.0.0.1, and its connections leave from its own address, so a rule on
// a host's input (NetNs::input_rules) cuts UDP and TCP alike. ok: every step succeeded;
// have_netns: namespaces can be made at all (else the test skips).
struct NetnsLan {
  explicit NetnsLan(int hosts) : bridge("lan") {
    have_netns = bridge.ok;
    ok = bridge.ok && run({"ip", "-n", bridge.name, "link", "add", "br0", "type", "bridge"}).code == 0 &&
         run({"ip", "-n", bridge.name, "link", "set", "br0", "up"}).code == 0;
    for (int i = 0; i < hosts && ok; ++i) {
      host.push_back(std::make_unique<NetNs>("h" + std::to_string(i)));
      const std::string& h = host.back()->name;
      const std::string port = "p" + std::to_string(i);
      ok = host.back()->ok &&
           run({"ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", bridge.name})
                   .code == 0 &&
           run({"ip", "-n", bridge.name, "link", "set", port, "master", "br0"}).code == 0 &&
           run({"ip", "-n", bridge.name, "link", "set", port, "up"}).code == 0 &&
           run({"ip", "-n", h, "addr", "add", lan_ip(i) + "/24", "dev", "eth0"}).code == 0 &&
           run({"ip", "-n", h, "link", "set", "eth0", "up"}).code == 0;
    }
  }
  static std::string lan_ip(int i) { return "10.77.0." + std::to_string(i + 1); }
  const std::string& ns(std::size_t i) const { return host[i]->name; }

  NetNs bridge;
  std::vector<std::unique_ptr<NetNs>> host;  // destroyed before the bridge
  bool ok = false;
  bool have_netns = false;
};

// Runs `f` with the calling thread in network namespace `ns` ("" = stay): sockets made there
// belong to it for good, whichever thread uses them later.
template <typename F>
auto in_netns(const std::string& ns, F&& f) {
  if (ns.empty()) return f();
  const int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  const int target = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(self, 0);
  EXPECT_GE(target, 0);
  EXPECT_EQ(::setns(target, CLONE_NEWNET), 0);
  auto r = f();
  EXPECT_EQ(::setns(self, CLONE_NEWNET), 0);
  ::close(self);
  ::close(target);
  return r;
}

inline bool have_root_tools() { return ::geteuid() == 0 && run({"nft", "--version"}).code == 0; }

}  // namespace weft::mptest
