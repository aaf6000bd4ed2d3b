#include "weft/transport/reliable.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <new>
#include <string>
#include <zmq.hpp>

namespace weft::transport {

namespace {

// "tcp://1.2.3.4:5" or "tcp://[v6]:5"; a wildcard port ("*") lets ZeroMQ pick one when binding.
std::string zmq_address(const Endpoint& e, bool wildcard_port) {
  std::string text = e.to_string();  // "ip:port" or "[ip]:port"
  if (wildcard_port) text = text.substr(0, text.rfind(':')) + ":*";
  return "tcp://" + text;
}

// What a DEALER connects to: from our bound IP when it is a specific one of the peer's family
// ("tcp://SRC:0;DST"), so the peer sees the connection come from the address we advertise (a
// multi-homed host, or many agents on loopback: otherwise the kernel picks the source, e.g.
// 127.0.0.1 for every 127.x peer, and a firewall rule by agent address misses it).
std::string connect_address(const Endpoint& local, const Endpoint& to) {
  const bool any = std::all_of(local.ip.begin(), local.ip.begin() + static_cast<std::ptrdiff_t>(local.ip_size()),
                               [](std::uint8_t b) { return b == 0; });
  if (any || local.family != to.family) return zmq_address(to, false);
  Endpoint src = local;
  src.port = 0;
  return "tcp://" + src.to_string() + ";" + to.to_string();
}

int to_zmq_millis(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(ms, 1, std::numeric_limits<int>::max()));
}

}  // namespace

struct ReliableChannel::Impl {
  struct Peer {
    zmq::socket_t socket;
    TimePoint last_used;
  };

  Impl(zmq::context_t& c, ReliableOptions o) : ctx(&c), opts(o) {}

  zmq::context_t* ctx;  // owned by the caller; outlives the channel
  ReliableOptions opts;
  Endpoint local{};
  zmq::socket_t router;
  std::map<Endpoint, Peer> peers;
  ReliableStats stats{};
};

Result<ReliableChannel> ReliableChannel::bind(zmq::context_t& ctx, const Endpoint& local,
                                              ReliableOptions opts) {
  ReliableChannel ch;
  const std::string address = zmq_address(local, local.port == 0);
  try {
    ch.impl_ = std::make_unique<Impl>(ctx, opts);
    Impl& im = *ch.impl_;
    im.router = zmq::socket_t(ctx, zmq::socket_type::router);
    im.router.set(zmq::sockopt::linger, 0);
    const auto max_bytes = std::min<std::size_t>(
        opts.max_message_bytes, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()));
    im.router.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(max_bytes));
    if (local.family == Endpoint::Family::kV6) im.router.set(zmq::sockopt::ipv6, true);
    im.router.bind(address);

    // Learn the port (it differs from local.port only when that was 0).
    const std::string last = im.router.get(zmq::sockopt::last_endpoint);
    const auto colon = last.rfind(':');
    unsigned port = 0;
    const char* first = last.data() + (colon == std::string::npos ? last.size() : colon + 1);
    const char* end = last.data() + last.size();
    auto [ptr, ec] = std::from_chars(first, end, port);
    if (colon == std::string::npos || ec != std::errc() || ptr != end || port == 0 || port > 65535) {
      return fail("cannot read the bound port of " + address + " (ZeroMQ says '" + last + "')");
    }
    im.local = local;
    im.local.port = static_cast<std::uint16_t>(port);
  } catch (const zmq::error_t& e) {
    return fail("cannot bind " + address + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return fail("cannot bind " + address + ": out of memory");
  }
  return ch;
}

ReliableChannel::ReliableChannel() = default;
ReliableChannel::~ReliableChannel() = default;
ReliableChannel::ReliableChannel(ReliableChannel&&) noexcept = default;
ReliableChannel& ReliableChannel::operator=(ReliableChannel&&) noexcept = default;

zmq::socket_t& ReliableChannel::socket() {
  WEFT_CHECK(impl_ != nullptr);
  return impl_->router;
}

const Endpoint& ReliableChannel::local() const {
  static const Endpoint kNone{};
  return impl_ ? impl_->local : kNone;
}

bool ReliableChannel::send(TimePoint now, const Endpoint& to, std::span<const std::byte> bytes) {
  if (!impl_) return false;
  Impl& im = *impl_;
  if (bytes.empty()) {  // the receiver would skip it anyway
    ++im.stats.send_dropped;
    return false;
  }
  try {
    auto it = im.peers.find(to);
    if (it == im.peers.end()) {
      zmq::socket_t dealer(*im.ctx, zmq::socket_type::dealer);
      dealer.set(zmq::sockopt::linger, 0);
      dealer.set(zmq::sockopt::sndhwm, std::max(im.opts.send_hwm, 1));
      dealer.set(zmq::sockopt::reconnect_ivl, to_zmq_millis(im.opts.reconnect_interval));
      dealer.set(zmq::sockopt::reconnect_ivl_max, to_zmq_millis(im.opts.reconnect_interval_max));
      if (im.opts.unacked_timeout > Duration::zero()) {
        dealer.set(zmq::sockopt::tcp_maxrt, to_zmq_millis(im.opts.unacked_timeout));
      }
      if (im.opts.connect_timeout > Duration::zero()) {
        dealer.set(zmq::sockopt::connect_timeout, to_zmq_millis(im.opts.connect_timeout));
      }
      if (to.family == Endpoint::Family::kV6) dealer.set(zmq::sockopt::ipv6, true);
      // Without ZMQ_IMMEDIATE the DEALER queues (up to the HWM) while the TCP connect is pending.
      dealer.connect(connect_address(im.local, to));
      it = im.peers.emplace(to, Impl::Peer{std::move(dealer), now}).first;
      ++im.stats.connects;
    }
    it->second.last_used = now;
    zmq::message_t msg(bytes.data(), bytes.size());
    if (!it->second.socket.send(msg, zmq::send_flags::dontwait)) {
      ++im.stats.send_dropped;  // queue full: the peer is slow or not there
      return false;
    }
    ++im.stats.sent;
    return true;
  } catch (const zmq::error_t&) {
    ++im.stats.errors;
    return false;
  } catch (const std::bad_alloc&) {
    ++im.stats.errors;
    return false;
  }
}

std::optional<std::vector<std::byte>> ReliableChannel::recv() {
  if (!impl_) return std::nullopt;
  Impl& im = *impl_;
  try {
    // ZeroMQ delivers the parts of a message together, so once the first part is here the rest is.
    for (;;) {
      zmq::message_t identity;
      if (!im.router.recv(identity, zmq::recv_flags::dontwait)) return std::nullopt;
      if (!identity.more()) {
        ++im.stats.recv_skipped;
        continue;
      }
      zmq::message_t payload;
      if (!im.router.recv(payload, zmq::recv_flags::dontwait)) {
        ++im.stats.recv_skipped;
        return std::nullopt;
      }
      if (payload.more()) {  // multi-part: drain and skip the whole message
        for (bool more = true; more;) {
          zmq::message_t rest;
          if (!im.router.recv(rest, zmq::recv_flags::dontwait)) break;
          more = rest.more();
        }
        ++im.stats.recv_skipped;
        continue;
      }
      if (payload.size() == 0) {
        ++im.stats.recv_skipped;
        continue;
      }
      ++im.stats.received;
      const auto* p = static_cast<const std::byte*>(payload.data());
      return std::vector<std::byte>(p, p + payload.size());
    }
  } catch (const zmq::error_t&) {
    ++im.stats.errors;
    return std::nullopt;
  } catch (const std::bad_alloc&) {
    ++im.stats.errors;
    return std::nullopt;
  }
}

TimePoint ReliableChannel::close_idle(TimePoint now) {
  const Duration idle = impl_ ? std::max<Duration>(impl_->opts.idle_close, std::chrono::milliseconds(1))
                              : Duration(std::chrono::seconds(15));
  TimePoint next = now + idle;
  if (!impl_) return next;
  Impl& im = *impl_;
  for (auto it = im.peers.begin(); it != im.peers.end();) {
    // ">=" keeps every returned deadline strictly after `now`: a caller that comes back exactly at
    // the deadline closes the peer instead of spinning.
    if (now - it->second.last_used >= idle) {
      it = im.peers.erase(it);  // linger 0: whatever is still queued is discarded
      ++im.stats.idle_closed;
    } else {
      next = std::min(next, it->second.last_used + idle);
      ++it;
    }
  }
  return next;
}

std::size_t ReliableChannel::peers() const { return impl_ ? impl_->peers.size() : 0; }

const ReliableStats& ReliableChannel::stats() const {
  static const ReliableStats kNone{};
  return impl_ ? impl_->stats : kNone;
}

}  // namespace weft::transport
