#pragma once
// A node's long-term keys: Ed25519 for signatures, X25519 for key exchange (separate keys).
// Created at the agent's first start and stored by weft::store; issues 4 and 5 use them.

#include <array>
#include <span>
#include <string>

#include "weft/base/result.h"

namespace weft::transport {

struct NodeIdentity {
  std::array<unsigned char, 32> sign_pk{};
  std::array<unsigned char, 64> sign_sk{};
  std::array<unsigned char, 32> kx_pk{};
  std::array<unsigned char, 32> kx_sk{};

  static NodeIdentity generate();
  // Checks that the secret keys match the public ones (a damaged database row fails here).
  [[nodiscard]] Result<void> check() const;
};

// Hex of the first 8 bytes of the signing key: how `weft info` names the node key.
[[nodiscard]] std::string fingerprint(const NodeIdentity& id);

}  // namespace weft::transport
