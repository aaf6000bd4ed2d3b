#pragma once
// `weft agent`: runs one agent until it is told to leave (SIGTERM, SIGINT or `weft leave`).

#include <string>

#include "weft/agent/config.h"

namespace weft::agent {

// Returns the process exit code: 0 after a graceful leave, 1 on a start-up or runtime error
// (printed as one line "weft: ..."), 2 for bad settings. `flags` is kept for SIGHUP reloads.
int run_agent(const AgentConfig& cfg, const AgentFlags& flags);

// A new random cluster key in base64 (`weft keygen`).
std::string generate_cluster_key();

}  // namespace weft::agent
