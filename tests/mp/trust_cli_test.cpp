// The offline trust commands end to end through the real binary: `weft operator init`,
// `weft identity init` (the same keys a later `weft agent` uses), `weft cert sign`,
// `weft cert show --json --operator-pub`; and bad inputs fail with one line.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "cluster.h"
#include "harness.h"

namespace weft::mptest {
namespace {

constexpr int kTestNo = 20;  // addr_for: this file's own 127.x.y.0/24

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::time_t parse_rfc3339(const std::string& s) {
  std::tm tm{};
  std::istringstream in(s);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  EXPECT_FALSE(in.fail()) << s;
  return ::timegm(&tm);
}

json show_json(const std::vector<std::string>& args, int want_code) {
  std::vector<std::string> argv = {weft_bin(), "cert", "show", "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = run(argv);
  EXPECT_EQ(r.code, want_code) << r.out;
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << r.out;
    return json::object();
  }
}

TEST(TrustCli, OperatorIdentitySignShowEndToEnd) {
  TempDir t;
  const std::string op = t.path + "/op/nested";  // created 0700 with its parent
  RunResult init = run({weft_bin(), "operator", "init", "--out", op});
  ASSERT_EQ(init.code, 0) << init.out;
  const auto at = init.out.find("issuer");
  ASSERT_NE(at, std::string::npos) << init.out;
  std::string issuer = init.out.substr(at + 6);
  issuer.erase(0, issuer.find_first_not_of(' '));
  issuer = issuer.substr(0, issuer.find('\n'));
  EXPECT_EQ(issuer.size(), 16u) << init.out;
  EXPECT_EQ(mode_of(op + "/operator.key"), 0600u);
  EXPECT_EQ(mode_of(op), 0700u);
  EXPECT_NE(slurp_file(op + "/operator.key").find("-----BEGIN WEFT OPERATOR SECRET KEY-----"),
            std::string::npos);
  EXPECT_NE(slurp_file(op + "/operator.pub").find("-----BEGIN WEFT OPERATOR PUBLIC KEY-----"),
            std::string::npos);

  // An existing key is never replaced.
  const std::string key_before = slurp_file(op + "/operator.key");
  expect_one_line_error(run({weft_bin(), "operator", "init", "--out", op}), "exists");
  EXPECT_EQ(slurp_file(op + "/operator.key"), key_before);

  // The node's keys: created once, kept and node.pub rewritten identically afterwards.
  const std::string data = t.path + "/n1";
  RunResult id1 = run({weft_bin(), "identity", "init", "--data-dir", data});
  ASSERT_EQ(id1.code, 0) << id1.out;
  EXPECT_NE(id1.out.find("created"), std::string::npos) << id1.out;
  const std::string pub1 = slurp_file(data + "/node.pub");
  EXPECT_NE(pub1.find("-----BEGIN WEFT NODE PUBLIC KEYS-----"), std::string::npos);
  RunResult id2 = run({weft_bin(), "identity", "init", "--data-dir", data});
  ASSERT_EQ(id2.code, 0) << id2.out;
  EXPECT_NE(id2.out.find("kept"), std::string::npos) << id2.out;
  EXPECT_EQ(slurp_file(data + "/node.pub"), pub1);

  // A later `weft agent` on that data dir runs with those keys (and rewrites the same node.pub).
  TempDir keys;
  write_key(keys, "key");
  std::string fingerprint;
  {
    AgentProc a("n1", addr_for(kTestNo, 0), data);
    a.start({"--key-file", keys.path + "/key"});
    ASSERT_TRUE(a.wait_ready()) << a.log();
    auto info = a.call("info");
    ASSERT_TRUE(info);
    fingerprint = (*info)["node"]["fingerprint"].get<std::string>();
    EXPECT_NE(id1.out.find(fingerprint), std::string::npos) << id1.out << " vs agent " << fingerprint;
    EXPECT_EQ(slurp_file(data + "/node.pub"), pub1);
    // While the agent holds the data dir, identity init says so in one line.
    expect_one_line_error(run({weft_bin(), "identity", "init", "--data-dir", data}), "another agent");
    a.signal(SIGTERM);
    EXPECT_TRUE(a.wait_exit(10s));
  }

  const std::string cert = t.path + "/n1.cert";
  RunResult sign = run({weft_bin(), "cert", "sign", "--operator-key", op + "/operator.key", "--node", "n1",
                        "--node-key", data + "/node.pub", "--service", "web", "--service", "api", "--service",
                        "web", "--ttl", "24h", "--out", cert});
  ASSERT_EQ(sign.code, 0) << sign.out;
  EXPECT_NE(slurp_file(cert).find("-----BEGIN WEFT NODE CERTIFICATE-----"), std::string::npos);

  json c = show_json({cert, "--operator-pub", op + "/operator.pub"}, 0);
  EXPECT_EQ(c["node"], "n1");
  EXPECT_EQ(c["issuer"], issuer);
  EXPECT_EQ(c["fingerprint"], fingerprint);
  EXPECT_EQ(c["sign_pk"].get<std::string>().substr(0, 16), fingerprint);
  EXPECT_EQ(c["kx_pk"].get<std::string>().size(), 64u);
  EXPECT_NE(c["kx_pk"], c["sign_pk"]);
  EXPECT_EQ(c["services"], json({"api", "web"}));
  EXPECT_EQ(c["version"], 1);
  EXPECT_GT(c["serial"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(parse_rfc3339(c["not_after"]) - parse_rfc3339(c["not_before"]), 24 * 3600);
  const std::time_t now = std::time(nullptr);
  EXPECT_LE(std::abs(parse_rfc3339(c["not_before"]) - now), 60);
  EXPECT_EQ(c["verification"]["valid"], true) << c.dump();
  EXPECT_EQ(c["verification"]["status"], "valid");

  // Without --operator-pub: shown, not verified.
  json plain = show_json({cert}, 0);
  EXPECT_FALSE(plain.contains("verification"));
  EXPECT_EQ(plain["serial"], c["serial"]);

  // Another operator's key: shown, refused as an unknown issuer, exit 1. Both roots: valid.
  const std::string other = t.path + "/other";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", other}).code, 0);
  json wrong = show_json({cert, "--operator-pub", other + "/operator.pub"}, 1);
  EXPECT_EQ(wrong["verification"]["valid"], false);
  EXPECT_EQ(wrong["verification"]["status"], "unknown issuer");
  json both =
      show_json({cert, "--operator-pub", other + "/operator.pub", "--operator-pub", op + "/operator.pub"}, 0);
  EXPECT_EQ(both["verification"]["valid"], true);

  // Human output names every field.
  RunResult text = run({weft_bin(), "cert", "show", cert, "--operator-pub", op + "/operator.pub"});
  ASSERT_EQ(text.code, 0) << text.out;
  for (const char* want : {"node:", "serial:", "issuer:", "signing key:", "key-exchange key:", "services:",
                           "not before:", "not after:", "verified: valid"}) {
    EXPECT_NE(text.out.find(want), std::string::npos) << want << " in " << text.out;
  }
}

TEST(TrustCli, PassphraseProtectedOperatorKey) {
  TempDir t;
  std::ofstream(t.path + "/pass") << "open sesame\n";
  std::ofstream(t.path + "/wrong") << "open sesam\n";
  std::ofstream(t.path + "/empty") << "\n";
  ASSERT_EQ(
      run({weft_bin(), "operator", "init", "--out", t.path + "/op", "--passphrase-file", t.path + "/pass"},
          60s)
          .code,
      0);
  ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", t.path + "/n"}).code, 0);
  auto sign = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        weft_bin(),        "cert", "sign",       "--operator-key",       t.path + "/op/operator.key",
        "--node",          "n",    "--node-key", t.path + "/n/node.pub", "--out",
        t.path + "/n.cert"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv, 60s);
  };
  expect_one_line_error(sign({}), "--passphrase-file");
  expect_one_line_error(sign({"--passphrase-file", t.path + "/wrong"}), "wrong passphrase");
  expect_one_line_error(sign({"--passphrase-file", t.path + "/empty"}), "empty");
  RunResult ok = sign({"--passphrase-file", t.path + "/pass"});
  ASSERT_EQ(ok.code, 0) << ok.out;
  json c = show_json({t.path + "/n.cert", "--operator-pub", t.path + "/op/operator.pub"}, 0);
  EXPECT_EQ(c["verification"]["valid"], true) << c.dump();
  EXPECT_EQ(c["services"], json::array());
  // The default ttl is 30 days.
  EXPECT_EQ(parse_rfc3339(c["not_after"]) - parse_rfc3339(c["not_before"]), 30 * 24 * 3600);
}

TEST(TrustCli, BadInputsFailWithOneLine) {
  TempDir t;
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", t.path + "/op"}).code, 0);
  ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", t.path + "/n"}).code, 0);
  const std::string key = t.path + "/op/operator.key";
  const std::string pub = t.path + "/op/operator.pub";
  const std::string node = t.path + "/n/node.pub";
  auto sign = [&](const std::string& k, const std::string& nk, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {weft_bin(),   "cert", "sign",  "--operator-key", k, "--node", "n",
                                     "--node-key", nk,     "--out", t.path + "/c"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv);
  };
  // Missing files.
  expect_one_line_error(sign(t.path + "/missing.key", node), t.path + "/missing.key");
  expect_one_line_error(sign(key, t.path + "/missing.pub"), t.path + "/missing.pub");
  expect_one_line_error(run({weft_bin(), "cert", "show", t.path + "/missing.cert"}),
                        t.path + "/missing.cert");
  // Files of the wrong type.
  expect_one_line_error(sign(pub, node), "not a WEFT OPERATOR SECRET KEY");
  expect_one_line_error(sign(key, pub), "not a WEFT NODE PUBLIC KEYS");
  expect_one_line_error(run({weft_bin(), "cert", "show", node}), "not a WEFT NODE CERTIFICATE");
  ASSERT_EQ(sign(key, node).code, 0);
  expect_one_line_error(run({weft_bin(), "cert", "show", t.path + "/c", "--operator-pub", key}),
                        "not a WEFT OPERATOR PUBLIC KEY");
  // Garbage and damage.
  std::ofstream(t.path + "/garbage") << "hello\n";
  expect_one_line_error(run({weft_bin(), "cert", "show", t.path + "/garbage"}),
                        "not a WEFT NODE CERTIFICATE");
  std::string damaged = slurp_file(t.path + "/c");
  damaged[damaged.find('\n') + 10] = damaged[damaged.find('\n') + 10] == 'A' ? 'B' : 'A';
  std::ofstream(t.path + "/damaged") << damaged;
  RunResult d = run({weft_bin(), "cert", "show", "--json", t.path + "/damaged", "--operator-pub", pub});
  EXPECT_NE(d.code, 0) << d.out;
  // Bad values are usage errors (exit 2).
  RunResult bad_name = sign(key, node, {"--node", "no spaces"});
  EXPECT_EQ(bad_name.code, 2) << bad_name.out;
  RunResult bad_ttl = sign(key, node, {"--ttl", "soon"});
  EXPECT_EQ(bad_ttl.code, 2) << bad_ttl.out;
  expect_one_line_error(bad_ttl, "--ttl");
  RunResult bad_service = sign(key, node, {"--service", "a/b"});
  EXPECT_EQ(bad_service.code, 2) << bad_service.out;
}

}  // namespace
}  // namespace weft::mptest

namespace weft::mptest {
namespace {

// `weft agent --operator-pub --cert`: the agent checks its own certificate before it says
// anything, shows it in `weft info`, and refuses one that is for another node, for other keys,
// from an untrusted operator, or given without a trust root (exit 2, one line in its log).
TEST(TrustAgent, StartsWithItsOwnCertificateOnly) {
  TempDir t;
  TempDir keys;
  write_key(keys, "key");
  const std::string op = t.path + "/op";
  const std::string other = t.path + "/other";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", other}).code, 0);
  const std::string d1 = t.path + "/n1";
  const std::string d2 = t.path + "/n2";
  ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", d1}).code, 0);
  ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", d2}).code, 0);
  const auto sign = [&](const std::string& key_dir, const std::string& node, const std::string& pub,
                        const std::string& out) {
    RunResult r = run({weft_bin(), "cert", "sign", "--operator-key", key_dir + "/operator.key", "--node", node,
                       "--node-key", pub, "--service", "web", "--ttl", "1h", "--out", out});
    EXPECT_EQ(r.code, 0) << r.out;
  };
  const std::string c1 = t.path + "/n1.cert";
  sign(op, "n1", d1 + "/node.pub", c1);
  const std::string c1_keys_of_n2 = t.path + "/n1-with-n2-keys.cert";
  sign(op, "n1", d2 + "/node.pub", c1_keys_of_n2);
  const std::string c1_other_op = t.path + "/n1-other-operator.cert";
  sign(other, "n1", d1 + "/node.pub", c1_other_op);
  const std::string serial = show_json({c1}, 0)["serial"].dump();

  {
    AgentProc a("n1", addr_for(kTestNo, 1), d1);
    a.start({"--key-file", keys.path + "/key", "--operator-pub", other + "/operator.pub", "--operator-pub",
             op + "/operator.pub", "--cert", c1});
    ASSERT_TRUE(a.wait_ready()) << a.log();
    auto info = a.call("info");
    ASSERT_TRUE(info);
    const json& trust = (*info)["trust"];
    ASSERT_TRUE(trust.is_object()) << info->dump();
    EXPECT_EQ(trust["cert"]["serial"].dump(), serial);
    EXPECT_EQ(trust["cert"]["services"], json({"web"}));
    EXPECT_EQ(trust["operators"].size(), 2u);
    a.signal(SIGTERM);
    EXPECT_TRUE(a.wait_exit(10s));
  }
  {
    AgentProc plain("n1", addr_for(kTestNo, 1), d1);  // no trust root: "trust" is null
    plain.start({"--key-file", keys.path + "/key"});
    ASSERT_TRUE(plain.wait_ready()) << plain.log();
    auto info = plain.call("info");
    ASSERT_TRUE(info);
    EXPECT_TRUE((*info)["trust"].is_null()) << info->dump();
    plain.signal(SIGTERM);
    EXPECT_TRUE(plain.wait_exit(10s));
  }
  struct Bad {
    std::string node, dir;
    std::vector<std::string> extra;
    std::string want;
  };
  const std::vector<Bad> bad = {
      {"n2", d2, {"--operator-pub", op + "/operator.pub", "--cert", c1}, "is for node 'n1', not 'n2'"},
      {"n1", d1, {"--operator-pub", op + "/operator.pub", "--cert", c1_keys_of_n2}, "other keys"},
      {"n1", d1, {"--operator-pub", op + "/operator.pub", "--cert", c1_other_op}, "is not a trusted operator key"},
      {"n1", d1, {"--cert", c1}, "--cert needs --operator-pub"},
      {"n1", d1, {"--operator-pub", op + "/operator.pub"}, "--operator-pub needs --cert"},
      {"n1", d1, {"--operator-pub", c1, "--cert", c1}, "--operator-pub"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.want);
    AgentProc a(b.node, addr_for(kTestNo, 2), b.dir);
    std::vector<std::string> extra = {"--key-file", keys.path + "/key"};
    extra.insert(extra.end(), b.extra.begin(), b.extra.end());
    a.start(extra);
    const auto code = a.wait_exit(10s);
    ASSERT_TRUE(code.has_value()) << a.log();
    EXPECT_EQ(*code, 2) << a.log();
    EXPECT_NE(a.log().find(b.want), std::string::npos) << a.log();
  }
}

TEST(TrustCli, RevokeBuildsCumulativeSignedLists) {
  TempDir t;
  const std::string op = t.path + "/op";
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", op}).code, 0);
  ASSERT_EQ(run({weft_bin(), "operator", "init", "--out", t.path + "/other"}).code, 0);
  ASSERT_EQ(run({weft_bin(), "identity", "init", "--data-dir", t.path + "/n1"}).code, 0);
  const std::string cert = t.path + "/n1.cert";
  ASSERT_EQ(run({weft_bin(), "cert", "sign", "--operator-key", op + "/operator.key", "--node", "n1", "--node-key",
                 t.path + "/n1/node.pub", "--out", cert})
                .code,
            0);
  const json c = show_json({cert}, 0);
  const std::uint64_t serial = c["serial"].get<std::uint64_t>();

  const std::string r1 = t.path + "/r1", r2 = t.path + "/r2";
  RunResult a = run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--cert", cert,
                     "--cluster", "prod", "--version", "10", "--out", r1});
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(a.out.find("version 10, 1 certificates revoked"), std::string::npos) << a.out;
  EXPECT_NE(slurp_file(r1).find("-----BEGIN WEFT REVOCATION LIST-----"), std::string::npos);
  // The next list keeps the previous entries and its cluster, and its version goes up.
  RunResult b = run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--from", r1, "--serial",
                     "42", "--out", r2});
  ASSERT_EQ(b.code, 0) << b.out;
  RunResult shown = run({weft_bin(), "revocations", "show", r2, "--json", "--operator-pub", op + "/operator.pub"});
  ASSERT_EQ(shown.code, 0) << shown.out;
  const json l = json::parse(shown.out);
  EXPECT_EQ(l["cluster"], "prod");
  EXPECT_GT(l["version"].get<std::uint64_t>(), 10u);
  ASSERT_EQ(l["revoked"].size(), 2u);
  std::set<std::uint64_t> serials;
  for (const json& e : l["revoked"]) {
    EXPECT_EQ(e["issuer"], c["issuer"]);
    serials.insert(e["serial"].get<std::uint64_t>());
  }
  EXPECT_EQ(serials, (std::set<std::uint64_t>{42, serial}));
  EXPECT_TRUE(l["verification"]["valid"].get<bool>());
  // Another operator's key does not verify it (exit 1 after showing it).
  RunResult other = run({weft_bin(), "revocations", "show", r2, "--operator-pub", t.path + "/other/operator.pub"});
  EXPECT_EQ(other.code, 1) << other.out;
  EXPECT_NE(other.out.find("INVALID (unknown issuer)"), std::string::npos) << other.out;

  // Bad inputs: one line each, nothing written.
  expect_one_line_error(run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--out",
                             t.path + "/r3"}),
                        "name a certificate to revoke");
  expect_one_line_error(run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--from", r2,
                             "--serial", "1", "--version", "10", "--out", t.path + "/r3"}),
                        "is not above the previous list's");
  expect_one_line_error(run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--from", r2,
                             "--cluster", "dev", "--serial", "1", "--out", t.path + "/r3"}),
                        "is for cluster 'prod'");
  expect_one_line_error(run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--from", cert,
                             "--serial", "1", "--out", t.path + "/r3"}),
                        "not a WEFT REVOCATION LIST");
  expect_one_line_error(run({weft_bin(), "cert", "revoke", "--operator-key", op + "/operator.key", "--serial", "0",
                             "--out", t.path + "/r3"}),
                        "--serial 0");
  EXPECT_NE(::access((t.path + "/r3").c_str(), F_OK), 0);
  expect_one_line_error(run({weft_bin(), "revocations", "show", cert}), "not a WEFT REVOCATION LIST");
}

}  // namespace
}  // namespace weft::mptest
