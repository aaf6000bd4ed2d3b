#pragma once
// JSON <-> msgpack for the agent's small wire and storage maps (catalog.h, doc_sync.h, keyops.cpp).
// One copy, so that every decoder of untrusted bytes applies the same checks: a size cap chosen
// by the caller (checked before parsing), an empty input refused, nesting bounded (the parser
// recurses per level), library exceptions caught, and only a msgpack map accepted.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

namespace weft::agent {

// Deeper than any map the agent exchanges (a catalog: map > services > service > tags).
inline constexpr std::size_t kMaxMsgpackDepth = 8;

// The msgpack encoding of `j`.
[[nodiscard]] std::vector<std::byte> to_msgpack_bytes(const nlohmann::json& j);

// Untrusted bytes to a JSON object: nullopt unless `bytes` is 1..max_bytes long and one msgpack
// map nested at most kMaxMsgpackDepth deep. Never throws.
[[nodiscard]] std::optional<nlohmann::json> msgpack_object(std::span<const std::byte> bytes, std::size_t max_bytes);

}  // namespace weft::agent
