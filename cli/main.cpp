// weft: the single binary. Parses flags and dispatches to one subcommand (cli/commands.h).

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include <cstdio>
#include <exception>
#include <new>
#include <vector>

#include "commands.h"

#ifndef WEFT_VERSION
#define WEFT_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  using namespace weft::cli;
  CLI::App app{"weft: a decentralized service mesh", "weft"};
  app.set_version_flag("--version", "weft " WEFT_VERSION);
  app.require_subcommand(1);

  std::vector<Command> commands;
  commands.push_back(add_agent_command(app));
  for (Command& c : add_client_commands(app)) commands.push_back(std::move(c));
  for (Command& c : add_service_commands(app)) commands.push_back(std::move(c));
  for (Command& c : add_trust_commands(app)) commands.push_back(std::move(c));
  commands.push_back(add_sim_command(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "weft: %s (see weft --help)\n", e.what());
    return kExitUsage;
  }
  try {
    for (const Command& c : commands) {
      if (c.app->parsed()) return c.run();
    }
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "weft: out of memory\n");
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft: %s\n", e.what());
    return kExitFailure;
  }
  return kExitUsage;
}
