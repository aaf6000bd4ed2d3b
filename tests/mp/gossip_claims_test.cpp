// Signed gossip claims between real agents (gossip/claims.h, agent/src/gossip_claims.h): with a
// trust root every agent signs its claims and checks everyone else's against their certificates.
// An agent that holds the cluster key but no certificate is never taken as a member.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster.h"
#include "harness.h"

namespace weft::mptest {
namespace {

constexpr int kClaimsTest = 31;  // addr_for: this test's own 127.x.y.0/24

TEST(GossipClaims, AgentWithoutACertificateIsNeverAMemberOfATrustedCluster) {
  TempDir dir;
  TempDir keys;
  write_key(keys, "key");
  const std::string op = dir.path + "/op";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  std::vector<std::unique_ptr<AgentProc>> agents;
  std::vector<std::string> certs;
  for (int i = 0; i < 3; ++i) {
    const std::string name = "n" + std::to_string(i);
    const std::string data = dir.path + "/" + name;
    ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", data}).code, 0);
    certs.push_back(dir.path + "/" + name + ".cert");
    RunResult r = run({weft_bin(), "cert", "sign", "--operator-key", op + "/operator.key", "--node", name,
                       "--node-key", data + "/node.pub", "--service", "web", "--ttl", "1h", "--out", certs.back()});
    ASSERT_EQ(r.code, 0) << r.out;
    agents.push_back(std::make_unique<AgentProc>(name, addr_for(kClaimsTest, i), data));
  }
  auto trusted = [&](std::size_t i) {
    std::vector<std::string> a = {"--key-file", keys.path + "/key", "--operator-pub", op + "/operator.pub",
                                  "--cert", certs[i]};
    if (i != 0) a.insert(a.end(), {"--join", agents[0]->addr});
    return a;
  };
  agents[0]->start(trusted(0));
  ASSERT_TRUE(agents[0]->wait_ready()) << agents[0]->log();
  agents[1]->start(trusted(1));
  ASSERT_TRUE(agents[1]->wait_ready()) << agents[1]->log();
  // The intruder: the cluster key, no trust root, no certificate.
  AgentProc intruder("n9", addr_for(kClaimsTest, 9), dir.path + "/n9");
  intruder.start({"--key-file", keys.path + "/key", "--join", agents[0]->addr});
  ASSERT_TRUE(intruder.wait_ready()) << intruder.log();
  agents[2]->start(trusted(2));
  ASSERT_TRUE(agents[2]->wait_ready()) << agents[2]->log();

  auto logs = [&] {
    std::string s;
    for (auto& a : agents) s += "---- " + a->name + "\n" + a->log();
    return s + "---- intruder\n" + intruder.log();
  };
  // The certified agents find each other (their signed claims verify)...
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& a : agents) {
          if (a->count("alive") != 3) return false;
        }
        return true;
      },
      20s))
      << logs();
  // ... and never take the intruder, however long it keeps trying (join retries, gossip,
  // push-pull: its unsigned alive is refused each time).
  std::this_thread::sleep_for(3s);
  for (auto& a : agents) {
    EXPECT_FALSE(a->status_of("n9").has_value()) << a->name << " lists the intruder";
    EXPECT_EQ(a->count("alive"), 3u) << a->name;
    auto s = a->call("info");  // `weft info`: stats.gossip
    ASSERT_TRUE(s);
    EXPECT_GT((*s)["stats"]["gossip"]["claims_verified"].get<std::uint64_t>(), 0u) << a->name;
    EXPECT_GT((*s)["stats"]["gossip"]["claims_signed"].get<std::uint64_t>(), 0u) << a->name;
  }
  std::uint64_t rejected = 0;
  for (auto& a : agents) {
    auto s = a->call("info");
    ASSERT_TRUE(s);
    rejected += (*s)["stats"]["gossip"]["claims_rejected"].get<std::uint64_t>();
  }
  EXPECT_GT(rejected, 0u) << "nobody refused the intruder's claims";
}

}  // namespace
}  // namespace weft::mptest
