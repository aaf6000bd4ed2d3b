#pragma once
// Non-blocking UDP socket for gossip, with the kernel's error queue switched on (IP_RECVERR /
// IPV6_RECVERR) so that "port unreachable" answers to our datagrams reach the failure detector.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"

namespace weft::transport {

struct UdpStats {
  std::uint64_t sent = 0;
  std::uint64_t send_dropped = 0;     // EAGAIN / ENOBUFS: the datagram was dropped
  std::uint64_t send_errors = 0;      // any other errno
  std::uint64_t send_retried = 0;     // an earlier datagram's ICMP error failed a send: sent again
  std::uint64_t received = 0;
  std::uint64_t truncated = 0;        // larger than the receive buffer: dropped
  std::uint64_t unreachable = 0;      // ICMP port/host/net unreachable reports
};

// What the error queue said about one of our datagrams.
struct Unreachable {
  Endpoint to;       // where the refused datagram was going
  bool port = false; // ICMP port unreachable (nobody listens): the strong kind
};

class UdpSocket {
 public:
  // Binds ip:port (port 0 picks one). SO_REUSEADDR is not set: two agents on one address fail.
  static Result<UdpSocket> bind(const Endpoint& local);
  UdpSocket() = default;
  ~UdpSocket();
  UdpSocket(UdpSocket&& o) noexcept;
  UdpSocket& operator=(UdpSocket&& o) noexcept;
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] const Endpoint& local() const { return local_; }

  // Sends one datagram; never blocks. Returns false if it was dropped (counted).
  bool send_to(const Endpoint& to, std::span<const std::byte> bytes);
  // Reads one datagram into `buf` (resized to the datagram); nullopt when none is waiting.
  // Truncated datagrams are dropped and counted.
  std::optional<Endpoint> recv_from(std::vector<std::byte>& buf, std::size_t max_bytes);
  // The same into `room` (datagrams longer than it are dropped and counted), without resizing
  // anything: `size` gets the datagram's length. A loop that reads into one buffer avoids
  // zero-filling it on every call, as recv_from's resize does.
  std::optional<Endpoint> recv_into(std::span<std::byte> room, std::size_t& size);
  // Reads one entry of the error queue; nullopt when empty. Entries that are not ICMP
  // unreachable reports are consumed and skipped.
  std::optional<Unreachable> recv_error();

  [[nodiscard]] const UdpStats& stats() const { return stats_; }

 private:
  int fd_ = -1;
  Endpoint local_{};
  UdpStats stats_{};
};

}  // namespace weft::transport
