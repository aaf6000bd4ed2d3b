#include "msgpack_json.h"

#include <cstdint>
#include <cstring>

namespace weft::agent {

using nlohmann::json;

std::vector<std::byte> to_msgpack_bytes(const json& j) {
  const std::vector<std::uint8_t> m = json::to_msgpack(j);
  std::vector<std::byte> out(m.size());
  if (!m.empty()) std::memcpy(out.data(), m.data(), m.size());
  return out;
}

std::optional<json> msgpack_object(std::span<const std::byte> bytes, std::size_t max_bytes) {
  if (bytes.empty() || bytes.size() > max_bytes) return std::nullopt;
  try {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    json j = json::from_msgpack(p, p + bytes.size());
    if (j.is_object()) return j;
  } catch (const json::exception&) {
  }
  return std::nullopt;
}

}  // namespace weft::agent
