// The offline policy commands end to end through the real binary: `weft operator init`,
// `weft policy sign`, `weft policy show --json --operator-pub`; bad inputs fail with one line.

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "harness.h"

namespace weft::mptest {
namespace {

const char* kPolicy = R"(cluster = "default"            # the agent's --cluster name
version = 2
expires = "2999-01-01T00:00:00Z"
default = "deny"
[[rule]]
from = "client"
to = "web"
action = "allow"
rate = { per_second = 100, burst = 20 }
connect_timeout = "2s"
idle_timeout = "5m"
retries = 2
[[rule]]
from = "*"
to = "db"
action = "shadow-deny"
)";

TEST(PolicyCli, OperatorInitSignShowEndToEnd) {
  TempDir t;
  const std::string op = t.path + "/op";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  const std::string toml = t.path + "/policy.toml";
  const std::string signed_file = t.path + "/policy.signed";
  write_file(toml, kPolicy);
  RunResult s =
      run({weft_bin(), "policy", "sign", toml, "--operator-key", op + "/operator.key", "--out", signed_file});
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_NE(s.out.find("version 2"), std::string::npos) << s.out;

  RunResult show =
      run({weft_bin(), "policy", "show", signed_file, "--json", "--operator-pub", op + "/operator.pub"});
  ASSERT_EQ(show.code, 0) << show.out;
  const json j = parse_json(show);
  EXPECT_EQ(j["signed"], true);
  EXPECT_EQ(j["cluster"], "default");
  EXPECT_EQ(j["version"], 2);
  EXPECT_EQ(j["expires"], "2999-01-01T00:00:00Z");
  EXPECT_EQ(j["default"], "deny");
  ASSERT_EQ(j["rules"].size(), 2u);
  EXPECT_EQ(j["rules"][0]["from"], "client");
  EXPECT_EQ(j["rules"][0]["to"], "web");
  EXPECT_EQ(j["rules"][0]["action"], "allow");
  EXPECT_EQ(j["rules"][0]["rate"]["per_second"], 100);
  EXPECT_EQ(j["rules"][0]["rate"]["burst"], 20);
  EXPECT_EQ(j["rules"][0]["connect_timeout_ms"], 2000);
  EXPECT_EQ(j["rules"][0]["idle_timeout_ms"], 300000);
  EXPECT_EQ(j["rules"][0]["retries"], 2);
  EXPECT_EQ(j["rules"][1]["from"], "*");
  EXPECT_EQ(j["rules"][1]["action"], "shadow-deny");
  EXPECT_EQ(j["verification"]["valid"], true);

  // Another operator's key does not verify it: shown, then exit 1.
  const std::string other = t.path + "/other";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", other}).code, 0);
  RunResult bad =
      run({weft_bin(), "policy", "show", signed_file, "--json", "--operator-pub", other + "/operator.pub"});
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_EQ(parse_json(bad)["verification"]["status"], "unknown issuer");
  // Another cluster's agent would refuse it.
  RunResult wrong = run({weft_bin(), "policy", "show", signed_file, "--json", "--operator-pub",
                         op + "/operator.pub", "--cluster", "prod"});
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_EQ(parse_json(wrong)["verification"]["status"], "wrong cluster");
  // The TOML file itself can be shown (unsigned).
  RunResult plain = run({weft_bin(), "policy", "show", toml, "--json"});
  ASSERT_EQ(plain.code, 0) << plain.out;
  EXPECT_EQ(parse_json(plain)["signed"], false);
  // The human form shows every rule.
  RunResult human = run({weft_bin(), "policy", "show", signed_file});
  EXPECT_EQ(human.code, 0) << human.out;
  EXPECT_NE(human.out.find("shadow-deny"), std::string::npos) << human.out;
}

TEST(PolicyCli, BadInputsFailWithOneLine) {
  TempDir t;
  const std::string op = t.path + "/op";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  const std::string key = op + "/operator.key";
  auto sign = [&](const std::string& text) {
    const std::string f = t.path + "/p.toml";
    write_file(f, text);
    return run({weft_bin(), "policy", "sign", f, "--operator-key", key, "--out", t.path + "/out.signed"});
  };
  const std::string head = "cluster = \"default\"\nversion = 3\n";
  expect_one_line_error(sign(head + "defualt = \"allow\"\n"), "line 3: defualt is not a known key");
  expect_one_line_error(sign(head + "[[rule]]\nfrom = \"a\"\nto = \"b\"\naction = \"alow\"\n"),
                        "rule 1: action 'alow'");
  expect_one_line_error(sign(head + "[[rule]]\nfrom = \"a\"\nto = \"b\"\naction = \"allow\"\nrate = 5\n"),
                        "rule 1: rate");
  expect_one_line_error(sign("version = 1\n"), "'cluster' is missing");
  expect_one_line_error(run({weft_bin(), "policy", "sign", t.path + "/missing.toml", "--operator-key", key,
                             "--out", t.path + "/x"}),
                        "missing.toml");
  expect_one_line_error(run({weft_bin(), "policy", "show", t.path + "/missing.signed"}), "missing.signed");
  // Without a file, show asks the agent: with none to ask, one line saying how to name it.
  expect_one_line_error(run({weft_bin(), "policy", "show"}), "no agent to ask");
  expect_one_line_error(run({weft_bin(), "policy", "apply", t.path + "/missing.signed", "--rpc", t.path + "/none.sock"}),
                        "missing.signed");
  // A certificate file is not a policy.
  write_file(t.path + "/cert",
             "-----BEGIN WEFT NODE CERTIFICATE-----\nkQ==\n-----END WEFT NODE CERTIFICATE-----\n");
  expect_one_line_error(run({weft_bin(), "policy", "show", t.path + "/cert"}), "WEFT SIGNED POLICY");
  // A wrong key file.
  write_file(t.path + "/ok.toml", head);
  expect_one_line_error(run({weft_bin(), "policy", "sign", t.path + "/ok.toml", "--operator-key",
                             op + "/operator.pub", "--out", t.path + "/x"}),
                        "--operator-key");
  EXPECT_FALSE(std::ifstream(t.path + "/out.signed").good());  // nothing was written on errors
}

}  // namespace
}  // namespace weft::mptest
