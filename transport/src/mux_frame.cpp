#include "weft/transport/mux_frame.h"

#include <algorithm>

namespace weft::transport {

const char* to_string(FrameType t) {
  switch (t) {
    case FrameType::kData: return "data";
    case FrameType::kOpen: return "open";
    case FrameType::kWindowUpdate: return "window_update";
    case FrameType::kFin: return "fin";
    case FrameType::kReset: return "reset";
    case FrameType::kPing: return "ping";
    case FrameType::kPong: return "pong";
    case FrameType::kGoAway: return "goaway";
  }
  return "unknown";
}

const char* to_string(ResetReason r) {
  switch (r) {
    case ResetReason::kRefused: return "refused";
    case ResetReason::kNoRoute: return "no_route";
    case ResetReason::kConnectFailed: return "connect_failed";
    case ResetReason::kTimeout: return "timeout";
    case ResetReason::kPolicyDenied: return "policy_denied";
    case ResetReason::kInternal: return "internal";
    case ResetReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

const char* to_string(GoAwayReason r) {
  switch (r) {
    case GoAwayReason::kNormal: return "normal";
    case GoAwayReason::kProtocolError: return "protocol_error";
    case GoAwayReason::kInternal: return "internal";
  }
  return "unknown";
}

const char* to_string(MuxError e) {
  switch (e) {
    case MuxError::kUnknownType: return "unknown_type";
    case MuxError::kBadFlags: return "bad_flags";
    case MuxError::kBadLength: return "bad_length";
    case MuxError::kOversize: return "oversize";
    case MuxError::kBadStreamId: return "bad_stream_id";
    case MuxError::kBadParity: return "bad_parity";
    case MuxError::kReusedId: return "reused_id";
    case MuxError::kUnknownStream: return "unknown_stream";
    case MuxError::kWindowExceeded: return "window_exceeded";
    case MuxError::kBadWindowUpdate: return "bad_window_update";
    case MuxError::kAfterFin: return "after_fin";
  }
  return "unknown";
}

void put_u32(std::vector<std::byte>& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::byte>((v >> shift) & 0xffu));
}

void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::byte>((v >> shift) & 0xffu));
}

std::uint32_t get_u32(std::span<const std::byte> in) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | std::to_integer<std::uint32_t>(in[i]);
  return v;
}

std::uint64_t get_u64(std::span<const std::byte> in) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | std::to_integer<std::uint64_t>(in[i]);
  return v;
}

std::optional<MuxError> check_header(std::uint8_t type, std::uint8_t flags, StreamId stream,
                                     std::uint32_t length) {
  if (type >= kFrameTypeCount) return MuxError::kUnknownType;
  if (flags != 0) return MuxError::kBadFlags;
  const auto t = static_cast<FrameType>(type);
  const bool session_frame = t == FrameType::kPing || t == FrameType::kPong || t == FrameType::kGoAway;
  if (session_frame != (stream == 0)) return MuxError::kBadStreamId;
  // Each type's bound on the length; `fixed` types must match it exactly.
  std::size_t bound = 0;
  bool fixed = true;
  switch (t) {
    case FrameType::kData: bound = kMaxFramePayload; fixed = false; break;
    case FrameType::kOpen: bound = kMaxOpenPayload; fixed = false; break;
    case FrameType::kWindowUpdate: bound = kWindowUpdatePayload; break;
    case FrameType::kFin: bound = 0; break;
    case FrameType::kReset: bound = kResetPayload; break;
    case FrameType::kPing:
    case FrameType::kPong: bound = kPingPayload; break;
    case FrameType::kGoAway: bound = kGoAwayPayload; break;
  }
  if (length > bound) return fixed ? MuxError::kBadLength : MuxError::kOversize;
  if (fixed && length != bound) return MuxError::kBadLength;
  // An empty DATA frame carries nothing but costs a frame: refuse it rather than count it.
  if (t == FrameType::kData && length == 0) return MuxError::kBadLength;
  return std::nullopt;
}

void encode_frame_header(FrameType type, StreamId stream, std::size_t length, std::vector<std::byte>& out) {
  WEFT_CHECK(length <= kMaxFramePayload);
  const auto len32 = static_cast<std::uint32_t>(length);
  WEFT_CHECK(!check_header(static_cast<std::uint8_t>(type), 0, stream, len32));
  out.push_back(static_cast<std::byte>(type));
  out.push_back(std::byte{0});
  put_u32(out, stream);
  put_u32(out, len32);
}

void encode_frame(FrameType type, StreamId stream, std::span<const std::byte> payload,
                  std::vector<std::byte>& out) {
  encode_frame_header(type, stream, payload.size(), out);
  out.insert(out.end(), payload.begin(), payload.end());
}

void encode_frame(const Frame& f, std::vector<std::byte>& out) {
  WEFT_CHECK(f.flags == 0);
  encode_frame(f.type, f.stream, f.payload, out);
}

Result<std::optional<Frame>, MuxError> FrameDecoder::next(std::span<const std::byte>& in) {
  auto view = next_view(in);
  if (!view) return Unexpected<MuxError>(view.error());
  if (!view->has_value()) return std::optional<Frame>{};
  const FrameView& v = **view;
  return std::optional<Frame>{Frame{v.type, v.flags, v.stream, {v.payload.begin(), v.payload.end()}}};
}

Result<std::optional<FrameView>, MuxError> FrameDecoder::next_view(std::span<const std::byte>& in) {
  if (error_) return Unexpected<MuxError>(*error_);
  if (header_len_ < kFrameHeaderBytes) {
    const std::size_t n = std::min(kFrameHeaderBytes - header_len_, in.size());
    std::copy_n(in.begin(), n, header_.begin() + static_cast<std::ptrdiff_t>(header_len_));
    header_len_ += n;
    in = in.subspan(n);
    if (header_len_ < kFrameHeaderBytes) return std::optional<FrameView>{};
    const std::span<const std::byte> h(header_);
    const auto type = std::to_integer<std::uint8_t>(h[0]);
    const auto flags = std::to_integer<std::uint8_t>(h[1]);
    const StreamId stream = get_u32(h.subspan(2));
    length_ = get_u32(h.subspan(6));
    // Checked before anything is buffered: the bound is at most kMaxFramePayload.
    if (auto err = check_header(type, flags, stream, length_)) {
      error_ = err;
      return Unexpected<MuxError>(*err);
    }
    frame_ = FrameView{static_cast<FrameType>(type), flags, stream, {}};
    partial_.clear();
    if (in.size() >= length_) {  // the whole payload is here: no copy
      frame_.payload = in.first(length_);
      in = in.subspan(length_);
      header_len_ = 0;
      return std::optional<FrameView>{frame_};
    }
  }
  const std::size_t n = std::min<std::size_t>(length_ - partial_.size(), in.size());
  partial_.insert(partial_.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
  in = in.subspan(n);
  if (partial_.size() < length_) return std::optional<FrameView>{};
  header_len_ = 0;
  partial_.swap(assembled_);  // both keep their capacity: no allocation per frame
  frame_.payload = assembled_;
  return std::optional<FrameView>{frame_};
}

}  // namespace weft::transport
