#include "sockaddr.h"

#include <cstring>
#include <system_error>

namespace weft::transport::detail {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

int domain_of(const Endpoint& e) { return e.family == Endpoint::Family::kV4 ? AF_INET : AF_INET6; }

socklen_t to_sockaddr(const Endpoint& e, int domain, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  if (domain == AF_INET) {
    if (e.family != Endpoint::Family::kV4) return 0;
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(e.port);
    std::memcpy(&sin->sin_addr, e.ip.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(e.port);
  if (e.family == Endpoint::Family::kV4) {
    sin6->sin6_addr.s6_addr[10] = 0xff;
    sin6->sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&sin6->sin6_addr.s6_addr[12], e.ip.data(), 4);
  } else {
    std::memcpy(&sin6->sin6_addr, e.ip.data(), 16);
  }
  return sizeof(sockaddr_in6);
}

std::optional<Endpoint> from_sockaddr(const sockaddr_storage& ss, socklen_t len) {
  Endpoint e;
  if (ss.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    std::memcpy(e.ip.data(), &sin->sin_addr, 4);
    e.port = ntohs(sin->sin_port);
    e.family = Endpoint::Family::kV4;
    return e;
  }
  if (ss.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    e.port = ntohs(sin6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      std::memcpy(e.ip.data(), &sin6->sin6_addr.s6_addr[12], 4);
      e.family = Endpoint::Family::kV4;
    } else {
      std::memcpy(e.ip.data(), &sin6->sin6_addr, 16);
      e.family = Endpoint::Family::kV6;
    }
    return e;
  }
  return std::nullopt;
}

}  // namespace weft::transport::detail
