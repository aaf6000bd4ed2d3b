#include "weft/transport/mux.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace weft::transport {

namespace {

// Makes room for n more bytes at the end of a stream's send queue: the pending bytes move to
// the front only when that makes the room (so each byte moves at most once, and not at all while
// the queue drains between writes), and the buffer grows only when even that is not enough. The
// queue therefore stays within twice the stream's credit.
void make_room(std::vector<std::byte>& buf, std::size_t& head, std::size_t& tail, std::size_t n) {
  if (buf.size() - tail >= n) return;
  if (head > 0) {
    std::copy(buf.begin() + static_cast<std::ptrdiff_t>(head), buf.begin() + static_cast<std::ptrdiff_t>(tail), buf.begin());
    tail -= head;
    head = 0;
  }
  if (buf.size() - tail < n) buf.resize(std::max(tail + n, std::min(2 * buf.size(), tail + n + kInitialWindow)));
}

// open_stream refuses once the next id would wrap: ids must only grow (find_for_frame relies on it).
constexpr StreamId kMaxStreamIdBeforeWrap = std::numeric_limits<StreamId>::max() - 2;

std::size_t index(FrameType t) { return static_cast<std::size_t>(t); }

std::array<std::byte, 1> one_byte(std::uint8_t v) { return {std::byte{v}}; }

}  // namespace

MuxSession::MuxSession(MuxRole role, MuxConfig cfg) : role_(role), cfg_(cfg) {
  cfg_.receive_window = std::max(cfg_.receive_window, kInitialWindow);
  cfg_.receive_window = std::min(cfg_.receive_window, kMaxWindow);
  cfg_.max_chunk = std::clamp<std::size_t>(cfg_.max_chunk, 1, kMaxFramePayload);
}

Result<StreamId> MuxSession::open_stream(std::span<const std::byte> open_payload) {
  if (failed_) return fail("mux session failed");
  if (going_away()) return fail("mux session is going away");
  if (streams_.size() >= cfg_.max_streams) return fail("mux stream limit reached");
  if (open_payload.size() > kMaxOpenPayload) return fail("mux open payload above 1 KiB");
  const StreamId first = role_ == MuxRole::kInitiator ? 1 : 2;
  if (last_local_id_ > kMaxStreamIdBeforeWrap) return fail("mux stream ids used up");
  const StreamId id = last_local_id_ == 0 ? first : last_local_id_ + 2;
  last_local_id_ = id;
  // OPEN before add_stream: a WINDOW_UPDATE granting a larger window must follow it.
  control(FrameType::kOpen, id, open_payload);
  add_stream(id);
  ++stats_.streams_opened_local;
  return id;
}

std::size_t MuxSession::write(StreamId id, std::span<const std::byte> bytes) {
  auto it = streams_.find(id);
  if (failed_ || it == streams_.end() || it->second.fin_queued) return 0;
  Stream& s = it->second;
  const std::size_t n = std::min<std::size_t>(bytes.size(), s.send_credit);
  if (n < bytes.size()) {
    s.stalled = true;
    ++stats_.window_stalls;
  }
  if (n == 0) return 0;
  make_room(s.send_buf, s.send_head, s.send_tail, n);
  std::copy_n(bytes.begin(), n, s.send_buf.begin() + static_cast<std::ptrdiff_t>(s.send_tail));
  s.send_tail += n;
  s.written = true;
  s.send_credit -= static_cast<std::uint32_t>(n);
  mark_ready(id, s);
  return n;
}

std::span<std::byte> MuxSession::write_space(StreamId id, std::size_t n) {
  auto it = streams_.find(id);
  if (failed_ || it == streams_.end() || it->second.fin_queued) return {};
  Stream& s = it->second;
  n = std::min<std::size_t>(n, s.send_credit);
  if (n == 0) return {};
  if (s.send_buf.size() - s.send_tail < n) {
    if (s.send_buf.size() - s.pending() < n) return {};  // would grow: the caller copies instead
    make_room(s.send_buf, s.send_head, s.send_tail, n);
  }
  return {s.send_buf.data() + s.send_tail, n};
}

void MuxSession::commit_write(StreamId id, std::size_t n) {
  auto it = streams_.find(id);
  if (n == 0 || failed_ || it == streams_.end() || it->second.fin_queued) return;
  Stream& s = it->second;
  WEFT_CHECK(n <= s.send_credit && n <= s.send_buf.size() - s.send_tail);  // a caller bug
  s.send_tail += n;
  s.written = true;
  s.send_credit -= static_cast<std::uint32_t>(n);
  mark_ready(id, s);
}

std::size_t MuxSession::release_idle_buffers() {
  retired_.clear();
  std::size_t holding = 0;
  for (auto& [id, s] : streams_) {
    if (!s.written && s.pending() == 0) {
      std::vector<std::byte>().swap(s.send_buf);
      s.send_head = s.send_tail = 0;
    }
    s.written = false;
    if (s.send_buf.capacity() > 0) ++holding;
  }
  return holding;
}

std::size_t MuxSession::send_buffer_bytes() const {
  std::size_t n = 0;
  for (const auto& [id, s] : streams_) n += s.send_buf.capacity();
  return n;
}

void MuxSession::shutdown_write(StreamId id) {
  auto it = streams_.find(id);
  if (failed_ || it == streams_.end() || it->second.fin_queued) return;
  it->second.fin_queued = true;
  mark_ready(id, it->second);
}

void MuxSession::reset(StreamId id, ResetReason reason) {
  if (failed_ || streams_.count(id) == 0) return;
  send_reset(id, reason);
  close_stream(id);
}

void MuxSession::consume(StreamId id, std::size_t n) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  Stream& s = it->second;
  WEFT_CHECK(n <= s.unconsumed);
  s.unconsumed -= static_cast<std::uint32_t>(n);
  s.to_grant += static_cast<std::uint32_t>(n);
  // Granting in half windows keeps WINDOW_UPDATEs rare while the sender, which still holds the
  // other half, never waits a full round trip with nothing to send.
  if (!failed_ && !s.remote_fin && s.to_grant >= cfg_.receive_window / 2) {
    grant(id, s, s.to_grant);
    s.to_grant = 0;
  }
}

void MuxSession::ping(std::uint64_t payload) {
  if (failed_) return;
  std::vector<std::byte> p;
  put_u64(p, payload);
  control(FrameType::kPing, 0, p);
}

void MuxSession::go_away(GoAwayReason reason) {
  if (sent_goaway_) return;
  sent_goaway_ = true;
  control(FrameType::kGoAway, 0, one_byte(static_cast<std::uint8_t>(reason)));
}

Result<void, MuxError> MuxSession::on_bytes(std::span<const std::byte> bytes) {
  if (failed_) return Unexpected<MuxError>(error_);
  stats_.bytes_in += bytes.size();
  for (;;) {
    auto frame = decoder_.next_view(bytes);
    if (!frame) return fail_session(frame.error());
    if (!frame->has_value()) break;  // `bytes` is used up inside a frame
    auto handled = handle(**frame);
    if (!handled) return fail_session(handled.error());
  }
  return {};
}

std::size_t MuxSession::take_output(std::vector<std::byte>& out, std::size_t max_bytes) {
  copy_small_.clear();
  copy_pieces_.clear();
  const std::size_t n = take_output(copy_small_, copy_pieces_, max_bytes);
  out.reserve(out.size() + n);
  for (const auto& p : copy_pieces_) out.insert(out.end(), p.begin(), p.end());
  return n;
}

std::size_t MuxSession::take_output(std::vector<std::byte>& small, std::vector<std::span<const std::byte>>& pieces_out,
                                    std::size_t max_bytes) {
  retired_.clear();  // the views of the last call are dead now
  listing_output_ = true;
  std::vector<OutputPiece>& pieces = listed_;
  pieces.clear();
  std::size_t used = 0;
  // Bytes appended to `small` since `from` join the last piece when it ends there.
  const auto add_small = [&](std::size_t from) {
    const std::size_t n = small.size() - from;
    if (n == 0) return;
    if (!pieces.empty() && pieces.back().view == nullptr && pieces.back().offset + pieces.back().size == from) {
      pieces.back().size += n;
    } else {
      pieces.push_back({nullptr, from, n});
    }
    used += n;
  };
  std::size_t mark = small.size();
  small.insert(small.end(), control_out_.begin(), control_out_.end());
  control_out_.clear();
  add_small(mark);
  while (!ready_.empty()) {
    const StreamId id = ready_.front();
    auto it = streams_.find(id);
    if (it == streams_.end()) {  // reset while listed
      ready_.pop_front();
      continue;
    }
    Stream& s = it->second;
    if (used >= max_bytes || max_bytes - used <= kFrameHeaderBytes) break;
    const std::size_t room = max_bytes - used - kFrameHeaderBytes;
    std::size_t pending = s.pending();
    if (pending > 0) {
      const std::size_t n = std::min({pending, cfg_.max_chunk, room});
      mark = small.size();
      encode_frame_header(FrameType::kData, id, n, small);
      add_small(mark);
      pieces.push_back({s.send_buf.data() + s.send_head, 0, n});
      used += n;
      ++stats_.frames_out[index(FrameType::kData)];
      stats_.data_bytes_out += n;
      s.send_head += n;
      pending -= n;
      if (pending == 0) s.send_head = s.send_tail = 0;  // the room stays for the next write
    }
    ready_.pop_front();
    if (pending > 0) {
      ready_.push_back(id);  // round-robin: one chunk per stream per turn
      continue;
    }
    s.in_ready = false;
    if (s.fin_queued && !s.fin_sent) {
      // A FIN has no payload: it fits whenever a header does, and it may exceed the budget by
      // its 10 bytes at most, like a control frame.
      mark = small.size();
      encode_frame_header(FrameType::kFin, id, 0, small);
      add_small(mark);
      ++stats_.frames_out[index(FrameType::kFin)];
      s.fin_sent = true;
      close_if_done(id, s);
    }
  }
  listing_output_ = false;
  for (const OutputPiece& p : pieces) pieces_out.emplace_back(p.view != nullptr ? p.view : small.data() + p.offset, p.size);
  stats_.bytes_out += used;
  return used;
}

std::vector<MuxEvent> MuxSession::take_events() { return std::exchange(events_, {}); }

void MuxSession::take_events(std::vector<MuxEvent>& out) {
  out.clear();
  out.swap(events_);  // both keep their capacity
}

std::size_t MuxSession::unconsumed(StreamId id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? 0 : it->second.unconsumed;
}

std::size_t MuxSession::send_credit(StreamId id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? 0 : it->second.send_credit;
}

std::size_t MuxSession::pending_output() const {
  std::size_t n = control_out_.size();
  for (const auto& [id, s] : streams_) {
    const std::size_t pending = s.pending();
    n += pending + kFrameHeaderBytes * ((pending + cfg_.max_chunk - 1) / cfg_.max_chunk);
    if (s.fin_queued && !s.fin_sent) n += kFrameHeaderBytes;
  }
  return n;
}

// ---- receiving ----

Result<void, MuxError> MuxSession::handle(const FrameView& f) {
  ++stats_.frames_in[index(f.type)];
  switch (f.type) {
    case FrameType::kPing:
      control(FrameType::kPong, 0, f.payload);
      return {};
    case FrameType::kPong:
      events_.emplace_back(Pong{get_u64(f.payload)});
      return {};
    case FrameType::kGoAway:
      received_goaway_ = true;
      events_.emplace_back(GoAway{static_cast<GoAwayReason>(f.payload[0])});
      return {};
    case FrameType::kOpen:
      return on_open(f);
    case FrameType::kData:
    case FrameType::kWindowUpdate:
    case FrameType::kFin:
    case FrameType::kReset:
      break;
  }
  auto stream = find_for_frame(f.stream);
  if (!stream) return Unexpected<MuxError>(stream.error());
  if (*stream == nullptr) {
    ++stats_.frames_ignored;
    return {};
  }
  return on_stream_frame(f, **stream);
}

Result<void, MuxError> MuxSession::on_open(const FrameView& f) {
  if (ours(f.stream)) return Unexpected<MuxError>(MuxError::kBadParity);
  if (f.stream <= last_peer_id_) return Unexpected<MuxError>(MuxError::kReusedId);
  last_peer_id_ = f.stream;  // refused or not, the id is used: later frames for it are ignored
  if (failed_ || sent_goaway_ || streams_.size() >= cfg_.max_streams) {
    send_reset(f.stream, ResetReason::kRefused);
    return {};
  }
  add_stream(f.stream);
  ++stats_.streams_opened_remote;
  events_.emplace_back(StreamOpened{f.stream, {f.payload.begin(), f.payload.end()}});
  return {};
}

Result<MuxSession::Stream*, MuxError> MuxSession::find_for_frame(StreamId id) {
  if (auto it = streams_.find(id); it != streams_.end()) return &it->second;
  // Ids only grow, so an id at or below the highest one opened belonged to a stream since
  // forgotten: its frames were in flight when we reset or closed it.
  const StreamId last = ours(id) ? last_local_id_ : last_peer_id_;
  if (id <= last) return static_cast<Stream*>(nullptr);
  return Unexpected<MuxError>(MuxError::kUnknownStream);
}

Result<void, MuxError> MuxSession::on_stream_frame(const FrameView& f, Stream& s) {
  const StreamId id = f.stream;
  switch (f.type) {
    case FrameType::kData: {
      if (s.remote_fin) return Unexpected<MuxError>(MuxError::kAfterFin);
      const std::size_t n = f.payload.size();
      if (n > s.recv_credit) return Unexpected<MuxError>(MuxError::kWindowExceeded);
      s.recv_credit -= static_cast<std::uint32_t>(n);
      s.unconsumed += static_cast<std::uint32_t>(n);
      stats_.data_bytes_in += n;
      events_.emplace_back(StreamData{id, f.payload});  // a view: see StreamData
      return {};
    }
    case FrameType::kWindowUpdate: {
      const std::uint32_t inc = get_u32(f.payload);
      if (inc == 0 || inc > kMaxWindow - s.send_credit) return Unexpected<MuxError>(MuxError::kBadWindowUpdate);
      s.send_credit += inc;
      if (s.stalled && !s.fin_queued) {
        s.stalled = false;
        events_.emplace_back(StreamWritable{id});
      }
      return {};
    }
    case FrameType::kFin:
      if (s.remote_fin) return Unexpected<MuxError>(MuxError::kAfterFin);
      s.remote_fin = true;
      events_.emplace_back(StreamFin{id});
      close_if_done(id, s);
      return {};
    case FrameType::kReset: {
      const auto raw = std::to_integer<std::uint8_t>(f.payload[0]);
      if (raw < kResetReasonCount) {
        ++stats_.resets_received[raw];
      } else {
        ++stats_.resets_received_unknown;
      }
      events_.emplace_back(StreamReset{id, static_cast<ResetReason>(raw)});
      close_stream(id);
      return {};
    }
    case FrameType::kOpen:
    case FrameType::kPing:
    case FrameType::kPong:
    case FrameType::kGoAway:
      break;
  }
  WEFT_CHECK(false);  // handle() routes only stream frames here
  return {};
}

Result<void, MuxError> MuxSession::fail_session(MuxError e) {
  if (!failed_) {
    failed_ = true;
    error_ = e;
    ++stats_.protocol_errors[static_cast<std::size_t>(e)];
    if (!sent_goaway_) {
      // The reason may not reach the peer (the caller closes soon) but costs nothing to try.
      sent_goaway_ = true;
      control(FrameType::kGoAway, 0, one_byte(static_cast<std::uint8_t>(GoAwayReason::kProtocolError)));
    }
  }
  return Unexpected<MuxError>(error_);
}

// ---- streams ----

MuxSession::Stream& MuxSession::add_stream(StreamId id) {
  Stream& s = streams_[id];
  if (cfg_.receive_window > kInitialWindow) grant(id, s, cfg_.receive_window - kInitialWindow);
  return s;
}

void MuxSession::close_stream(StreamId id) {
  if (listing_output_) {
    if (auto it = streams_.find(id); it != streams_.end() && it->second.send_buf.capacity() > 0) {
      retired_.push_back(std::move(it->second.send_buf));
    }
  }
  streams_.erase(id);  // a stale entry in ready_ is skipped by take_output
  ++stats_.streams_closed;
  events_.emplace_back(StreamClosed{id});
}

void MuxSession::close_if_done(StreamId id, const Stream& s) {
  if (s.fin_sent && s.remote_fin) close_stream(id);
}

void MuxSession::mark_ready(StreamId id, Stream& s) {
  if (s.in_ready) return;
  s.in_ready = true;
  ready_.push_back(id);
}

void MuxSession::grant(StreamId id, Stream& s, std::uint32_t credit) {
  std::vector<std::byte> p;
  put_u32(p, credit);
  control(FrameType::kWindowUpdate, id, p);
  s.recv_credit += credit;
}

void MuxSession::control(FrameType type, StreamId stream, std::span<const std::byte> payload) {
  encode_frame(type, stream, payload, control_out_);
  ++stats_.frames_out[index(type)];
}

void MuxSession::send_reset(StreamId id, ResetReason reason) {
  control(FrameType::kReset, id, one_byte(static_cast<std::uint8_t>(reason)));
  const auto i = static_cast<std::size_t>(reason);
  if (i < kResetReasonCount) ++stats_.resets_sent[i];
}

}  // namespace weft::transport
