// The trust subcommands (issue 5): `weft operator init`, `weft identity init`, `weft cert sign`,
// `weft cert show`, `weft policy sign`, `weft policy show FILE` work on files only (no agent
// needed; the file handling is in weft/agent/trust_files.h and policy_files.h). `weft policy apply
// SIGNED` and `weft policy show` without a file ask the local agent. Flags and rendering here.

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "client.h"
#include "commands.h"
#include "weft/agent/config.h"
#include "weft/agent/policy_files.h"
#include "weft/agent/rpc.h"
#include "weft/agent/trust_files.h"

namespace weft::cli {

namespace {

// The CLI's one wall-clock read for these commands; the libraries take `now` as an argument.
agent::UnixSeconds wall_now() {
  return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
}

int failed(const std::string& message) {
  std::fprintf(stderr, "weft: %s\n", message.c_str());
  return kExitFailure;
}

Command operator_command(CLI::App& parent) {
  struct Args {
    std::string out;
    std::string passphrase_file;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app =
      parent.add_subcommand("operator", "The operator key that signs node certificates (keep it offline)");
  app->require_subcommand(1);
  CLI::App* init = app->add_subcommand("init", "Create DIR/operator.key (owner-only) and DIR/operator.pub");
  init->add_option("--out", a->out, "Directory for the key files (created 0700 if missing)")->required();
  init->add_option("--passphrase-file", a->passphrase_file,
                   "Encrypt the secret key with the passphrase on this file's first line (Argon2id)");
  return Command{app, [a] {
                   auto r = agent::operator_init(a->out, a->passphrase_file);
                   if (!r) return failed(r.error().message);
                   std::printf(
                       "operator key %s (secret, keep it offline)\npublic key   %s\nissuer       %s\n",
                       r->key_path.c_str(), r->pub_path.c_str(), r->issuer.c_str());
                   return kExitOk;
                 }};
}

Command identity_command(CLI::App& parent) {
  auto dir = std::make_shared<std::string>();
  CLI::App* app = parent.add_subcommand("identity", "This node's long-term keys");
  app->require_subcommand(1);
  CLI::App* init = app->add_subcommand(
      "init",
      "Create the node's keys in DATA_DIR if absent (as `weft agent` does) and write DATA_DIR/node.pub");
  init->add_option("--data-dir", *dir, "The agent's data directory (created 0700)")->required();
  return Command{app, [dir] {
                   auto r = agent::identity_init(*dir);
                   if (!r) return failed(r.error().message);
                   std::printf("%s node keys, fingerprint %s\npublic keys %s\n",
                               r->created ? "created" : "kept", r->fingerprint.c_str(), r->pub_path.c_str());
                   return kExitOk;
                 }};
}

std::string join(const json& arr) {
  std::string s;
  for (const json& v : arr) {
    if (!s.empty()) s += ", ";
    s += v.get<std::string>();
  }
  return s.empty() ? "(none)" : s;
}

void print_cert(const json& c) {
  const std::vector<std::vector<std::string>> rows = {
      {"node:", c["node"].get<std::string>()},
      {"serial:", std::to_string(c["serial"].get<std::uint64_t>())},
      {"issuer:", c["issuer"].get<std::string>()},
      {"signing key:", c["sign_pk"].get<std::string>()},
      {"key-exchange key:", c["kx_pk"].get<std::string>()},
      {"fingerprint:", c["fingerprint"].get<std::string>()},
      {"services:", join(c["services"])},
      {"not before:", c["not_before"].get<std::string>()},
      {"not after:", c["not_after"].get<std::string>()}};
  print_table(rows);
  if (!c.contains("verification")) {
    std::printf("verified: not checked (give --operator-pub FILE)\n");
  } else {
    const json& v = c["verification"];
    if (v["valid"].get<bool>()) {
      std::printf("verified: valid\n");
    } else {
      std::printf("verified: INVALID (%s): %s\n", v["status"].get<std::string>().c_str(),
                  v["reason"].get<std::string>().c_str());
    }
  }
}

void print_revocations(const json& l) {
  print_table({{"cluster:", l["cluster"].get<std::string>()},
               {"version:", std::to_string(l["version"].get<std::uint64_t>())},
               {"issuer:", l["issuer"].get<std::string>()},
               {"revoked:", std::to_string(l["revoked"].size()) + " certificates"}});
  std::vector<std::vector<std::string>> rows = {{"ISSUER", "SERIAL"}};
  for (const json& c : l["revoked"])
    rows.push_back({c["issuer"].get<std::string>(), std::to_string(c["serial"].get<std::uint64_t>())});
  if (rows.size() > 1) print_table(rows);
  if (l.contains("verification")) {
    const json& v = l["verification"];
    std::printf("verified: %s%s%s\n", v["valid"].get<bool>() ? "valid" : "INVALID (",
                v["valid"].get<bool>() ? "" : (v["status"].get<std::string>() + "): ").c_str(),
                v["reason"].get<std::string>().c_str());
  }
}

struct CertArgs {
  agent::CertSignRequest sign;
  agent::CertRevokeRequest revoke;
  std::optional<std::uint64_t> revoke_version;
  std::string ttl = "720h";
  std::string show_file;
  std::vector<std::string> operator_pubs;
  bool json = false;
};

Command cert_command(CLI::App& parent) {
  auto a = std::make_shared<CertArgs>();
  CLI::App* app = parent.add_subcommand("cert", "Node certificates signed by the operator key");
  app->require_subcommand(1);
  CLI::App* sign = app->add_subcommand("sign", "Sign a certificate binding a node name to its public keys");
  sign->add_option("--operator-key", a->sign.operator_key, "The operator's secret key file (operator.key)")
      ->required();
  sign->add_option("--passphrase-file", a->sign.passphrase_file,
                   "File whose first line unlocks the operator key");
  sign->add_option("--node", a->sign.node, "The node's name (as its agent's --node)")->required();
  sign->add_option("--node-key", a->sign.node_key, "The node's public keys (DATA_DIR/node.pub)")->required();
  sign->add_option("--service", a->sign.services,
                   "A service the node may serve and call (repeatable; none: neither)");
  sign->add_option("--ttl", a->ttl, "How long the certificate is valid, like 24h (default 720h = 30 days)");
  sign->add_option("--out", a->sign.out, "The certificate file to write")->required();
  CLI::App* show = app->add_subcommand("show", "Print a certificate; with --operator-pub also verify it");
  show->add_option("certfile", a->show_file, "The certificate file")->required();
  show->add_option("--operator-pub", a->operator_pubs, "A trusted operator public key file (repeatable)");
  show->add_flag("--json", a->json, "Print JSON");
  CLI::App* revoke = app->add_subcommand(
      "revoke", "Sign the next revocation list: the previous list's certificates plus the ones named here");
  revoke->add_option("--operator-key", a->revoke.operator_key, "The operator's secret key file (operator.key)")
      ->required();
  revoke->add_option("--passphrase-file", a->revoke.passphrase_file,
                     "File whose first line unlocks the operator key");
  revoke->add_option("--serial", a->revoke.serials,
                     "Serial of a certificate this operator key signed (repeatable; `weft cert show`)");
  revoke->add_option("--cert", a->revoke.certs, "A certificate file to revoke (repeatable)");
  revoke->add_option("--from", a->revoke.from, "The previous revocation list: its entries are kept");
  revoke->add_option("--cluster", a->revoke.cluster,
                     "The agents' --cluster name (default: the previous list's, else \"default\")");
  revoke->add_option("--version", a->revoke_version,
                     "The list's version (default: the current unix time, above the previous list's)");
  revoke->add_option("--out", a->revoke.out, "The revocation list file to write")->required();
  return Command{app, [a, sign, revoke] {
                   if (revoke->parsed()) {
                     a->revoke.version = a->revoke_version;
                     a->revoke.now = wall_now();
                     auto r = agent::cert_revoke(a->revoke);
                     if (!r) return failed(r.error().message);
                     std::printf("revocation list %s: cluster %s, version %s, %zu certificates revoked\n",
                                 a->revoke.out.c_str(), (*r)["cluster"].get<std::string>().c_str(),
                                 std::to_string((*r)["version"].get<std::uint64_t>()).c_str(),
                                 (*r)["revoked"].size());
                     return kExitOk;
                   }
                   if (sign->parsed()) {
                     if (auto r = agent::check_node_name(a->sign.node); !r) {
                       std::fprintf(stderr, "weft: --node: %s\n", r.error().message.c_str());
                       return kExitUsage;
                     }
                     for (const std::string& s : a->sign.services) {
                       if (auto r = agent::check_service_name(s); !r) {
                         std::fprintf(stderr, "weft: --service: %s\n", r.error().message.c_str());
                         return kExitUsage;
                       }
                     }
                     auto ttl = agent::parse_duration(a->ttl);
                     if (!ttl || *ttl < std::chrono::seconds(1)) {
                       std::fprintf(stderr, "weft: --ttl: %s\n",
                                    ttl ? "must be at least 1s" : ttl.error().message.c_str());
                       return kExitUsage;
                     }
                     a->sign.ttl = *ttl;
                     a->sign.now = wall_now();
                     auto r = agent::cert_sign(a->sign);
                     if (!r) return failed(r.error().message);
                     std::printf("certificate %s: node %s, serial %s, issuer %s, valid until %s\n",
                                 a->sign.out.c_str(), (*r)["node"].get<std::string>().c_str(),
                                 std::to_string((*r)["serial"].get<std::uint64_t>()).c_str(),
                                 (*r)["issuer"].get<std::string>().c_str(),
                                 (*r)["not_after"].get<std::string>().c_str());
                     return kExitOk;
                   }
                   auto r = agent::cert_show(a->show_file, a->operator_pubs, wall_now());
                   if (!r) return failed(r.error().message);
                   if (a->json) {
                     print_json(*r);
                   } else {
                     print_cert(*r);
                   }
                   // A certificate that does not verify is a failure for scripts, after it is shown.
                   if (r->contains("verification") && !(*r)["verification"]["valid"].get<bool>())
                     return kExitFailure;
                   return kExitOk;
                 }};
}

void print_policy(const json& p) {
  std::vector<std::vector<std::string>> rows = {
      {"cluster:", p["cluster"].get<std::string>()},
      {"version:", std::to_string(p["version"].get<std::uint64_t>())},
      {"expires:", p["expires"].is_null() ? "never" : p["expires"].get<std::string>()},
      {"default:", p["default"].get<std::string>()},
      {"signed:", p["signed"].get<bool>() ? "yes, issuer " + p["issuer"].get<std::string>() : "no (TOML)"}};
  print_table(rows);
  std::vector<std::vector<std::string>> rules = {
      {"#", "FROM", "TO", "ACTION", "RATE", "CONNECT", "IDLE", "RETRIES"}};
  std::size_t i = 0;
  for (const json& r : p["rules"]) {
    auto ms = [&](const char* k) {
      return r.contains(k) ? std::to_string(r[k].get<std::int64_t>()) + "ms" : "-";
    };
    rules.push_back({std::to_string(++i), r["from"].get<std::string>(), r["to"].get<std::string>(),
                     r["action"].get<std::string>(),
                     r.contains("rate")
                         ? std::to_string(r["rate"]["per_second"].get<std::uint32_t>()) + "/s burst " +
                               std::to_string(r["rate"]["burst"].get<std::uint32_t>())
                         : "-",
                     ms("connect_timeout_ms"), ms("idle_timeout_ms"),
                     r.contains("retries") ? std::to_string(r["retries"].get<std::uint32_t>()) : "-"});
  }
  if (i == 0) {
    std::printf("rules: none (the default applies to every connection)\n");
  } else {
    print_table(rules);
  }
  if (!p.contains("verification")) {
    if (p["signed"].get<bool>()) std::printf("verified: not checked (give --operator-pub FILE)\n");
  } else {
    const json& v = p["verification"];
    if (v["valid"].get<bool>()) {
      std::printf("verified: valid\n");
    } else {
      std::printf("verified: INVALID (%s): %s\n", v["status"].get<std::string>().c_str(),
                  v["reason"].get<std::string>().c_str());
    }
  }
}

struct PolicyArgs {
  agent::PolicySignRequest sign;
  std::string show_file;
  std::string apply_file;
  std::vector<std::string> operator_pubs;
  std::string cluster;
  bool json = false;
  ClientOptions client;  // --rpc, --data-dir (apply, and show without a file)
};

// `weft policy apply` asks the agent; the refusal is the agent's one line, exit 1.
int policy_apply(const PolicyArgs& a) {
  auto text = read_signed_document(a.apply_file);
  if (!text) return kExitFailure;
  auto r = call(a.client, "policy_apply", json{{"policy", *text}});
  if (!r) return kExitFailure;
  std::printf("policy version %llu applied\n",
              static_cast<unsigned long long>(r->value("version", std::uint64_t{0})));
  return kExitOk;
}

// `weft policy show` without a file: the policy the agent enforces, and its counters.
int policy_show_agent(const PolicyArgs& a) {
  auto r = call(a.client, "policy", json::object());
  if (!r) return kExitFailure;
  if (a.json) {
    print_json(*r);
    return kExitOk;
  }
  if (!r->value("trust", false)) {
    std::printf("no trust root on this agent (start it with --operator-pub and --cert): no policy applies\n");
  } else if (!r->contains("policy") || (*r)["policy"].is_null()) {
    std::printf("no policy held (cluster %s): every certified pair is allowed\n",
                r->value("cluster", std::string()).c_str());
  } else {
    print_policy((*r)["policy"]);
    if ((*r)["policy"].value("expired", false)) std::printf("expired: yes, still enforced until a newer version\n");
  }
  if (r->contains("stats") && (*r)["stats"].is_object()) {
    const json& st = (*r)["stats"];
    std::string rejected;
    if (st.contains("rejected") && st["rejected"].is_object()) {
      for (const auto& item : st["rejected"].items()) {
        if (!rejected.empty()) rejected += ", ";
        rejected += item.key() + " " + item.value().dump();
      }
    }
    std::printf("documents: %llu accepted; rejected: %s\n",
                static_cast<unsigned long long>(st.value("accepted", std::uint64_t{0})), rejected.c_str());
  }
  return kExitOk;
}

Command policy_command(CLI::App& parent) {
  auto a = std::make_shared<PolicyArgs>();
  CLI::App* app = parent.add_subcommand("policy", "Authorization policy signed by the operator key");
  app->require_subcommand(1);
  CLI::App* sign = app->add_subcommand("sign", "Check a TOML policy file and sign it");
  sign->add_option("file", a->sign.file, "The TOML policy file")->required();
  sign->add_option("--operator-key", a->sign.operator_key, "The operator's secret key file (operator.key)")
      ->required();
  sign->add_option("--passphrase-file", a->sign.passphrase_file,
                   "File whose first line unlocks the operator key");
  sign->add_option("--out", a->sign.out, "The signed policy file to write")->required();
  CLI::App* apply = app->add_subcommand(
      "apply", "Give a signed policy to the local agent; it verifies it, stores it and spreads it by gossip");
  apply->add_option("file", a->apply_file, "The signed policy (weft policy sign --out)")->required();
  add_client_options(apply, a->client, false);
  CLI::App* show = app->add_subcommand(
      "show",
      "Without FILE: the policy the local agent enforces, with its counters. With FILE: print a signed or "
      "TOML policy file; with --operator-pub verify it");
  show->add_option("file", a->show_file, "A signed policy or a TOML policy file");
  show->add_option("--operator-pub", a->operator_pubs, "A trusted operator public key file (repeatable)");
  show->add_option("--cluster", a->cluster, "Verify for this cluster name (default: the policy's own)");
  show->add_flag("--json", a->json, "Print JSON");
  add_client_options(show, a->client, false);
  return Command{
      app, [a, sign, apply] {
        if (apply->parsed()) return policy_apply(*a);
        if (sign->parsed()) {
          auto r = agent::policy_sign(a->sign);
          if (!r) return failed(r.error().message);
          std::printf("signed policy %s: cluster %s, version %s, %zu rules, default %s, issuer %s\n",
                      a->sign.out.c_str(), (*r)["cluster"].get<std::string>().c_str(),
                      std::to_string((*r)["version"].get<std::uint64_t>()).c_str(), (*r)["rules"].size(),
                      (*r)["default"].get<std::string>().c_str(), (*r)["issuer"].get<std::string>().c_str());
          return kExitOk;
        }
        if (a->show_file.empty()) return policy_show_agent(*a);
        auto r = agent::policy_show(a->show_file, a->operator_pubs, a->cluster, wall_now());
        if (!r) return failed(r.error().message);
        if (a->json) {
          print_json(*r);
        } else {
          print_policy(*r);
        }
        // A policy that does not verify is a failure for scripts, after it is shown.
        if (r->contains("verification") && !(*r)["verification"]["valid"].get<bool>()) return kExitFailure;
        return kExitOk;
      }};
}

// `weft revocations apply LIST` gives a signed revocation list (weft cert revoke) to the local
// agent, which verifies, stores and spreads it like a policy; `weft revocations show` prints the
// list the agent enforces and its counters.
Command revocations_command(CLI::App& parent) {
  struct Args {
    std::string file;
    std::string show_file;
    std::vector<std::string> operator_pubs;
    bool json = false;
    ClientOptions client;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = parent.add_subcommand("revocations", "The certificate revocation list the local agent enforces");
  app->require_subcommand(1);
  CLI::App* apply = app->add_subcommand(
      "apply", "Give a signed revocation list (weft cert revoke) to the local agent; it spreads by gossip");
  apply->add_option("file", a->file, "The signed revocation list")->required();
  add_client_options(apply, a->client, false);
  CLI::App* show = app->add_subcommand(
      "show", "Print a revocation list file (with --operator-pub also verify it), or without FILE the list the "
              "local agent enforces, with its counters");
  show->add_option("file", a->show_file, "A revocation list file (weft cert revoke)");
  show->add_option("--operator-pub", a->operator_pubs, "With FILE: a trusted operator public key file (repeatable)");
  show->add_flag("--json", a->json, "Print JSON");
  add_client_options(show, a->client, false);
  return Command{app, [a, apply] {
                   if (apply->parsed()) {
                     auto text = read_signed_document(a->file);
                     if (!text) return kExitFailure;
                     auto r = call(a->client, "revocations_apply", json{{"revocations", *text}});
                     if (!r) return kExitFailure;
                     std::printf("revocation list version %llu applied (%llu certificates revoked)\n",
                                 static_cast<unsigned long long>(r->value("version", std::uint64_t{0})),
                                 static_cast<unsigned long long>(r->value("revoked", std::uint64_t{0})));
                     return kExitOk;
                   }
                   if (!a->show_file.empty()) {
                     auto f = agent::revocations_show(a->show_file, a->operator_pubs);
                     if (!f) return failed(f.error().message);
                     if (a->json) {
                       print_json(*f);
                     } else {
                       print_revocations(*f);
                     }
                     // A list that does not verify is a failure for scripts, after it is shown.
                     if (f->contains("verification") && !(*f)["verification"]["valid"].get<bool>())
                       return kExitFailure;
                     return kExitOk;
                   }
                   auto r = call(a->client, "revocations", json::object());
                   if (!r) return kExitFailure;
                   if (a->json) {
                     print_json(*r);
                     return kExitOk;
                   }
                   if (!r->value("trust", false)) {
                     std::printf("no trust root on this agent (start it with --operator-pub and --cert)\n");
                   } else if (!r->contains("revocations") || (*r)["revocations"].is_null()) {
                     std::printf("no revocation list held (cluster %s)\n", r->value("cluster", std::string()).c_str());
                   } else {
                     print_revocations((*r)["revocations"]);
                   }
                   if (r->contains("stats") && (*r)["stats"].is_object()) {
                     std::printf("stats: %s\n", (*r)["stats"].dump().c_str());
                   }
                   return kExitOk;
                 }};
}

}  // namespace

std::vector<Command> add_trust_commands(CLI::App& parent) {
  return {operator_command(parent), identity_command(parent), cert_command(parent), policy_command(parent),
          revocations_command(parent)};
}

}  // namespace weft::cli
