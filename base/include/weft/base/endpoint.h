#pragma once
// Endpoint: an IPv4 or IPv6 address and a port, as plain bytes (no sockaddr here:
// base and gossip stay free of socket headers).

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "weft/base/result.h"

namespace weft {

struct Endpoint {
  enum class Family : std::uint8_t { kV4 = 4, kV6 = 6 };

  std::array<std::uint8_t, 16> ip{};  // v4 uses the first 4 bytes
  std::uint16_t port = 0;
  Family family = Family::kV4;

  static Endpoint v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d, std::uint16_t port);
  // Parses "1.2.3.4:5" or "[::1]:5". Port 0 is allowed (means "pick one" when binding).
  static Result<Endpoint> parse(std::string_view text);
  [[nodiscard]] std::string to_string() const;
  [[nodiscard]] std::size_t ip_size() const { return family == Family::kV4 ? 4 : 16; }

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
};

struct EndpointHash {
  std::size_t operator()(const Endpoint& e) const noexcept;
};

}  // namespace weft
