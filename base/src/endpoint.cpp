#include "weft/base/endpoint.h"

#include <charconv>
#include <cstdio>

namespace weft {

Endpoint Endpoint::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d, std::uint16_t p) {
  Endpoint e;
  e.ip[0] = a;
  e.ip[1] = b;
  e.ip[2] = c;
  e.ip[3] = d;
  e.port = p;
  return e;
}

namespace {

Result<std::uint16_t> parse_port(std::string_view s) {
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size() || value > 65535) {
    return fail("bad port '" + std::string(s) + "'");
  }
  return static_cast<std::uint16_t>(value);
}

bool parse_v4(std::string_view s, std::array<std::uint8_t, 16>& out) {
  for (int i = 0; i < 4; ++i) {
    auto dot = s.find('.');
    std::string_view part = i < 3 ? s.substr(0, dot) : s;
    if ((i < 3 && dot == std::string_view::npos) || part.empty() || part.size() > 3) return false;
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || ptr != part.data() + part.size() || v > 255) return false;
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
    if (i < 3) s.remove_prefix(dot + 1);
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 4291 text form, including "::" compression. Embedded IPv4 tails are not accepted.
bool parse_v6(std::string_view s, std::array<std::uint8_t, 16>& out) {
  std::array<std::uint16_t, 8> groups{};
  int n = 0;
  int gap = -1;
  std::size_t i = 0;
  if (s.starts_with("::")) {
    gap = 0;
    i = 2;
    if (s.size() == 2) {
      out.fill(0);
      return true;
    }
  }
  while (i < s.size()) {
    if (n == 8) return false;
    unsigned v = 0;
    std::size_t digits = 0;
    while (i < s.size() && s[i] != ':') {
      int h = hex_value(s[i]);
      if (h < 0 || ++digits > 4) return false;
      v = v * 16 + static_cast<unsigned>(h);
      ++i;
    }
    if (digits == 0) return false;
    groups[static_cast<std::size_t>(n++)] = static_cast<std::uint16_t>(v);
    if (i == s.size()) break;
    ++i;  // ':'
    if (i < s.size() && s[i] == ':') {
      if (gap >= 0) return false;
      gap = n;
      ++i;
      if (i == s.size()) break;
    } else if (i == s.size()) {
      return false;  // trailing single ':'
    }
  }
  if (gap < 0 && n != 8) return false;
  if (gap >= 0 && n == 8) return false;
  std::array<std::uint16_t, 8> full{};
  if (gap < 0) {
    full = groups;
  } else {
    int tail = n - gap;
    for (int k = 0; k < gap; ++k) full[static_cast<std::size_t>(k)] = groups[static_cast<std::size_t>(k)];
    for (int k = 0; k < tail; ++k) {
      full[static_cast<std::size_t>(8 - tail + k)] = groups[static_cast<std::size_t>(gap + k)];
    }
  }
  for (std::size_t k = 0; k < 8; ++k) {
    out[2 * k] = static_cast<std::uint8_t>(full[k] >> 8);
    out[2 * k + 1] = static_cast<std::uint8_t>(full[k] & 0xff);
  }
  return true;
}

}  // namespace

Result<Endpoint> Endpoint::parse(std::string_view text) {
  Endpoint e;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return fail("bad address '" + std::string(text) + "': expected [IPv6]:PORT");
    if (!parse_v6(text.substr(1, close - 1), e.ip)) return fail("bad IPv6 address in '" + std::string(text) + "'");
    e.family = Family::kV6;
    auto port = parse_port(text.substr(close + 2));
    if (!port) return fail(port.error().message);
    e.port = *port;
    return e;
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return fail("bad address '" + std::string(text) + "': expected IP:PORT");
  if (!parse_v4(text.substr(0, colon), e.ip)) return fail("bad IPv4 address in '" + std::string(text) + "'");
  auto port = parse_port(text.substr(colon + 1));
  if (!port) return fail(port.error().message);
  e.port = *port;
  return e;
}

std::string Endpoint::to_string() const {
  char buf[64];
  if (family == Family::kV4) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u:%u", ip[0], ip[1], ip[2], ip[3], port);
    return buf;
  }
  // Full (uncompressed) form is unambiguous and round-trips through parse().
  std::string out = "[";
  for (std::size_t k = 0; k < 8; ++k) {
    std::snprintf(buf, sizeof buf, "%x", (ip[2 * k] << 8) | ip[2 * k + 1]);
    out += buf;
    if (k < 7) out += ':';
  }
  std::snprintf(buf, sizeof buf, "]:%u", port);
  return out + buf;
}

std::size_t EndpointHash::operator()(const Endpoint& e) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::size_t i = 0; i < e.ip_size(); ++i) h = (h ^ e.ip[i]) * 1099511628211ULL;
  h = (h ^ e.port) * 1099511628211ULL;
  return static_cast<std::size_t>(h);
}

}  // namespace weft
