// One proxied connection: an app socket (client side) or a local service socket (server side)
// pumped to and from one mux stream.
//
// Directions. socket -> stream: read only while the stream has credit and the session's backlog
// is under kSessionBacklog, at most the credit (so write() takes it all); socket EOF -> FIN on the
// stream. stream -> socket: bytes queue in out until the socket takes them, and are consume()d
// only then (credit goes back only for delivered bytes); the peer's FIN -> shutdown(SHUT_WR)
// once out is empty. The conn ends cleanly when both directions ended; any error, reset or
// timeout ends it with RST (SO_LINGER 0), never a clean EOF in the middle of a stream.

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <spdlog/spdlog.h>

#include "proxy_impl.h"

namespace weft::transport {

Conn* Proxy::Impl::conn(std::uint64_t id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second.get();
}

TrafficCounters& Proxy::Impl::counters(const Conn& c) {
  return c.client ? stats_.upstreams[c.name] : stats_.services[c.name];
}

void Proxy::Impl::conn_start_stream(Conn& c, Session& s) {
  // With a trust root the peer must be certified to serve the service; if not, that instance
  // counts as failed and another is tried.
  if (trust_ && (!s.peer_cert || std::find(s.peer_cert->services.begin(), s.peer_cert->services.end(), c.name) ==
                                     s.peer_cert->services.end())) {
    count_policy(c.from, c.name, &PolicyCounters::not_granted);
    log_policy("policy_not_granted", Side::kInitiator, c.from, c.name, s.node, "peer_grant");
    c.session = 0;
    conn_session_failed(c);
    return;
  }
  auto id = s.mux->open_stream(encode_open(c.name, c.from));
  if (!id) {  // stream limit, or the session goes away: try another instance
    c.session = 0;
    conn_session_failed(c);
    return;
  }
  c.session = s.id;
  c.stream = *id;
  c.opened_at = now_;
  c.connect_deadline = TimePoint::max();
  s.streams[*id] = c.id;
  if (!c.replay.empty()) {
    // A retry: what the app sent to the failed instance (<= kReplayLimit < kInitialWindow).
    const std::size_t taken = s.mux->write(*id, c.replay);
    if (taken != c.replay.size()) {
      abort_conn(c, ResetReason::kInternal);
      return;
    }
  }
  if (c.read_eof) s.mux->shutdown_write(*id);
  mark_dirty(s.id);
  update_conn_interest(c);
}

void Proxy::Impl::conn_open_remote(Session& s, StreamId id, std::span<const std::byte> payload) {
  auto open = decode_open_request(payload);
  // With a trust root: authorization before routing (a denied caller learns nothing about which
  // services are here), and not retried elsewhere by the initiator.
  const PolicyRule* rule = nullptr;
  if (open && trust_ &&
      !admit(Side::kResponder, open->from, open->service, s.node, s.peer_cert ? &*s.peer_cert : nullptr, &rule)) {
    ++stats_.streams_refused;
    s.mux->reset(id, ResetReason::kPolicyDenied);
    return;
  }
  const std::string* service = open ? &open->service : nullptr;
  std::optional<std::uint16_t> port;
  if (service && routes_) {
    if (auto it = routes_->local_services.find(*service); it != routes_->local_services.end()) port = it->second;
  }
  if (!port) {
    ++stats_.streams_refused;
    s.mux->reset(id, ResetReason::kNoRoute);
    return;
  }
  auto& tc = stats_.services[*service];
  ++tc.connections;
  std::string err;
  const int fd = connect_tcp(Endpoint::v4(127, 0, 0, 1, *port), err);
  if (fd < 0) {
    ++tc.failures;
    s.mux->reset(id, ResetReason::kConnectFailed);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->id = new_id();
  c->fd = fd;
  c->client = false;
  c->connecting = true;
  c->name = *service;
  c->node = s.node;
  c->from = open->from;
  apply_limits(*c, rule);  // the idle timeout, for the service's socket here
  c->session = s.id;
  c->stream = id;
  c->last_activity = now_;
  c->opened_at = now_;
  Conn& ref = *c;
  conns_[c->id] = std::move(c);
  s.streams[id] = ref.id;
  ++tc.active;
  arm_timer(Kind::kConn, ref.id, ref.timer_at, now_ + ref.idle_timeout);
  update_conn_interest(ref);
}

void Proxy::Impl::on_conn_event(Conn& c, std::uint32_t events) {
  const std::uint64_t id = c.id;
  if (c.connecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    if (socket_error(c.fd) != 0) {
      Session* s = session(c.session);
      if (s != nullptr && s->mux) {
        s->mux->reset(c.stream, ResetReason::kConnectFailed);
        detach_stream(*s, c.stream);
        mark_dirty(s->id);
      }
      c.stream = 0;
      fail_conn(c);
      return;
    }
    c.connecting = false;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now_ - c.opened_at).count();
    auto& hist = counters(c).latency_us_log2;
    std::size_t b = 0;
    while (b + 1 < hist.size() && us >= (std::int64_t{1} << (b + 6))) ++b;
    ++hist[b];
    conn_write(c);  // bytes that came with the OPEN
    return;
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
    conn_read(c);
    if (conn(id) == nullptr) return;
  }
  if ((events & EPOLLOUT) != 0) conn_write(c);
}

void Proxy::Impl::conn_read(Conn& c) {
  Session* s = session(c.session);
  if (s == nullptr || !s->mux || c.stream == 0 || c.read_eof) return;
  const std::size_t credit = s->mux->send_credit(c.stream);
  const std::size_t backlog = s->backlog();
  if (credit == 0) return;
  if (backlog >= kSessionBacklog) {
    s->backlog_blocked = true;
    update_conn_interest(c);
    return;
  }
  const std::size_t want = std::min({credit, kIoChunk, kSessionBacklog - backlog});
  // Straight into the stream's send queue when it has the room (a busy stream, after its first
  // reads), else into scratch_ and copied by write(): an idle stream keeps only a small queue.
  const std::span<std::byte> space = s->mux->write_space(c.stream, want);
  std::byte* const into = space.empty() ? scratch_.data() : space.data();
  const ssize_t n = ::recv(c.fd, into, want, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    abort_conn(c, ResetReason::kCancelled);
    return;
  }
  c.last_activity = now_;
  mark_dirty(s->id);
  want_sweep();
  if (n == 0) {
    c.read_eof = true;
    s->mux->shutdown_write(c.stream);
    update_conn_interest(c);
    maybe_finish(c);
    return;
  }
  const std::span<const std::byte> got(into, static_cast<std::size_t>(n));
  if (!space.empty()) {
    s->mux->commit_write(c.stream, got.size());
  } else if (s->mux->write(c.stream, got) != got.size()) {  // cannot happen: we read at most the credit
    abort_conn(c, ResetReason::kInternal);
    return;
  }
  counters(c).bytes_out += got.size();
  if (c.client && !c.got_reply && c.replay_ok) {
    if (c.replay.size() + got.size() <= kReplayLimit) {
      c.replay.insert(c.replay.end(), got.begin(), got.end());
    } else {
      c.replay_ok = false;  // too much to replay: this conn is not retried any more
      std::vector<std::byte>().swap(c.replay);
    }
  }
  update_conn_interest(c);
}

void Proxy::Impl::conn_deliver(Conn& c, std::span<const std::span<const std::byte>> parts) {
  if (c.client && !c.got_reply) {
    c.got_reply = true;
    record_latency(c.name, c.node, now_ - c.opened_at);
    record_success(c.name, c.node);
    std::vector<std::byte>().swap(c.replay);
  }
  c.last_activity = now_;
  conn_write(c, parts);
}

void Proxy::Impl::conn_peer_fin(Conn& c) {
  if (c.client && !c.got_reply) {
    c.got_reply = true;  // an answer (the empty one): no retry after it
    record_success(c.name, c.node);
    std::vector<std::byte>().swap(c.replay);
  }
  c.peer_fin = true;
  conn_write(c);
}

void Proxy::Impl::conn_write(Conn& c, std::span<const std::span<const std::byte>> extra) {
  std::size_t part = 0;      // extra[part] is the first part not (fully) written
  std::size_t part_off = 0;  // bytes of extra[part] written
  const auto extra_left = [&] { return part < extra.size(); };
  while (!c.connecting && (c.out_bytes > 0 || extra_left())) {
    std::array<iovec, kMaxIov> iov{};
    std::size_t cnt = 0;
    std::size_t total = 0;
    if (c.out_bytes > 0) {
      iov[cnt++] = {c.out.data() + c.out_head, c.out_bytes};
      total += c.out_bytes;
    }
    for (std::size_t i = part, off = part_off; i < extra.size() && cnt < kMaxIov && total < 4 * kIoChunk; ++i, off = 0) {
      // iovec's base is not const: sendmsg only reads it.
      iov[cnt++] = {const_cast<std::byte*>(extra[i].data() + off), extra[i].size() - off};
      total += extra[i].size() - off;
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = cnt;
    const ssize_t n = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      abort_conn(c, ResetReason::kCancelled);
      return;
    }
    auto left = static_cast<std::size_t>(n);
    counters(c).bytes_in += left;
    c.last_activity = now_;
    if (Session* s = session(c.session); s != nullptr && s->mux && c.stream != 0) {
      s->mux->consume(c.stream, left);  // credit back only for bytes the socket took
      mark_dirty(s->id);
    }
    const std::size_t from_out = std::min(left, c.out_bytes);
    c.out_head += from_out;
    c.out_bytes -= from_out;
    left -= from_out;
    while (left > 0) {
      const std::size_t in_part = extra[part].size() - part_off;
      if (left >= in_part) {
        left -= in_part;
        ++part;
        part_off = 0;
      } else {
        part_off += left;
        left = 0;
      }
    }
    if (static_cast<std::size_t>(n) < total) break;
  }
  if (c.out_bytes == 0) {
    c.out.clear();
    c.out_head = 0;
  }
  if (extra_left()) {  // the socket is full: the rest waits in c.out
    if (c.out_head > 0 && c.out_head >= c.out.size() / 2) {  // moves at most what was written
      c.out.erase(c.out.begin(), c.out.begin() + static_cast<std::ptrdiff_t>(c.out_head));
      c.out_head = 0;
    }
    for (std::size_t i = part, off = part_off; i < extra.size(); ++i, off = 0) {
      c.out.insert(c.out.end(), extra[i].begin() + static_cast<std::ptrdiff_t>(off), extra[i].end());
      c.out_bytes += extra[i].size() - off;
    }
  }
  if (c.out_bytes == 0 && c.out.capacity() > 0) std::vector<std::byte>().swap(c.out);  // idle: no buffer
  if (c.out_bytes == 0 && c.peer_fin && !c.shut_wr) {
    ::shutdown(c.fd, SHUT_WR);
    c.shut_wr = true;
  }
  update_conn_interest(c);
  maybe_finish(c);
}

void Proxy::Impl::conn_stream_reset(Conn& c, ResetReason reason) {
  c.stream = 0;
  c.session = 0;
  const bool retryable = reason == ResetReason::kNoRoute || reason == ResetReason::kConnectFailed;
  if (c.client && retryable) record_failure(c.name, c.node);
  if (c.client && retryable && !c.got_reply && c.replay_ok) {
    instance_active(c.name, c.node, false);
    c.counted_instance = false;
    dispatch(c);
    return;
  }
  fail_conn(c);
}

void Proxy::Impl::conn_session_failed(Conn& c) {
  c.stream = 0;
  c.session = 0;
  if (c.client) record_failure(c.name, c.node);
  if (c.client && !c.got_reply && c.replay_ok) {
    instance_active(c.name, c.node, false);
    c.counted_instance = false;
    dispatch(c);
    return;
  }
  fail_conn(c);
}

void Proxy::Impl::fail_conn(Conn& c) {
  ++counters(c).failures;
  destroy_conn(c, true);
}

void Proxy::Impl::abort_conn(Conn& c, ResetReason reason) {
  if (Session* s = session(c.session); s != nullptr && s->mux && c.stream != 0) {
    s->mux->reset(c.stream, reason);
    detach_stream(*s, c.stream);
    mark_dirty(s->id);
  }
  c.stream = 0;
  fail_conn(c);
}

void Proxy::Impl::maybe_finish(Conn& c) {
  if (c.read_eof && c.shut_wr) destroy_conn(c, false);
}

void Proxy::Impl::update_conn_interest(Conn& c) {
  std::uint32_t want = 0;
  if (c.connecting) {
    want = EPOLLOUT;
  } else {
    Session* s = session(c.session);
    if (!c.read_eof && s != nullptr && s->state == Session::State::kUp && c.stream != 0) {
      if (s->mux->send_credit(c.stream) == 0) s->credit_blocked.insert(c.id);
      else if (s->backlog() < kSessionBacklog) want |= EPOLLIN;
      else s->backlog_blocked = true;
    }
    if (c.out_bytes > 0) want |= EPOLLOUT;
  }
  set_interest(c.fd, c.interest, want, token(Kind::kConn, c.id));
}

void Proxy::Impl::destroy_conn(Conn& c, bool reset) {
  if (Session* s = session(c.session)) {
    if (c.stream != 0) {
      if (reset && s->mux && s->mux->has_stream(c.stream)) {
        s->mux->reset(c.stream, ResetReason::kCancelled);
        mark_dirty(s->id);
      }
      if (auto it = s->streams.find(c.stream); it != s->streams.end() && it->second == c.id) detach_stream(*s, c.stream);
    }
    std::erase(s->waiting, c.id);
    s->credit_blocked.erase(c.id);
  }
  disarm_timer(Kind::kConn, c.id, c.timer_at);
  if (c.counted_instance) instance_active(c.name, c.node, false);
  auto& tc = counters(c);
  if (tc.active > 0) --tc.active;
  if (c.interest != 0) forget_fd(c.fd);
  if (reset) close_with_reset(c.fd);
  else ::close(c.fd);
  conns_.erase(c.id);  // c is gone
}

void Proxy::Impl::conn_timer(Conn& c) {
  if (c.connect_deadline <= now_) {
    // A policy rule's connect_timeout, shorter than the session's: give up on this instance
    // (the session keeps trying for the others waiting on it) and try another.
    c.connect_deadline = TimePoint::max();
    Session* s = session(c.session);
    if (c.client && c.stream == 0 && s != nullptr && s->state != Session::State::kUp) {
      log_->debug("conn_connect_timeout name={} node={}", c.name, c.node);
      std::erase(s->waiting, c.id);
      c.session = 0;
      conn_session_failed(c);  // may destroy c
      return;
    }
  }
  if (now_ - c.last_activity >= c.idle_timeout) {
    log_->debug("conn_idle_timeout name={}", c.name);
    abort_conn(c, ResetReason::kTimeout);
    return;
  }
  arm_timer(Kind::kConn, c.id, c.timer_at, std::min(c.last_activity + c.idle_timeout, c.connect_deadline));
}

}  // namespace weft::transport
