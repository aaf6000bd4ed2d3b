#include "frame.h"

#include <string_view>

namespace weft::agent {

void encode_frame(FrameKind kind, const Endpoint& from, std::span<const std::byte> body, std::vector<std::byte>& out) {
  const std::string addr = from.to_string();
  out.clear();
  out.reserve(3 + addr.size() + body.size());
  out.push_back(std::byte{kFrameVersion});
  out.push_back(static_cast<std::byte>(kind));
  out.push_back(static_cast<std::byte>(addr.size()));  // "[v6]:port" is at most 47 bytes
  for (char c : addr) out.push_back(static_cast<std::byte>(c));
  out.insert(out.end(), body.begin(), body.end());
}

Result<FrameView> decode_frame(std::span<const std::byte> bytes) {
  if (bytes.size() < 3) return fail("frame too short");
  if (std::to_integer<std::uint8_t>(bytes[0]) != kFrameVersion) return fail("unknown frame version");
  const auto kind = std::to_integer<std::uint8_t>(bytes[1]);
  if (kind > static_cast<std::uint8_t>(FrameKind::kSignedDocResponse)) return fail("unknown frame kind");
  const std::size_t len = std::to_integer<std::uint8_t>(bytes[2]);
  if (bytes.size() < 3 + len) return fail("frame address truncated");
  const std::string_view addr(reinterpret_cast<const char*>(bytes.data() + 3), len);
  auto from = Endpoint::parse(addr);
  if (!from || from->port == 0) return fail("bad frame address");
  return FrameView{static_cast<FrameKind>(kind), *from, bytes.subspan(3 + len)};
}

}  // namespace weft::agent
