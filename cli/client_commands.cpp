// Client subcommands: members, join, leave, info, keys, keygen. Each asks the local agent over
// the RPC socket (weft/agent/rpc.h) and renders the answer as a table or JSON.

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client.h"
#include "commands.h"
#include "weft/agent/rpc.h"
#include "weft/agent/agent.h"
#include "weft/agent/trust_files.h"

namespace weft::cli {

namespace {

Command members_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  auto status = std::make_shared<std::string>();
  CLI::App* app = parent.add_subcommand("members", "List the members this agent knows");
  add_client_options(app, *o, true);
  app->add_option("--status", *status, "Only members in this state: alive, suspect, failed or left")
      ->check(CLI::IsMember({"alive", "suspect", "failed", "left"}));
  return Command{app, [o, status] {
                   auto r = call(*o, "members", json::object());
                   if (!r) return kExitFailure;
                   json list = json::array();
                   for (const json& m : (*r)["members"]) {
                     if (status->empty() || m.value("status", "") == *status) list.push_back(m);
                   }
                   if (o->json) {
                     print_json(list);
                     return kExitOk;
                   }
                   std::vector<std::vector<std::string>> rows = {{"NAME", "ADDRESS", "STATUS", "INCARNATION", "TAGS"}};
                   for (const json& m : list) {
                     rows.push_back({m.value("name", ""), m.value("addr", ""), m.value("status", ""),
                                     std::to_string(m.value("incarnation", std::uint64_t{0})), tags_text(m["tags"])});
                   }
                   print_table(rows);
                   return kExitOk;
                 }};
}

Command join_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  auto addrs = std::make_shared<std::vector<std::string>>();
  CLI::App* app = parent.add_subcommand("join", "Ask the agent to join the cluster through these agents");
  add_client_options(app, *o, false);
  app->add_option("addrs", *addrs, "IP:PORT of agents to join")->required();
  return Command{app, [o, addrs] {
                   auto r = call(*o, "join", json{{"addrs", *addrs}}, std::chrono::seconds(15));
                   if (!r) return kExitFailure;
                   std::printf("joined: %zu alive members\n", r->value("members", std::size_t{0}));
                   return kExitOk;
                 }};
}

Command leave_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("leave", "Gracefully leave the cluster and stop the agent");
  add_client_options(app, *o, false);
  return Command{app, [o] {
                   auto r = call(*o, "leave", json::object(), std::chrono::seconds(15));
                   if (!r) return kExitFailure;
                   std::printf("left the cluster\n");
                   return kExitOk;
                 }};
}

Command info_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("info", "Show this agent: node, members, keys, counters");
  add_client_options(app, *o, true);
  return Command{app, [o] {
                   auto r = call(*o, "info", json::object());
                   if (!r) return kExitFailure;
                   if (o->json) {
                     print_json(*r);
                     return kExitOk;
                   }
                   // Text: one "section.key = value" line per scalar, like `serf info`.
                   std::vector<std::pair<std::string, const json*>> stack = {{"", &*r}};
                   std::vector<std::vector<std::string>> rows;
                   std::function<void(const std::string&, const json&)> walk = [&](const std::string& prefix,
                                                                                    const json& j) {
                     if (j.is_object()) {
                       for (const auto& [k, v] : j.items()) walk(prefix.empty() ? k : prefix + "." + k, v);
                     } else {
                       rows.push_back({prefix, "=", j.is_string() ? j.get<std::string>() : j.dump()});
                     }
                   };
                   walk("", *r);
                   print_table(rows);
                   return kExitOk;
                 }};
}

// Prints the outcome of a cluster-wide key operation; fails if any member failed or was silent.
int key_op_outcome(const json& r, bool list) {
  const auto members = r.value("members", std::size_t{0});
  const auto responses = r.value("responses", std::size_t{0});
  std::printf("%zu of %zu members answered\n", responses, members);
  int code = kExitOk;
  if (r.contains("failed") && r["failed"].is_object()) {
    for (const auto& [node, why] : r["failed"].items()) {
      std::printf("  %s: %s\n", node.c_str(), why.is_string() ? why.get<std::string>().c_str() : "failed");
      code = kExitFailure;
    }
  }
  if (r.contains("no_response") && r["no_response"].is_array()) {
    for (const json& n : r["no_response"]) {
      std::printf("  %s: no response\n", n.is_string() ? n.get<std::string>().c_str() : "?");
      code = kExitFailure;
    }
  }
  if (list && r.contains("keys") && r["keys"].is_object()) {
    const std::string primary = r.value("primary", "");
    std::vector<std::vector<std::string>> rows = {{"KEY", "MEMBERS", ""}};
    for (const auto& [id, n] : r["keys"].items()) {
      rows.push_back({id, std::to_string(n.get<std::size_t>()) + "/" + std::to_string(members),
                      id == primary ? "primary (this agent)" : ""});
    }
    print_table(rows);
  }
  return code;
}

// With a trust root, the agent applies install / use / remove only when operator-signed.
struct KeySigning {
  std::string operator_key;
  std::string passphrase_file;
  std::string cluster;  // empty: the agent's own (its `info`), or "default" without a trust root
  std::string out;      // write the signed step here instead of sending it (offline signing)
  std::string signed_file;  // send this step signed elsewhere (--out) instead of signing here
};

// The armored signed step for `op` on `key`, or nullopt after printing the error line.
std::optional<std::string> sign_key_step(const ClientOptions& o, const KeySigning& s, const std::string& op,
                                         const std::string& key) {
  std::string cluster = s.cluster;
  if (cluster.empty() && !s.out.empty()) cluster = "default";  // offline: no agent to ask
  if (cluster.empty()) {
    auto info = call(o, "info", json::object());
    if (!info) return std::nullopt;
    const json& t = (*info)["trust"];
    cluster = t.is_object() && t["cluster"].is_string() ? t["cluster"].get<std::string>() : "default";
  }
  const auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  auto text = agent::key_op_sign({op, key, cluster, s.operator_key, s.passphrase_file, now});
  if (!text) {
    std::fprintf(stderr, "weft: %s\n", text.error().message.c_str());
    return std::nullopt;
  }
  return *text;
}

Command keys_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  auto key = std::make_shared<std::string>();
  auto signing = std::make_shared<KeySigning>();
  CLI::App* app = parent.add_subcommand("keys", "List or rotate the cluster keys on every member");
  app->require_subcommand(1);
  CLI::App* list = app->add_subcommand("list", "Which members hold which key");
  add_client_options(list, *o, true);
  struct Op {
    const char* name;
    const char* help;
    CLI::App* app = nullptr;
  };
  auto ops = std::make_shared<std::vector<Op>>(std::vector<Op>{
      {"install", "Install a key on every member (it decrypts; the primary still encrypts)"},
      {"use", "Make an installed key the primary (encrypting) key on every member"},
      {"remove", "Remove a key from every member (not the primary)"}});
  for (Op& op : *ops) {
    op.app = app->add_subcommand(op.name, op.help);
    add_client_options(op.app, *o, true);
    op.app->add_option("key", *key, "The key (base64), or for use/remove its 8-digit id")->required();
    op.app->add_option("--operator-key", signing->operator_key,
                       "Sign the step with this operator secret key file (needed when agents have a trust root)");
    op.app->add_option("--passphrase-file", signing->passphrase_file,
                       "The operator key's passphrase (first line of this file)");
    op.app->add_option("--cluster", signing->cluster,
                       "The cluster to sign for (default: the agent's; with --out: \"default\")");
    op.app->add_option("--out", signing->out,
                       "With --operator-key: write the signed step to this file instead of sending it (sign "
                       "on the offline machine; the step is valid for 10 minutes)");
    op.app->add_option("--signed", signing->signed_file,
                       "Send this signed step (written by --out elsewhere) instead of signing here");
  }
  return Command{app, [o, key, list, ops, signing] {
                   std::string method = "keys.list";
                   for (const Op& op : *ops) {
                     if (op.app->parsed()) method = std::string("keys.") + op.name;
                   }
                   json params = json::object();
                   if (method != "keys.list") params["key"] = *key;
                   if (signing->operator_key.empty() &&
                       (!signing->passphrase_file.empty() || !signing->cluster.empty())) {
                     std::fprintf(stderr, "weft: --passphrase-file and --cluster sign the step: give --operator-key\n");
                     return kExitUsage;
                   }
                   if (!signing->out.empty() && signing->operator_key.empty()) {
                     std::fprintf(stderr, "weft: --out writes a signed step: give --operator-key\n");
                     return kExitUsage;
                   }
                   if (!signing->signed_file.empty() && !signing->operator_key.empty()) {
                     std::fprintf(stderr, "weft: give either --signed (a step signed elsewhere) or --operator-key\n");
                     return kExitUsage;
                   }
                   if (method != "keys.list" && !signing->operator_key.empty()) {
                     auto text = sign_key_step(*o, *signing, method.substr(5), *key);
                     if (!text) return kExitFailure;
                     if (!signing->out.empty()) {
                       if (!write_new_text_file(signing->out, *text)) return kExitFailure;
                       std::printf("signed %s step written to %s (valid for 10 minutes): on a host with an agent run\n"
                                   "  weft keys %s %s --signed %s\n",
                                   method.substr(5).c_str(), signing->out.c_str(), method.substr(5).c_str(),
                                   "KEY", signing->out.c_str());  // never print a key
                       return kExitOk;
                     }
                     params["signed"] = *text;
                   }
                   if (method != "keys.list" && !signing->signed_file.empty()) {
                     auto text = read_signed_document(signing->signed_file);
                     if (!text) return kExitFailure;
                     params["signed"] = *text;
                   }
                   auto r = call(*o, method, params, std::chrono::seconds(15));
                   if (!r) return kExitFailure;
                   if (o->json) {
                     print_json(*r);
                     const bool bad = (r->contains("failed") && !(*r)["failed"].empty()) ||
                                      (r->contains("no_response") && !(*r)["no_response"].empty());
                     return bad ? kExitFailure : kExitOk;
                   }
                   (void)list;
                   return key_op_outcome(*r, method == "keys.list");
                 }};
}

Command keygen_command(CLI::App& parent) {
  CLI::App* app = parent.add_subcommand("keygen", "Print a new random cluster key (base64)");
  return Command{app, [] {
                   std::printf("%s\n", agent::generate_cluster_key().c_str());
                   return kExitOk;
                 }};
}

}  // namespace

std::vector<Command> add_client_commands(CLI::App& parent) {
  return {members_command(parent), join_command(parent),  leave_command(parent),
          info_command(parent),    keys_command(parent),  keygen_command(parent)};
}

}  // namespace weft::cli
