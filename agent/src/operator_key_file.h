#pragma once
// Loading the operator secret key file for the signing commands (trust_files.cpp,
// policy_files.cpp). Errors name the flag and the file.

#include <string>

#include "weft/base/result.h"
#include "weft/transport/trust.h"

namespace weft::agent {

// `passphrase_file` empty: none (a protected key then fails with "needs a passphrase").
[[nodiscard]] Result<transport::OperatorKey> load_operator_key(const std::string& operator_key,
                                                               const std::string& passphrase_file);

}  // namespace weft::agent
