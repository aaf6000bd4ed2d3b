// libFuzzer target for the stream multiplexer: arbitrary bytes go to FrameDecoder and to a
// MuxSession's on_bytes. Nothing may crash or trip a sanitizer, and:
//  - the decoder round-trips: the frames it yields re-encode to exactly the bytes they came from;
//  - the session's errors are sticky, its live streams stay within max_streams, the bytes it
//    holds for the app stay within the receive window, and everything it sends is valid frames.
// Input layout: byte 0 picks the role (bit 0: 0 = responder, fed odd ids; 1 = initiator) and
// seeds the chunk sizes (bits 1..7); the rest is the received byte stream.
// Seeds: fuzz/corpus/mux/ (valid streams with every frame type).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "weft/transport/mux.h"
#include "weft/transport/mux_frame.h"

namespace {

using weft::transport::encode_frame;
using weft::transport::Frame;
using weft::transport::FrameDecoder;
using weft::transport::kInitialWindow;
using weft::transport::MuxConfig;
using weft::transport::MuxError;
using weft::transport::MuxRole;
using weft::transport::MuxSession;

constexpr std::size_t kMaxStreams = 8;  // small, so that the refusal path is reached

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "mux_fuzz: %s\n", what);
  std::abort();
}

void check_decoder(std::span<const std::byte> bytes) {
  FrameDecoder dec;
  std::span<const std::byte> in = bytes;
  std::vector<std::byte> again;
  for (;;) {
    auto r = dec.next(in);
    if (!r || !r->has_value()) break;
    encode_frame(**r, again);
  }
  const std::size_t consumed = bytes.size() - in.size();
  // Whatever was consumed is the re-encoded frames plus at most one partial (or bad) frame.
  if (again.size() > consumed) fail("re-encoded frames are longer than their input");
  for (std::size_t i = 0; i < again.size(); ++i) {
    if (again[i] != bytes[i]) fail("re-encoded frames differ from their input");
  }
}

// Our own output must always be well-formed frames.
void check_output(const std::vector<std::byte>& out) {
  FrameDecoder dec;
  std::span<const std::byte> in(out);
  for (;;) {
    auto r = dec.next(in);
    if (!r) fail("the session sent a malformed frame");
    if (!r->has_value()) break;
  }
  if (dec.buffered() != 0) fail("the session sent a partial frame");
}

void check_session(MuxRole role, std::uint8_t chunk_seed, std::span<const std::byte> bytes) {
  MuxSession s(role, MuxConfig{.max_streams = kMaxStreams});
  std::uint32_t lcg = chunk_seed * 2654435761u + 1;
  std::optional<MuxError> error;
  std::vector<std::byte> out;
  while (!bytes.empty()) {
    lcg = lcg * 1664525u + 1013904223u;
    const std::size_t n = std::min<std::size_t>(1 + (lcg >> 16) % 64, bytes.size());
    auto r = s.on_bytes(bytes.first(n));
    bytes = bytes.subspan(n);
    if (error && (r || r.error() != *error)) fail("an error was not sticky");
    if (!r) error = r.error();
    if (s.failed() != error.has_value()) fail("failed() disagrees with on_bytes");
    if (s.live_streams() > kMaxStreams) fail("more live streams than max_streams");
    // Act like an app: consume what arrived, answer opened streams, close what the peer closed.
    for (auto& e : s.take_events()) {
      if (const auto* d = std::get_if<weft::transport::StreamData>(&e)) {
        if (s.unconsumed(d->id) > kInitialWindow) fail("unconsumed bytes above the window");
        if (d->bytes.size() > kInitialWindow) fail("a data event above the window");
        s.consume(d->id, d->bytes.size());
      } else if (const auto* o = std::get_if<weft::transport::StreamOpened>(&e)) {
        (void)s.write(o->id, o->payload);
      } else if (const auto* f = std::get_if<weft::transport::StreamFin>(&e)) {
        s.shutdown_write(f->id);
      }
    }
    out.clear();
    s.take_output(out, (lcg & 1) != 0 ? 100 : static_cast<std::size_t>(-1));
    check_output(out);
  }
  (void)s.open_stream({});
  s.ping(1);
  out.clear();
  s.take_output(out);
  check_output(out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  const MuxRole role = (data[0] & 1) != 0 ? MuxRole::kInitiator : MuxRole::kResponder;
  check_decoder(bytes);
  check_session(role, static_cast<std::uint8_t>(data[0] >> 1), bytes);
  return 0;
}
