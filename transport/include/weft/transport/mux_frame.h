#pragma once
// Frames of the stream multiplexer (mux.h): the codec only, no stream state.
//
// Frame wire picture (all integers big-endian):
//
//   0        1        2                          6                          10
//   +--------+--------+--------------------------+--------------------------+=================+
//   | type   | flags  | stream id (u32)          | length (u32)             | payload         |
//   +--------+--------+--------------------------+--------------------------+=================+
//
//   type           stream id   length      payload
//   DATA (0)       != 0        1 .. 16384  stream bytes
//   OPEN (1)       != 0        0 .. 1024   opaque bytes from the opener (e.g. the service name)
//   WINDOW_UPD (2) != 0        4           credit increment u32, > 0
//   FIN (3)        != 0        0           -
//   RESET (4)      != 0        1           ResetReason u8
//   PING (5)       0           8           opaque u64, echoed by PONG
//   PONG (6)       0           8           the PING's u64
//   GOAWAY (7)     0           1           GoAwayReason u8
//
// Flags are reserved and must be 0: a future flag comes with a new frame type or a version
// negotiated outside the mux, so a receiver never has to guess whether it may ignore one.
// Every length is checked against its type's bound as soon as the 10 header bytes are in, before
// anything is allocated: a peer cannot make us reserve more than kMaxFramePayload per frame.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "weft/base/result.h"

namespace weft::transport {

using StreamId = std::uint32_t;

inline constexpr std::size_t kFrameHeaderBytes = 10;
inline constexpr std::size_t kMaxFramePayload = 16 * 1024;  // DATA; bounds one frame's memory
inline constexpr std::size_t kMaxOpenPayload = 1024;
inline constexpr std::size_t kWindowUpdatePayload = 4;
inline constexpr std::size_t kResetPayload = 1;
inline constexpr std::size_t kPingPayload = 8;
inline constexpr std::size_t kGoAwayPayload = 1;

// append-only: values are on the wire (and index MuxStats arrays)
enum class FrameType : std::uint8_t {
  kData = 0,
  kOpen = 1,
  kWindowUpdate = 2,
  kFin = 3,
  kReset = 4,
  kPing = 5,
  kPong = 6,
  kGoAway = 7,
};
inline constexpr std::size_t kFrameTypeCount = 8;
const char* to_string(FrameType t);

// Why a stream was reset. A peer may send values this build does not know (a newer peer): they
// are passed through as they are.
// append-only: values are on the wire
enum class ResetReason : std::uint8_t {
  kRefused = 0,        // stream limit reached, or the session is going away
  kNoRoute = 1,        // no upstream for the OPEN payload
  kConnectFailed = 2,  // the upstream did not accept the connection
  kTimeout = 3,
  kPolicyDenied = 4,
  kInternal = 5,
  kCancelled = 6,      // the local app closed its connection abruptly
};
inline constexpr std::size_t kResetReasonCount = 7;
const char* to_string(ResetReason r);

// append-only: values are on the wire
enum class GoAwayReason : std::uint8_t {
  kNormal = 0,         // shutting down: finish the open streams, open no new ones
  kProtocolError = 1,  // we received a malformed frame; the connection is about to close
  kInternal = 2,
};
const char* to_string(GoAwayReason r);

// Session-fatal protocol errors: the decoder's (structure) and the session's (state).
// append-only: values index MuxStats::protocol_errors, which users see
enum class MuxError : std::uint8_t {
  kUnknownType = 0,
  kBadFlags = 1,        // a reserved flag bit set
  kBadLength = 2,       // length not the fixed size of its type, or an empty DATA
  kOversize = 3,        // length above its type's bound (DATA > 16 KiB, OPEN > 1 KiB)
  kBadStreamId = 4,     // stream 0 on a stream frame, or non-zero on a session frame
  kBadParity = 5,       // the peer opened a stream id of our parity
  kReusedId = 6,        // the peer opened an id not above every id it opened before
  kUnknownStream = 7,   // a frame for a stream that was never opened
  kWindowExceeded = 8,  // DATA beyond the credit we gave
  kBadWindowUpdate = 9, // increment 0, or a window above kMaxWindow
  kAfterFin = 10,       // DATA or FIN after the peer's FIN on that stream
};
inline constexpr std::size_t kMuxErrorCount = 11;
const char* to_string(MuxError e);

struct Frame {
  FrameType type = FrameType::kData;
  std::uint8_t flags = 0;
  StreamId stream = 0;
  std::vector<std::byte> payload;
};

// Appends one frame. The payload must respect its type's bound (WEFT_CHECK: a local bug).
void encode_frame(FrameType type, StreamId stream, std::span<const std::byte> payload,
                  std::vector<std::byte>& out);
// Appends only the header of a frame whose payload (`length` bytes, within its type's bound)
// follows separately.
void encode_frame_header(FrameType type, StreamId stream, std::size_t length, std::vector<std::byte>& out);
// The frame as it is on the wire (tests, fuzz round trips).
void encode_frame(const Frame& f, std::vector<std::byte>& out);

// Checks a header against the table above; nullopt when it is acceptable.
[[nodiscard]] std::optional<MuxError> check_header(std::uint8_t type, std::uint8_t flags,
                                                   StreamId stream, std::uint32_t length);

// A decoded frame whose payload is not copied (FrameDecoder::next_view).
struct FrameView {
  FrameType type = FrameType::kData;
  std::uint8_t flags = 0;
  StreamId stream = 0;
  std::span<const std::byte> payload;
};

// Incremental decoder: takes any chunk of bytes and yields complete frames. It holds at most one
// partial frame (header plus at most kMaxFramePayload bytes), never the caller's whole chunk.
class FrameDecoder {
 public:
  // Takes bytes from the front of `in` (advancing it) until one frame is complete: returns it, or
  // nullopt once `in` is used up in the middle of a frame (the part is kept for the next call),
  // or the error. A failed decoder stays failed: every later call returns the same error.
  [[nodiscard]] Result<std::optional<Frame>, MuxError> next(std::span<const std::byte>& in);
  // As next(), without copying the payload: it is a view into `in` when the whole frame was in
  // it, or into the decoder's own buffer when the frame was assembled across calls. A view into
  // `in` lives as long as `in`; one into the decoder lives until the next frame is assembled
  // across calls, which is never before the next chunk: each chunk completes at most one such
  // frame (its first) and starts at most one (its last).
  [[nodiscard]] Result<std::optional<FrameView>, MuxError> next_view(std::span<const std::byte>& in);
  // Bytes of the partial frame held (header and payload).
  [[nodiscard]] std::size_t buffered() const { return header_len_ + partial_.size(); }

 private:
  std::array<std::byte, kFrameHeaderBytes> header_{};
  std::size_t header_len_ = 0;  // == kFrameHeaderBytes once the header is checked
  std::uint32_t length_ = 0;    // payload length of the frame in progress
  FrameView frame_;             // the header fields of the frame in progress
  std::vector<std::byte> partial_;    // payload of a frame being assembled across calls
  std::vector<std::byte> assembled_;  // the last frame assembled (views point here)
  std::optional<MuxError> error_;
};

// Big-endian helpers shared by the session and the tests.
void put_u32(std::vector<std::byte>& out, std::uint32_t v);
void put_u64(std::vector<std::byte>& out, std::uint64_t v);
[[nodiscard]] std::uint32_t get_u32(std::span<const std::byte> in);  // in.size() >= 4
[[nodiscard]] std::uint64_t get_u64(std::span<const std::byte> in);  // in.size() >= 8

}  // namespace weft::transport
