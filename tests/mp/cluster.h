#pragma once
// A cluster of real agents for the multi-process tests (tests/mp/): each test gets its own
// 127.A.B.0/24, agents n0..n(N-1), n0 the seed.

#include <gtest/gtest.h>
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

// An operator, and agents n0..n(N-1) each with a certificate for services "web" and "client".
struct TrustedCluster {
  TrustedCluster(int test_no, int n) {
    write_key(keys, "key");
    op = dir.path + "/op";
    EXPECT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
    for (int i = 0; i < n; ++i) {
      const std::string name = "n" + std::to_string(i);
      const std::string data = dir.path + "/" + name;
      EXPECT_EQ(run({weft_bin(), "identity", "init", "--data-dir", data}).code, 0);
      const std::string cert = dir.path + "/" + name + ".cert";
      RunResult r = run({weft_bin(), "cert", "sign", "--operator-key", op + "/operator.key", "--node", name,
                         "--node-key", data + "/node.pub", "--service", "web", "--service", "client", "--ttl",
                         "1h", "--out", cert});
      EXPECT_EQ(r.code, 0) << r.out;
      certs.push_back(cert);
      agents.push_back(std::make_unique<AgentProc>(name, addr_for(test_no, i), data));
    }
  }
  // Agent i's flags; it joins through agent `seed` (none if it is the seed itself).
  std::vector<std::string> args(std::size_t i, std::size_t seed = 0) const {
    std::vector<std::string> a = {"--key-file",         keys.path + "/key", "--operator-pub",
                                  op + "/operator.pub", "--cert",           certs[i]};
    if (i != seed) a.insert(a.end(), {"--join", agents[seed]->addr});
    return a;
  }
  void start(std::size_t i) { agents[i]->start(args(i)); }
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
  int signed_ = 0;
};

// A network namespace with only lo (up), removed at destruction.
struct NetNs {
  NetNs() : name("weft-mp-" + std::to_string(::getpid())) {
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

inline bool have_root_tools() { return ::geteuid() == 0 && run({"nft", "--version"}).code == 0; }

}  // namespace weft::mptest
