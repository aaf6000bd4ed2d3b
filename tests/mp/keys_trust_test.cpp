// Operator-signed cluster-key rotation on real agents (issue 5): with a trust root, `weft keys
// install/use/remove` need `--operator-key`; a signed round works across three agents; a signed
// step cannot be replayed; and a cluster-key holder without an operator key (a member started
// without a trust root) cannot change the trusted members' keyrings, neither with an unsigned
// step, one signed by another operator key, nor a replayed signed one.

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>

#include "cluster.h"
#include "harness.h"
#include "trusted_cluster.h"
#include "weft/agent/rpc.h"
#include "weft/agent/trust_files.h"

namespace weft::mptest {
namespace {

constexpr int kSignedKeysTest = 30;  // addr_for: this test's own 127.x.y.0/24

std::string keygen() {
  RunResult k = run({weft_bin(), "keygen"});
  EXPECT_EQ(k.code, 0) << k.out;
  return k.out.substr(0, k.out.find('\n'));
}

// The key ids agent `a` holds, and its primary.
std::set<std::string> key_ids(AgentProc& a) {
  std::set<std::string> out;
  auto info = a.call("info");
  if (!info) return out;
  for (const json& id : (*info)["keys"]["installed"]) out.insert(id.get<std::string>());
  return out;
}
std::string primary_of(AgentProc& a) {
  auto info = a.call("info");
  return info && (*info)["keys"]["primary"].is_string() ? (*info)["keys"]["primary"].get<std::string>() : "";
}
std::uint64_t refused(AgentProc& a, const std::string& reason) {
  auto s = a.call("stats");
  return s ? (*s)["key_ops"]["refused"][reason].get<std::uint64_t>() : 0;
}

TEST(KeyRotationSigned, SignedRoundWorksUnsignedAndForgedStepsAreRefused) {
  TrustedCluster c(kSignedKeysTest, 3);
  c.start_all();
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& a : c.agents) {
          if (a->count("alive") != 3) return false;
        }
        return true;
      },
      15s))
      << c.logs();
  AgentProc& n0 = *c.agents[0];
  const std::string key = c.op + "/operator.key";
  const std::string old_primary = primary_of(n0);
  ASSERT_EQ(old_primary.size(), 8u);
  const std::string k2 = keygen();

  // Unsigned, and signed by an operator key the agents do not trust: refused by the agent asked,
  // nothing sent, nothing changed.
  expect_one_line_error(run({weft_bin(), "keys", "install", k2, "--rpc", n0.rpc()}),
                        "key operation refused (unsigned)");
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", c.dir.path + "/other"}).code, 0);
  expect_one_line_error(run({weft_bin(), "keys", "install", k2, "--operator-key", c.dir.path + "/other/operator.key",
                             "--rpc", n0.rpc()}),
                        "key operation refused (unknown issuer)");
  // Bad signing inputs: one line naming the problem, nothing sent.
  expect_one_line_error(
      run({weft_bin(), "keys", "install", k2, "--operator-key", c.dir.path + "/missing.key", "--rpc", n0.rpc()}),
      "missing.key");
  expect_one_line_error(run({weft_bin(), "keys", "install", "not-a-key", "--operator-key", key, "--rpc", n0.rpc()}),
                        "keys install: ");
  expect_one_line_error(run({weft_bin(), "keys", "install", k2, "--cluster", "default", "--rpc", n0.rpc()}),
                        "give --operator-key");
  for (auto& a : c.agents) EXPECT_EQ(key_ids(*a).size(), 1u) << a->name;
  EXPECT_EQ(refused(n0, "unsigned"), 1u);
  EXPECT_EQ(refused(n0, "unknown_issuer"), 1u);

  // A signed round: install on n0, use on n1, remove the old key (by its id) on n2.
  RunResult inst = run({weft_bin(), "keys", "install", k2, "--operator-key", key, "--rpc", n0.rpc()});
  ASSERT_EQ(inst.code, 0) << inst.out << c.logs();
  EXPECT_NE(inst.out.find("3 of 3 members answered"), std::string::npos) << inst.out;
  for (auto& a : c.agents) EXPECT_EQ(key_ids(*a).size(), 2u) << a->name;
  RunResult use = run({weft_bin(), "keys", "use", k2, "--operator-key", key, "--rpc", c.agents[1]->rpc()});
  ASSERT_EQ(use.code, 0) << use.out << c.logs();
  const std::string new_primary = primary_of(n0);
  EXPECT_NE(new_primary, old_primary);
  for (auto& a : c.agents) EXPECT_EQ(primary_of(*a), new_primary) << a->name;
  RunResult rm =
      run({weft_bin(), "keys", "remove", old_primary, "--operator-key", key, "--rpc", c.agents[2]->rpc()});
  ASSERT_EQ(rm.code, 0) << rm.out << c.logs();
  for (auto& a : c.agents) EXPECT_EQ(key_ids(*a), std::set<std::string>{new_primary}) << a->name;
  for (auto& a : c.agents) {
    auto s = a->call("stats");
    ASSERT_TRUE(s);
    EXPECT_EQ((*s)["key_ops"]["authorized"], 3) << a->name << " " << s->dump();
  }

  // A signed step is single-use: the same document again is refused as a replay.
  const auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  auto doc = agent::key_op_sign({"use", k2, "default", key, "", now});
  ASSERT_TRUE(doc) << doc.error().message;
  agent::RpcClient rpc0(n0.rpc());
  auto first = rpc0.call("keys.use", json{{"key", k2}, {"signed", *doc}}, 10s);
  ASSERT_TRUE(first) << first.error().message;
  auto again = rpc0.call("keys.use", json{{"key", k2}, {"signed", *doc}}, 10s);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("key operation refused (replayed)"), std::string::npos)
      << again.error().message;

  // A cluster-key holder without an operator key: an agent started with the current key and no
  // trust root. The trusted members never take it as a member (its gossip claims are unsigned),
  // but it learns them from its join and sends them its key steps: it applies its own, and every
  // trusted member refuses them.
  TempDir rogue_keys;
  write_file(rogue_keys.path + "/key", k2 + "\n");
  AgentProc rogue("rogue", addr_for(kSignedKeysTest, 5), c.dir.path + "/rogue");
  rogue.start({"--key-file", rogue_keys.path + "/key", "--join", n0.addr});
  ASSERT_TRUE(rogue.wait_ready()) << rogue.log();
  ASSERT_TRUE(wait_until([&] { return rogue.count("alive") == 4; }, 15s)) << rogue.log();
  EXPECT_EQ(n0.count("alive"), 3u);
  const std::string k3 = keygen();
  RunResult forged = run({weft_bin(), "keys", "install", k3, "--rpc", rogue.rpc()});
  EXPECT_NE(forged.code, 0) << forged.out;
  EXPECT_NE(forged.out.find("n0: key operation refused (unsigned)"), std::string::npos) << forged.out;
  RunResult other = run({weft_bin(), "keys", "install", k3, "--operator-key", c.dir.path + "/other/operator.key",
                         "--rpc", rogue.rpc()});
  EXPECT_NE(other.code, 0) << other.out;
  EXPECT_NE(other.out.find("n1: key operation refused (unknown issuer)"), std::string::npos) << other.out;
  // The document the operator signed above, captured and sent again by the rogue member.
  auto replay = rogue.call("keys.use", json{{"key", k2}, {"signed", *doc}}, 10s);
  ASSERT_TRUE(replay);
  EXPECT_NE(replay->dump().find("key operation refused (replayed)"), std::string::npos) << replay->dump();
  for (auto& a : c.agents) {
    EXPECT_EQ(key_ids(*a), std::set<std::string>{new_primary}) << a->name;
    EXPECT_GE(refused(*a, "unsigned"), 1u) << a->name;
    EXPECT_GE(refused(*a, "unknown_issuer"), 1u) << a->name;
    EXPECT_GE(refused(*a, "replayed"), 1u) << a->name;
  }
  EXPECT_EQ(key_ids(rogue).size(), 2u);  // it changed only its own keyring
}

// The operator key stays offline: `--out` signs a step without any agent (here the CLI is pointed
// at a socket that does not exist), and `--signed` sends it from a host with an agent. Misuse is a
// usage error, and --out never overwrites a file.
TEST(KeyRotationSigned, StepSignedOfflineIsSentWithSigned) {
  constexpr int kOfflineKeysTest = 32;
  TrustedCluster c(kOfflineKeysTest, 2);
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.agents[0]->count("alive") == 2 && c.agents[1]->count("alive") == 2; }, 15s))
      << c.logs();
  const std::string k2 = keygen();
  const std::string step = c.dir.path + "/install.step";
  RunResult signed_offline = run({weft_bin(), "keys", "install", k2, "--operator-key", c.op + "/operator.key", "--out",
                                  step, "--rpc", c.dir.path + "/no-agent.sock"});
  ASSERT_EQ(signed_offline.code, 0) << signed_offline.out;
  EXPECT_EQ(signed_offline.out.find(k2), std::string::npos) << "the key was printed";
  RunResult again = run({weft_bin(), "keys", "install", k2, "--operator-key", c.op + "/operator.key", "--out", step});
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_NE(again.out.find("File exists"), std::string::npos) << again.out;
  RunResult both = run({weft_bin(), "keys", "install", k2, "--operator-key", c.op + "/operator.key", "--signed", step,
                        "--rpc", c.agents[0]->rpc()});
  EXPECT_EQ(both.code, 2) << both.out;
  RunResult out_only = run({weft_bin(), "keys", "install", k2, "--out", c.dir.path + "/x.step"});
  EXPECT_EQ(out_only.code, 2) << out_only.out;

  RunResult sent = run({weft_bin(), "keys", "install", k2, "--signed", step, "--rpc", c.agents[1]->rpc()});
  ASSERT_EQ(sent.code, 0) << sent.out << c.logs();
  for (auto& a : c.agents) EXPECT_EQ(key_ids(*a).size(), 2u) << a->name;
  // The same step again is a replay.
  RunResult replay = run({weft_bin(), "keys", "install", k2, "--signed", step, "--rpc", c.agents[0]->rpc()});
  EXPECT_NE(replay.code, 0) << replay.out;
  EXPECT_NE(replay.out.find("replayed"), std::string::npos) << replay.out;
}

}  // namespace
}  // namespace weft::mptest
