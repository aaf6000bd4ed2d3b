#pragma once
// Node names of the simulator: node i is "node-<i>" (and lives at endpoint_of(i)).

#include <charconv>
#include <optional>
#include <string_view>

#include "weft/sim/network.h"

namespace weft::sim {

inline constexpr std::string_view kNamePrefix = "node-";

inline std::optional<NodeId> node_of_name(std::string_view name) {
  if (!name.starts_with(kNamePrefix)) return std::nullopt;
  name.remove_prefix(kNamePrefix.size());
  NodeId id = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (ec != std::errc() || ptr != name.data() + name.size()) return std::nullopt;
  return id;
}

}  // namespace weft::sim
