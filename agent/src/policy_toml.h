#pragma once
// The TOML policy file -> transport::Policy (format in weft/agent/policy_files.h).

#include <string>
#include <string_view>

#include "weft/base/result.h"
#include "weft/transport/policy.h"

namespace weft::agent {

// `file` names the source in errors ("FILE: line 7: rule 1: action ...").
[[nodiscard]] Result<transport::Policy> parse_policy_toml(std::string_view text, const std::string& file);

}  // namespace weft::agent
