#pragma once
// Reliable agent <-> agent messages over ZeroMQ TCP (join and push-pull state syncs, key
// operations). One ROUTER bound at tcp://ip:port receives; one DEALER per peer, connected on
// first use, sends. Messages are opaque bytes (the caller seals them); the sender's identity is
// not trusted: the caller puts its own address inside the seal.
//
// A DEALER idle for longer than `idle_close` is closed (linger 0), so a dead peer costs nothing
// after a while. Sends never block: when a peer's queue is full the message is dropped and
// counted, as a lost UDP datagram would be; the protocol above retries.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/base/time.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace weft::transport {

struct ReliableOptions {
  std::size_t max_message_bytes = 8u << 20;  // ZMQ_MAXMSGSIZE on the ROUTER: larger peers are cut off
  int send_hwm = 16;                         // messages queued per peer before drops
  Duration idle_close = std::chrono::seconds(15);
  // A DEALER whose peer is not listening (yet) retries after reconnect_interval, doubling up to
  // reconnect_interval_max: a join sent while the seed is still starting is delivered ~100 ms
  // after the seed listens, and a dead peer costs a connect attempt every few seconds at most.
  Duration reconnect_interval = std::chrono::milliseconds(100);
  Duration reconnect_interval_max = std::chrono::seconds(2);
  // Partitions. A DEALER's TCP connection whose data goes unacknowledged for unacked_timeout is
  // aborted (TCP_USER_TIMEOUT, through ZMQ_TCP_MAXRT), and a connection attempt not established
  // within connect_timeout is given up (ZMQ_CONNECT_TIMEOUT); either way ZeroMQ dials again after
  // reconnect_interval. Without them a connection that carried a message into a partition stays
  // established while TCP backs its retransmissions off (0.2 s doubling, up to 2 min apart, for
  // ~15 min), and a connect's SYNs back off alike (TCP_USER_TIMEOUT does not cover them): once
  // the partition heals, what is queued for the peer (the reconnect syncs that merge the cluster,
  // the signed-document fetches) waits for the next retransmission, 18 s and more after a 33 s
  // partition whatever reconnect_interval says (tests/mp/policy_partition_test.cpp). With them
  // a fresh SYN reaches a healed peer within a few seconds. 0: the kernel's default.
  Duration unacked_timeout = std::chrono::seconds(10);
  Duration connect_timeout = std::chrono::seconds(3);
};

struct ReliableStats {
  std::uint64_t sent = 0;
  std::uint64_t send_dropped = 0;    // peer queue full (or an empty message): not sent
  std::uint64_t received = 0;
  std::uint64_t recv_skipped = 0;    // messages without a payload frame, multi-part or empty
  std::uint64_t connects = 0;        // DEALERs created
  std::uint64_t idle_closed = 0;
  std::uint64_t errors = 0;          // ZeroMQ calls that failed (zmq::error_t, caught here)
};

class ReliableChannel {
 public:
  // Binds the ROUTER at tcp://ip:port; port 0 lets the system pick one (see local()). `ctx` must
  // outlive the channel.
  static Result<ReliableChannel> bind(zmq::context_t& ctx, const Endpoint& local, ReliableOptions opts = {});
  ReliableChannel();
  ~ReliableChannel();
  ReliableChannel(ReliableChannel&&) noexcept;
  ReliableChannel& operator=(ReliableChannel&&) noexcept;

  // The ROUTER, for zmq::poll (ZMQ_POLLIN).
  [[nodiscard]] zmq::socket_t& socket();
  // The bound address, with the port the system picked when bind() was given port 0.
  [[nodiscard]] const Endpoint& local() const;
  // Queues `bytes` for `to`; returns false if dropped. `now` marks the peer as used. Empty
  // messages are not sent (the receiver skips them).
  bool send(TimePoint now, const Endpoint& to, std::span<const std::byte> bytes);
  // One received message, or nullopt when none is waiting. Multi-part or empty frames are
  // skipped.
  std::optional<std::vector<std::byte>> recv();
  // Closes DEALERs unused for idle_close or longer; returns the next time worth calling (always
  // after `now`).
  TimePoint close_idle(TimePoint now);
  [[nodiscard]] std::size_t peers() const;
  [[nodiscard]] const ReliableStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::transport
