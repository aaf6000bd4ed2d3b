#pragma once
// Subcommands of the `weft` binary. Each registers its flags on the app and returns how to run
// it once parsed; main.cpp stays a thin dispatcher as `weft agent`, `weft members`... arrive.

#include <functional>
#include <vector>

namespace CLI {
class App;
}

namespace weft::cli {

// Process exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the command ran and failed
inline constexpr int kExitUsage = 2;    // bad flags or values

struct Command {
  CLI::App* app = nullptr;   // the subcommand, to check whether it was chosen
  std::function<int()> run;  // returns the exit code
};

Command add_sim_command(CLI::App& parent);
Command add_agent_command(CLI::App& parent);
std::vector<Command> add_client_commands(CLI::App& parent);
std::vector<Command> add_service_commands(CLI::App& parent);
std::vector<Command> add_trust_commands(CLI::App& parent);  // operator, identity, cert, policy

}  // namespace weft::cli
