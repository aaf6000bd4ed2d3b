#pragma once
// The data dir and the RPC socket path: owner-only, never through a symlink or someone else's
// directory.

#include <string>

#include "weft/base/result.h"

namespace weft::agent {

// Creates DIR (0700) if missing; refuses a symlink or a directory owned by another user; tightens
// the mode of our own directory to 0700.
[[nodiscard]] Result<void> prepare_data_dir(const std::string& dir);
// flock on DIR/lock: one agent per data dir. Returns the fd to keep open.
[[nodiscard]] Result<int> lock_data_dir(const std::string& dir);
// The socket's directory must be ours and owner-only (created 0700 when missing); an existing
// path must be a socket of ours, not a symlink (a stale one is removed).
[[nodiscard]] Result<void> prepare_rpc_path(const std::string& path);

}  // namespace weft::agent
