// One pooled connection to a peer proxy: TCP connect, the Noise_IK handshake framed as
// [u16 length][message] (proxy_handshake.cpp), then AEAD records carrying the stream
// multiplexer (proxy.h).
//
// Lifecycle: kConnecting (initiator only) -> kHandshake -> kUp -> destroyed. Any failure kills
// the session at once: its streams' conns are reset (RST to their sockets) or retried, and
// conns waiting for it are retried elsewhere. An orderly end seals the close record first.

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <cerrno>
#include <spdlog/spdlog.h>
#include <variant>

#include "proxy_impl.h"

namespace weft::transport {
namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace

Session* Proxy::Impl::session(std::uint64_t id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

Session* Proxy::Impl::session_for(const RouteInstance& inst, std::string& err) {
  if (auto it = pool_.find(inst.node); it != pool_.end()) {
    if (Session* s = session(it->second)) return s;
    pool_.erase(it);
  }
  const KxPublicKey* key = nullptr;
  if (routes_) {
    if (auto k = routes_->peer_keys.find(inst.node); k != routes_->peer_keys.end()) key = &k->second;
  }
  if (key == nullptr) {
    err = "no key for node";
    ++stats_.handshakes_failed;
    return nullptr;
  }
  const int fd = connect_tcp(inst.mesh, err);
  if (fd < 0) {
    ++stats_.sessions_failed;
    return nullptr;
  }
  set_peer_timeout(fd, cfg_.peer_timeout);
  auto s = std::make_unique<Session>();
  s->id = new_id();
  s->fd = fd;
  s->initiator = true;
  s->state = Session::State::kConnecting;
  s->node = inst.node;
  s->pooled = true;
  s->started = now_;
  s->hs.emplace(Handshake::initiator(kp_, *key, mesh_prologue()));
  Session& ref = *s;
  sessions_[s->id] = std::move(s);
  pool_[inst.node] = ref.id;
  ++stats_.sessions_initiated;
  ++stats_.sessions_open;
  arm_session_timer(ref, now_ + cfg_.connect_timeout);
  update_session_interest(ref);
  log_->debug("session_connecting node={} mesh={}", inst.node, inst.mesh.to_string());
  return &ref;
}

void Proxy::Impl::on_session_event(Session& s, std::uint32_t events) {
  const std::uint64_t id = s.id;
  if (s.state == Session::State::kConnecting) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) session_connected(s);
    return;
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) session_read(s);
  if (Session* again = session(id); again != nullptr && (events & EPOLLOUT) != 0) mark_dirty(id);
}

void Proxy::Impl::session_read(Session& s) {
  const ssize_t n = ::recv(s.fd, scratch_.data(), scratch_.size(), 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    // ECONNRESET and the like: the stream of records ended without its close record.
    if (s.state == Session::State::kUp) ++stats_.records_rejected;
    kill_session(s, "recv_error");
    return;
  }
  if (n == 0) {
    if (s.state == Session::State::kHandshake) {
      ++stats_.handshakes_failed;
      kill_session(s, "eof_in_handshake");
      return;
    }
    if (!s.opener->finish()) {  // cut without a close record: nothing it sent can be trusted complete
      ++stats_.records_rejected;
      kill_session(s, "truncated");
      return;
    }
    close_session_orderly(s);
    return;
  }
  std::vector<std::byte> rest;
  std::span<const std::byte> bytes(scratch_.data(), static_cast<std::size_t>(n));
  if (s.state == Session::State::kHandshake) {
    if (s.hs_in.size() + bytes.size() > 2 + kNoiseMaxMessage + kIoChunk) {
      ++stats_.handshakes_failed;
      kill_session(s, "handshake_too_long");
      return;
    }
    s.hs_in.insert(s.hs_in.end(), bytes.begin(), bytes.end());
    if (!session_handshake_input(s)) return;
    if (s.state != Session::State::kUp) return;
    rest.swap(s.hs_in);  // records that followed the handshake in the same read
    bytes = rest;
    if (bytes.empty()) return;
  }
  rx_plain_.clear();
  auto opened = s.opener->feed(bytes, rx_plain_);
  if (!rx_plain_.empty()) {  // records before a bad one were authentic: deliver them
    if (auto m = s.mux->on_bytes(rx_plain_.bytes()); !m) {
      ++stats_.protocol_errors;
      const std::uint64_t id = s.id;
      flush_session(s);  // the GOAWAY(protocol_error), best effort; may kill s
      if (Session* again = session(id)) kill_session(*again, "mux_protocol_error");
      return;
    }
    session_mux_events(s);
  }
  if (!opened) {
    ++stats_.records_rejected;
    kill_session(s, "record_rejected");
    return;
  }
  if (opened->closed) close_session_orderly(s);
  else mark_dirty(s.id);
}

void Proxy::Impl::session_mux_events(Session& s) {
  std::vector<MuxEvent> events;
  events.swap(spare_events_);  // a nested call (none today) would just allocate its own
  s.mux->take_events(events);
  auto conn_of = [&](StreamId id) -> Conn* {
    auto it = s.streams.find(id);
    return it == s.streams.end() ? nullptr : conn(it->second);
  };
  // Consecutive DATA of one stream goes to its socket in one sendmsg, straight from the opened
  // plaintext (the events are views into it).
  std::vector<std::span<const std::byte>> parts;
  parts.swap(parts_);
  StreamId parts_of = 0;
  const auto deliver = [&] {
    if (parts.empty()) return;
    if (Conn* c = conn_of(parts_of)) conn_deliver(*c, parts);
    parts.clear();
  };
  for (auto& ev : events) {
    if (auto* d = std::get_if<StreamData>(&ev)) {
      if (d->id != parts_of) deliver();
      parts_of = d->id;
      parts.push_back(d->bytes);
      continue;
    }
    deliver();
    std::visit(Overloaded{
                   [&](StreamOpened& e) { conn_open_remote(s, e.id, e.payload); },
                   [&](StreamData&) {},  // above
                   [&](StreamFin& e) {
                     if (Conn* c = conn_of(e.id)) conn_peer_fin(*c);
                   },
                   [&](StreamReset& e) {
                     Conn* c = conn_of(e.id);
                     detach_stream(s, e.id);
                     if (c != nullptr) conn_stream_reset(*c, e.reason);
                   },
                   [&](StreamWritable& e) {
                     if (Conn* c = conn_of(e.id)) update_conn_interest(*c);
                   },
                   [&](Pong&) {},
                   [&](GoAway&) {
                     // Opens no more streams: new conns get a new session.
                     if (s.pooled) {
                       if (auto it = pool_.find(s.node); it != pool_.end() && it->second == s.id) pool_.erase(it);
                       s.pooled = false;
                     }
                   },
                   [&](StreamClosed& e) {
                     // Both FINs went: the conn may still be writing its last bytes; it no
                     // longer needs the stream.
                     detach_stream(s, e.id);
                   },
               },
               ev);
  }
  deliver();
  parts.swap(parts_);
  events.clear();
  events.swap(spare_events_);
  for (auto it = s.credit_blocked.begin(); it != s.credit_blocked.end();) {
    Conn* c = conn(*it);
    if (c == nullptr || c->session != s.id || c->stream == 0 || !s.mux->has_stream(c->stream)) {
      it = s.credit_blocked.erase(it);
    } else if (s.mux->send_credit(c->stream) > 0) {
      it = s.credit_blocked.erase(it);
      update_conn_interest(*c);
    } else {
      ++it;
    }
  }
  mark_dirty(s.id);
}

void Proxy::Impl::detach_stream(Session& s, StreamId id) {
  if (s.streams.erase(id) != 0 && s.streams.empty()) {
    s.idle_since = now_;
    arm_session_timer(s, now_ + (s.initiator ? cfg_.session_idle : 2 * cfg_.session_idle));
  }
}

void Proxy::Impl::arm_session_timer(Session& s, TimePoint at) {
  arm_timer(Kind::kSession, s.id, s.timer_at, at);  // the latest need replaces the earlier one
}

void Proxy::Impl::flush_session(Session& s) {
  for (int round = 0; round < 16; ++round) {
    if (s.sealer && s.mux && s.wbuf.size() < kIoChunk && !s.close_sealed && !seal_mux_output(s, kIoChunk)) {
      kill_session(s, "seal_failed");
      return;
    }
    const std::size_t len = s.wbuf.size();
    if (len == 0) break;
    const ssize_t n = ::send(s.fd, s.wbuf.data(), len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      kill_session(s, "send_error");
      return;
    }
    s.wbuf.consume(static_cast<std::size_t>(n));
    if (static_cast<std::size_t>(n) < len) break;
  }
  if (s.wbuf.empty() && s.wbuf.capacity() > 4 * kIoChunk) s.wbuf.release();
  update_session_interest(s);
  if (s.backlog_blocked && s.backlog() < kSessionBacklog) {
    s.backlog_blocked = false;
    for (const auto& [sid, cid] : s.streams) {
      if (Conn* c = conn(cid)) update_conn_interest(*c);
    }
  }
}

bool Proxy::Impl::seal_mux_output(Session& s, std::size_t budget) {
  tx_small_.clear();
  tx_pieces_.clear();
  return s.mux->take_output(tx_small_, tx_pieces_, budget) == 0 || s.sealer->seal_stream_into(s.wbuf, tx_pieces_);
}

void Proxy::Impl::update_session_interest(Session& s) {
  std::uint32_t want = 0;
  if (s.state == Session::State::kConnecting) {
    want = EPOLLOUT;
  } else {
    if (s.state == Session::State::kHandshake || s.backlog() < 2 * kSessionBacklog) want |= EPOLLIN;
    if (!s.wbuf.empty()) want |= EPOLLOUT;
  }
  set_interest(s.fd, s.interest, want, token(Kind::kSession, s.id));
}

void Proxy::Impl::kill_session(Session& s, std::string_view why, std::string_view detail) {
  ++stats_.sessions_failed;
  if (detail.empty()) log_->info("session_killed node={} reason={} streams={}", s.node, why, s.streams.size());
  else log_->info("session_killed node={} reason={} streams={} detail=\"{}\"", s.node, why, s.streams.size(), detail);
  destroy_session(s);
}

void Proxy::Impl::close_session_orderly(Session& s) {
  if (s.state == Session::State::kUp && s.mux && s.sealer && !s.close_sealed) {
    s.state = Session::State::kClosing;
    s.mux->go_away();
    if (seal_mux_output(s, std::numeric_limits<std::size_t>::max()) &&
        s.sealer->seal_into(s.wbuf, RecordType::kClose, {})) {
      s.close_sealed = true;
      const std::size_t len = s.wbuf.size();
      if (len > 0) [[maybe_unused]] const auto n = ::send(s.fd, s.wbuf.data(), len, MSG_NOSIGNAL);
    }
  }
  log_->debug("session_closed node={}", s.node);
  destroy_session(s);
}

void Proxy::Impl::destroy_session(Session& s) {
  const std::uint64_t id = s.id;
  if (!s.initiator && s.state == Session::State::kHandshake) --handshaking_;
  if (s.pooled) {
    if (auto it = pool_.find(s.node); it != pool_.end() && it->second == id) pool_.erase(it);
  }
  std::vector<std::uint64_t> affected;
  for (const auto& [sid, cid] : s.streams) affected.push_back(cid);
  affected.insert(affected.end(), s.waiting.begin(), s.waiting.end());
  if (s.fd >= 0) {
    forget_fd(s.fd);
    ::close(s.fd);
  }
  --stats_.sessions_open;
  disarm_timer(Kind::kSession, id, s.timer_at);
  sessions_.erase(id);  // s is gone
  // The conns see no session now: each is reset, or retried on another instance.
  for (std::uint64_t cid : affected) {
    if (Conn* c = conn(cid)) conn_session_failed(*c);
  }
}

void Proxy::Impl::session_timer(Session& s) {
  if (s.state == Session::State::kConnecting || s.state == Session::State::kHandshake) {
    if (now_ - s.started >= cfg_.connect_timeout) {
      if (s.state == Session::State::kHandshake) ++stats_.handshakes_failed;
      kill_session(s, "connect_timeout");
    } else {
      arm_session_timer(s, s.started + cfg_.connect_timeout);
    }
    return;
  }
  // Only the initiator closes idle sessions; the responder waits twice as long, so that it does
  // not close one under a stream the initiator is opening right now.
  const Duration limit = s.initiator ? cfg_.session_idle : 2 * cfg_.session_idle;
  if (s.streams.empty() && s.waiting.empty()) {
    if (now_ - s.idle_since >= limit) {
      close_session_orderly(s);
      return;
    }
    arm_session_timer(s, s.idle_since + limit);
  }
  // With streams: detach_stream arms the timer when the last one goes.
}

}  // namespace weft::transport
