// `weft agent`: parses the flags, merges the config file, runs the agent.

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <cstdio>
#include <memory>

#include "commands.h"
#include "weft/agent/agent.h"

namespace weft::cli {

Command add_agent_command(CLI::App& parent) {
  auto flags = std::make_shared<agent::AgentFlags>();
  CLI::App* app = parent.add_subcommand("agent", "Run the weft agent on this host");
  auto opt = [&](const char* name, std::optional<std::string>& out, const char* help) {
    app->add_option_function<std::string>(name, [&out](const std::string& v) { out = v; }, help);
  };
  opt("--node", flags->node, "Node name, unique in the cluster (default: the host name)");
  opt("--cluster", flags->cluster, "The cluster's name; a signed policy must name it (default: default)");
  opt("--bind", flags->bind, "IP:PORT for gossip (UDP) and agent-to-agent messages (TCP)");
  opt("--advertise", flags->advertise, "IP:PORT other agents use to reach this one (default: --bind)");
  app->add_option("--join", flags->join, "IP:PORT of an agent to join (repeatable)");
  opt("--mesh-bind", flags->mesh_bind, "IP:PORT where other agents' proxies connect (default: --bind's IP, port + 1)");
  opt("--data-dir", flags->data_dir, "Directory for the agent's state (created 0700)");
  opt("--rpc", flags->rpc, "Path of the CLI socket (default: DATA_DIR/rpc.sock)");
  opt("--key-file", flags->key_file, "File with the cluster key in base64 (weft keygen)");
  opt("--config", flags->config, "TOML file with the same settings (flags win)");
  app->add_option("--operator-pub", flags->operator_pubs,
                  "Trusted operator public key file (repeatable; two during a root rotation); needs --cert");
  opt("--cert", flags->cert, "This node's certificate (weft cert sign); needs --operator-pub");
  opt("--log-level", flags->log_level, "trace, debug, info, warn, error, critical or off");
  app->add_flag("--log-json", flags->log_json, "Log one JSON object per line");
  app->add_option("--tag", flags->tags, "KEY=VALUE tag spread with our membership (repeatable)");
  app->add_flag("--insecure-plaintext", flags->insecure_plaintext,
                "Run without a cluster key: gossip is neither encrypted nor authenticated");
  return Command{app, [flags] {
                   auto cfg = agent::resolve_config(*flags);
                   if (!cfg) {
                     std::fprintf(stderr, "weft: %s\n", cfg.error().message.c_str());
                     return kExitUsage;
                   }
                   return agent::run_agent(*cfg, *flags);
                 }};
}

}  // namespace weft::cli
