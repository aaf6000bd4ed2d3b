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
#include "trusted_cluster.h"

namespace weft::mptest {
namespace {

constexpr int kClaimsTest = 31;  // addr_for: this test's own 127.x.y.0/24

TEST(GossipClaims, AgentWithoutACertificateIsNeverAMemberOfATrustedCluster) {
  TrustedCluster c(kClaimsTest, 3);
  c.start(0);
  ASSERT_TRUE(c.agents[0]->wait_ready()) << c.agents[0]->log();
  c.start(1);
  ASSERT_TRUE(c.agents[1]->wait_ready()) << c.agents[1]->log();
  // The intruder: the cluster key, no trust root, no certificate.
  AgentProc intruder("n9", addr_for(kClaimsTest, 9), c.dir.path + "/n9");
  intruder.start({"--key-file", c.keys.path + "/key", "--join", c.agents[0]->addr});
  ASSERT_TRUE(intruder.wait_ready()) << intruder.log();
  c.start(2);
  ASSERT_TRUE(c.agents[2]->wait_ready()) << c.agents[2]->log();
  auto& agents = c.agents;
  auto logs = [&] { return c.logs() + "---- intruder\n" + intruder.log(); };
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
