#include "weft/transport/udp.h"

#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sockaddr.h"

namespace weft::transport {

namespace {

using detail::domain_of;
using detail::errno_text;
using detail::from_sockaddr;
using detail::to_sockaddr;

constexpr std::uint8_t kIcmpDestUnreachable = 3;
constexpr std::uint8_t kIcmpNetUnreachable = 0;
constexpr std::uint8_t kIcmpHostUnreachable = 1;
constexpr std::uint8_t kIcmpPortUnreachable = 3;
constexpr std::uint8_t kIcmp6DestUnreachable = 1;
constexpr std::uint8_t kIcmp6NoRoute = 0;
constexpr std::uint8_t kIcmp6AddrUnreachable = 3;
constexpr std::uint8_t kIcmp6PortUnreachable = 4;

// Bounds retries of one call when the socket reports an error that belongs to an earlier datagram
// (see send_to); each retry consumes that error, so a few are always enough.
constexpr int kPendingErrorRetries = 4;

bool set_int_option(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

// Errors a UDP socket reports on a later call for an ICMP answer to an earlier datagram.
bool is_pending_icmp_error(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENONET || err == EPROTO;
}

}  // namespace

Result<UdpSocket> UdpSocket::bind(const Endpoint& local) {
  const int domain = domain_of(local);
  const int fd = ::socket(domain, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("cannot create a UDP socket: " + errno_text(errno));
  UdpSocket s;
  s.fd_ = fd;  // closed by ~UdpSocket on every error path below

  if (domain == AF_INET) {
    if (!set_int_option(fd, SOL_IP, IP_RECVERR, 1)) {
      return fail("cannot enable IP_RECVERR on udp " + local.to_string() + ": " + errno_text(errno));
    }
  } else {
    if (!set_int_option(fd, SOL_IPV6, IPV6_RECVERR, 1)) {
      return fail("cannot enable IPV6_RECVERR on udp " + local.to_string() + ": " + errno_text(errno));
    }
    // A dual-stack socket gets ICMPv4 errors for v4-mapped peers only with IP_RECVERR as well;
    // on a v6-only socket this may fail, which is harmless.
    (void)set_int_option(fd, SOL_IP, IP_RECVERR, 1);
  }

  sockaddr_storage ss{};
  const socklen_t len = to_sockaddr(local, domain, ss);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    return fail("cannot bind udp " + local.to_string() + ": " + errno_text(errno));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    return fail("cannot read the address of udp " + local.to_string() + ": " + errno_text(errno));
  }
  auto name = from_sockaddr(bound, bound_len);
  s.local_ = local;
  if (name) s.local_.port = name->port;  // keep the caller's address spelling, learn the port
  return s;
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) ::close(fd_);
}

UdpSocket::UdpSocket(UdpSocket&& o) noexcept : fd_(o.fd_), local_(o.local_), stats_(o.stats_) { o.fd_ = -1; }

UdpSocket& UdpSocket::operator=(UdpSocket&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    local_ = o.local_;
    stats_ = o.stats_;
    o.fd_ = -1;
  }
  return *this;
}

bool UdpSocket::send_to(const Endpoint& to, std::span<const std::byte> bytes) {
  if (fd_ < 0) {
    ++stats_.send_errors;
    return false;
  }
  sockaddr_storage ss{};
  const socklen_t len = to_sockaddr(to, domain_of(local_), ss);
  if (len == 0) {  // a v6 peer from a v4 socket
    ++stats_.send_errors;
    return false;
  }
  for (int attempt = 0;; ++attempt) {
    const ssize_t n = ::sendto(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                               reinterpret_cast<const sockaddr*>(&ss), len);
    if (n >= 0) {
      ++stats_.sent;
      return true;
    }
    const int err = errno;
    if (err == EINTR && attempt < kPendingErrorRetries) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
      ++stats_.send_dropped;
      return false;
    }
    // With IP_RECVERR the ICMP answer to an earlier datagram is also left in the socket's error
    // slot, and the next sendto() to anyone fails with it (ECONNREFUSED…) without sending. The
    // failure detector reads that answer from the error queue; this datagram is sent again.
    if (is_pending_icmp_error(err) && attempt < kPendingErrorRetries) {
      ++stats_.send_retried;
      continue;
    }
    ++stats_.send_errors;
    return false;
  }
}

std::optional<Endpoint> UdpSocket::recv_from(std::vector<std::byte>& buf, std::size_t max_bytes) {
  buf.resize(max_bytes);
  std::size_t size = 0;
  auto from = recv_into(buf, size);
  buf.resize(from ? size : 0);
  return from;
}

std::optional<Endpoint> UdpSocket::recv_into(std::span<std::byte> room, std::size_t& size_out) {
  if (fd_ < 0) return std::nullopt;
  const std::size_t max_bytes = room.size();
  int pending_errors = 0;
  for (;;) {
    sockaddr_storage from{};
    iovec iov{room.data(), room.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    // MSG_TRUNC: the return value is the datagram's real length, so truncation is visible.
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      const int err = errno;
      // An ICMP error for an earlier send surfaces here too; reading it clears it.
      if ((err == EINTR || is_pending_icmp_error(err)) && ++pending_errors <= kPendingErrorRetries) continue;
      return std::nullopt;  // EAGAIN: nothing waiting
    }
    const auto size = static_cast<std::size_t>(n);
    if (size > max_bytes || (msg.msg_flags & MSG_TRUNC) != 0) {
      ++stats_.truncated;
      continue;  // dropped; look at the next one so that nullopt keeps meaning "queue empty"
    }
    auto endpoint = from_sockaddr(from, msg.msg_namelen);
    if (!endpoint) continue;  // not an IP sender: cannot happen on an AF_INET/AF_INET6 socket
    ++stats_.received;
    size_out = size;
    return endpoint;
  }
}

std::optional<Unreachable> UdpSocket::recv_error() {
  if (fd_ < 0) return std::nullopt;
  for (;;) {
    sockaddr_storage to{};
    alignas(cmsghdr) unsigned char control[512];
    msghdr msg{};
    msg.msg_name = &to;
    msg.msg_namelen = sizeof to;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    // No data buffer: the payload of the refused datagram is not needed (it comes back MSG_TRUNC).
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;  // EAGAIN: the queue is empty
    }
    std::optional<Unreachable> report;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      const bool v4 = c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR;
      const bool v6 = c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR;
      if ((!v4 && !v6) || c->cmsg_len < CMSG_LEN(sizeof(sock_extended_err))) continue;
      sock_extended_err ee{};
      std::memcpy(&ee, CMSG_DATA(c), sizeof ee);
      bool unreachable = false;
      bool port = false;
      if (ee.ee_origin == SO_EE_ORIGIN_ICMP && ee.ee_type == kIcmpDestUnreachable) {
        port = ee.ee_code == kIcmpPortUnreachable;
        unreachable = port || ee.ee_code == kIcmpNetUnreachable || ee.ee_code == kIcmpHostUnreachable;
      } else if (ee.ee_origin == SO_EE_ORIGIN_ICMP6 && ee.ee_type == kIcmp6DestUnreachable) {
        port = ee.ee_code == kIcmp6PortUnreachable;
        unreachable = port || ee.ee_code == kIcmp6NoRoute || ee.ee_code == kIcmp6AddrUnreachable;
      }
      if (!unreachable) continue;
      // msg_name holds the destination of the refused datagram (not the ICMP sender).
      auto dest = from_sockaddr(to, msg.msg_namelen);
      if (!dest) continue;
      report = Unreachable{*dest, port};
    }
    if (report) {
      ++stats_.unreachable;
      return report;
    }
    // Anything else (time exceeded, fragmentation needed, local errors) is consumed and skipped.
  }
}

}  // namespace weft::transport
