#pragma once
// Endpoint <-> sockaddr for the module's sockets (UDP gossip and the proxy's TCP), and errno text.

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>

#include "weft/base/endpoint.h"

namespace weft::transport::detail {

[[nodiscard]] std::string errno_text(int err);
// AF_INET or AF_INET6, as the endpoint's family.
[[nodiscard]] int domain_of(const Endpoint& e);
// Fills `ss` for `e` as seen from a socket of `domain`: a v4 endpoint on a v6 socket becomes a
// v4-mapped address (dual-stack sockets). Returns 0 if the endpoint cannot be reached from it.
[[nodiscard]] socklen_t to_sockaddr(const Endpoint& e, int domain, sockaddr_storage& ss);
// The inverse; v4-mapped IPv6 addresses come back as v4 endpoints so that one peer has one name.
[[nodiscard]] std::optional<Endpoint> from_sockaddr(const sockaddr_storage& ss, socklen_t len);

}  // namespace weft::transport::detail
