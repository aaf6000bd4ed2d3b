// weft::transport stream multiplexer: the frame codec (golden bytes, every prefix, malformed
// headers) and two MuxSessions back to back through an in-memory pipe that delivers bytes in
// random chunk sizes. Stream contents are compared with SHA-256 (libsodium) at both ends.

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "weft/transport/mux.h"
#include "weft/transport/mux_frame.h"

namespace weft::transport {
namespace {

using Bytes = std::vector<std::byte>;
using Digest = std::array<unsigned char, crypto_hash_sha256_BYTES>;

constexpr std::size_t kNoLimit = std::numeric_limits<std::size_t>::max();

Bytes bytes_of(std::string_view s) {
  Bytes out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

Bytes filled(std::size_t n, std::uint8_t v) { return Bytes(n, std::byte{v}); }

// A frame with any header, valid or not; `length` defaults to the payload's size.
Bytes raw_frame(std::uint8_t type, std::uint8_t flags, StreamId id, const Bytes& payload,
                std::optional<std::uint32_t> length = std::nullopt) {
  Bytes out{std::byte{type}, std::byte{flags}};
  put_u32(out, id);
  put_u32(out, length.value_or(static_cast<std::uint32_t>(payload.size())));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes frame(FrameType t, StreamId id, const Bytes& payload = {}) {
  Bytes out;
  encode_frame(t, id, payload, out);
  return out;
}

Bytes u32_payload(std::uint32_t v) {
  Bytes out;
  put_u32(out, v);
  return out;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

class Sha256 {
 public:
  Sha256() { crypto_hash_sha256_init(&state_); }
  void update(std::span<const std::byte> b) {
    crypto_hash_sha256_update(&state_, reinterpret_cast<const unsigned char*>(b.data()), b.size());
  }
  Digest final() {
    Digest d{};
    crypto_hash_sha256_final(&state_, d.data());
    return d;
  }

 private:
  crypto_hash_sha256_state state_{};
};

// A session for tests that feed several chunks before they look at the events: StreamData views
// are good only until the next on_bytes(), so this keeps a copy of each event's bytes (for the
// test's lifetime) and hands the events out on take_events().
class TestMux : public MuxSession {
 public:
  using MuxSession::MuxSession;
  Result<void, MuxError> on_bytes(std::span<const std::byte> bytes) {
    auto r = MuxSession::on_bytes(bytes);
    collect();
    return r;
  }
  std::vector<MuxEvent> take_events() {
    collect();  // events of other calls (take_output, reset, ...)
    return std::exchange(events_, {});
  }

 private:
  void collect() {
    std::vector<MuxEvent> events;
    MuxSession::take_events(events);
    for (auto& e : events) {
      if (auto* d = std::get_if<StreamData>(&e)) {
        kept_.emplace_back(d->bytes.begin(), d->bytes.end());
        d->bytes = kept_.back();
      }
      events_.push_back(std::move(e));
    }
  }

  std::deque<Bytes> kept_;  // a deque: the bytes of earlier events never move
  std::vector<MuxEvent> events_;
};

// Moves what `from` has to send to `to` in random chunks (sometimes single bytes); returns the
// bytes moved. A protocol error on a valid stream fails the test.
std::size_t deliver(TestMux& from, TestMux& to, std::mt19937_64& rng, std::size_t max_bytes = kNoLimit) {
  Bytes wire;
  from.take_output(wire, max_bytes);
  std::size_t pos = 0;
  while (pos < wire.size()) {
    const std::size_t cap = rng() % 4 == 0 ? 1 : 1 + rng() % 5000;
    const std::size_t n = std::min(cap, wire.size() - pos);
    auto r = to.on_bytes(std::span<const std::byte>(wire).subspan(pos, n));
    EXPECT_TRUE(r) << "protocol error: " << to_string(r.error());
    if (!r) break;
    pos += n;
  }
  return wire.size();
}

// Delivers both ways until neither side has output (events stay with the sessions).
void settle(TestMux& a, TestMux& b, std::mt19937_64& rng) {
  for (int i = 0; i < 100; ++i) {
    if (deliver(a, b, rng) + deliver(b, a, rng) == 0) return;
  }
  ADD_FAILURE() << "sessions did not settle";
}

template <typename E>
std::vector<E> events_of(const std::vector<MuxEvent>& events) {
  std::vector<E> out;
  for (const auto& e : events) {
    if (const auto* p = std::get_if<E>(&e)) out.push_back(*p);
  }
  return out;
}

Bytes data_of(const std::vector<MuxEvent>& events, StreamId id) {
  Bytes out;
  for (const auto& d : events_of<StreamData>(events)) {
    if (d.id == id) out.insert(out.end(), d.bytes.begin(), d.bytes.end());
  }
  return out;
}

// ---- codec ----

TEST(MuxFrameTest, GoldenBytes) {
  const Bytes data = frame(FrameType::kData, 0x01020304, bytes_of("hi"));
  const Bytes want_data{std::byte{0x00}, std::byte{0x00}, std::byte{0x01}, std::byte{0x02}, std::byte{0x03},
                        std::byte{0x04}, std::byte{0x00}, std::byte{0x00}, std::byte{0x00}, std::byte{0x02},
                        std::byte{'h'},  std::byte{'i'}};
  EXPECT_EQ(data, want_data);
  const Bytes wu = frame(FrameType::kWindowUpdate, 7, u32_payload(0x00040000));
  const Bytes want_wu{std::byte{0x02}, std::byte{0x00}, std::byte{0x00}, std::byte{0x00}, std::byte{0x00},
                      std::byte{0x07}, std::byte{0x00}, std::byte{0x00}, std::byte{0x00}, std::byte{0x04},
                      std::byte{0x00}, std::byte{0x04}, std::byte{0x00}, std::byte{0x00}};
  EXPECT_EQ(wu, want_wu);
  const Bytes reset = frame(FrameType::kReset, 2, {std::byte{4}});
  EXPECT_EQ(reset.size(), kFrameHeaderBytes + 1);
  EXPECT_EQ(reset[0], std::byte{0x04});
  EXPECT_EQ(reset.back(), std::byte{4});  // policy_denied
}

// A byte stream holding every frame type, and the frames it holds.
std::vector<Frame> sample_frames() {
  Bytes ping;
  put_u64(ping, 0x1122334455667788u);
  return {
      Frame{FrameType::kOpen, 0, 1, bytes_of("web.prod")},
      Frame{FrameType::kData, 0, 1, bytes_of("GET / HTTP/1.1\r\n")},
      Frame{FrameType::kWindowUpdate, 0, 1, u32_payload(4096)},
      Frame{FrameType::kOpen, 0, 3, {}},
      Frame{FrameType::kFin, 0, 1, {}},
      Frame{FrameType::kPing, 0, 0, ping},
      Frame{FrameType::kPong, 0, 0, ping},
      Frame{FrameType::kData, 0, 3, filled(kMaxFramePayload, 0xab)},
      Frame{FrameType::kReset, 0, 3, {std::byte{2}}},
      Frame{FrameType::kGoAway, 0, 0, {std::byte{0}}},
  };
}

bool same(const Frame& a, const Frame& b) {
  return a.type == b.type && a.flags == b.flags && a.stream == b.stream && a.payload == b.payload;
}

TEST(MuxFrameTest, EveryPrefixDecodesToTheFramesItContains) {
  const auto frames = sample_frames();
  Bytes wire;
  std::vector<std::size_t> ends;
  for (const auto& f : frames) {
    encode_frame(f, wire);
    ends.push_back(wire.size());
  }
  for (std::size_t p = 0; p <= wire.size(); ++p) {
    FrameDecoder dec;
    std::span<const std::byte> in(wire.data(), p);
    std::vector<Frame> got;
    for (;;) {
      auto r = dec.next(in);
      ASSERT_TRUE(r) << "prefix " << p << ": " << to_string(r.error());
      if (!r->has_value()) break;
      got.push_back(std::move(**r));
    }
    const auto complete = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), p) - ends.begin());
    ASSERT_EQ(got.size(), complete) << "prefix " << p;
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(same(got[i], frames[i])) << "prefix " << p;
    EXPECT_TRUE(in.empty());
    EXPECT_EQ(dec.buffered(), p - (complete == 0 ? 0 : ends[complete - 1])) << "prefix " << p;
  }
}

TEST(MuxFrameTest, RandomChunksYieldTheSameFrames) {
  const auto frames = sample_frames();
  Bytes wire;
  for (const auto& f : frames) encode_frame(f, wire);
  std::mt19937_64 rng(42);
  for (int round = 0; round < 50; ++round) {
    FrameDecoder dec;
    std::vector<Frame> got;
    std::size_t pos = 0;
    while (pos < wire.size()) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 40, wire.size() - pos);
      std::span<const std::byte> in(wire.data() + pos, n);
      pos += n;
      for (;;) {
        auto r = dec.next(in);
        ASSERT_TRUE(r);
        if (!r->has_value()) break;
        got.push_back(std::move(**r));
      }
    }
    ASSERT_EQ(got.size(), frames.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(same(got[i], frames[i]));
  }
}

TEST(MuxFrameTest, BadHeadersAreRejectedBeforeTheirPayload) {
  struct Case {
    const char* name;
    std::uint8_t type, flags;
    StreamId id;
    std::uint32_t length;
    MuxError want;
  };
  const Case cases[] = {
      {"unknown type 8", 8, 0, 1, 0, MuxError::kUnknownType},
      {"unknown type 255", 255, 0, 1, 0, MuxError::kUnknownType},
      {"flag set", 0, 0x80, 1, 1, MuxError::kBadFlags},
      {"data 16 KiB + 1", 0, 0, 1, kMaxFramePayload + 1, MuxError::kOversize},
      {"data 4 GiB", 0, 0, 1, 0xffffffffu, MuxError::kOversize},
      {"open 1 KiB + 1", 1, 0, 1, kMaxOpenPayload + 1, MuxError::kOversize},
      {"empty data", 0, 0, 1, 0, MuxError::kBadLength},
      {"window update of 3", 2, 0, 1, 3, MuxError::kBadLength},
      {"fin with payload", 3, 0, 1, 1, MuxError::kBadLength},
      {"reset of 2", 4, 0, 1, 2, MuxError::kBadLength},
      {"ping of 7", 5, 0, 0, 7, MuxError::kBadLength},
      {"goaway of 0", 7, 0, 0, 0, MuxError::kBadLength},
      {"data on stream 0", 0, 0, 0, 1, MuxError::kBadStreamId},
      {"open on stream 0", 1, 0, 0, 0, MuxError::kBadStreamId},
      {"ping on stream 1", 5, 0, 1, 8, MuxError::kBadStreamId},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    // Header only: the error must come before any payload byte is needed or reserved.
    const Bytes wire = raw_frame(c.type, c.flags, c.id, {}, c.length);
    FrameDecoder dec;
    std::span<const std::byte> in(wire);
    auto r = dec.next(in);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), c.want);
    std::span<const std::byte> more(wire);
    auto again = dec.next(more);  // a failed decoder stays failed
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), c.want);
  }
}

TEST(MuxFrameTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(7);
  int errors = 0;
  for (int round = 0; round < 2000; ++round) {
    Bytes junk(rng() % 64);
    for (auto& b : junk) b = static_cast<std::byte>(rng());
    MuxSession s(round % 2 == 0 ? MuxRole::kInitiator : MuxRole::kResponder);
    if (!s.on_bytes(junk)) ++errors;
    Bytes out;
    s.take_output(out);
    (void)s.take_events();
  }
  EXPECT_GT(errors, 1000);  // most junk is malformed: the check is not a tautology
}

// DATA is not copied: a frame that came whole points into the caller's bytes; one that came in
// pieces points into the decoder, and stays intact while the next chunk starts another frame.
TEST(MuxFrameTest, DataEventsAreViewsIntoTheInput) {
  TestMux a(MuxRole::kInitiator);
  const StreamId id = *a.open_stream({});
  Bytes wire;
  a.take_output(wire);
  ASSERT_EQ(a.write(id, bytes_of("first")), 5u);
  a.take_output(wire);
  ASSERT_EQ(a.write(id, bytes_of("second")), 6u);
  a.take_output(wire);
  ASSERT_EQ(a.write(id, bytes_of("third")), 5u);
  a.take_output(wire);
  MuxSession b(MuxRole::kResponder);
  const std::size_t second_ends = wire.size() - (kFrameHeaderBytes + 5);
  const std::size_t split = second_ends - 3;  // inside "second"
  const std::span<const std::byte> whole(wire);
  ASSERT_TRUE(b.on_bytes(whole.first(split)));
  auto first = events_of<StreamData>(b.take_events());
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(Bytes(first[0].bytes.begin(), first[0].bytes.end()), bytes_of("first"));
  EXPECT_GE(first[0].bytes.data(), wire.data());
  EXPECT_LT(first[0].bytes.data(), wire.data() + split);
  // The rest of "second", then "third" cut after 2 of its payload bytes: "second" is assembled
  // in the decoder and must not be overwritten by the start of "third".
  ASSERT_TRUE(b.on_bytes(whole.subspan(split, wire.size() - 3 - split)));
  auto next = events_of<StreamData>(b.take_events());
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(Bytes(next[0].bytes.begin(), next[0].bytes.end()), bytes_of("second"));
  ASSERT_TRUE(b.on_bytes(whole.subspan(wire.size() - 3)));
  auto last = events_of<StreamData>(b.take_events());
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(Bytes(last[0].bytes.begin(), last[0].bytes.end()), bytes_of("third"));
}

// ---- sessions back to back ----

struct Pair {
  explicit Pair(MuxConfig a_cfg = {}, MuxConfig b_cfg = {}, std::uint64_t seed = 1)
      : a(MuxRole::kInitiator, a_cfg), b(MuxRole::kResponder, b_cfg), rng(seed) {}
  void ab(std::size_t max_bytes = kNoLimit) { deliver(a, b, rng, max_bytes); }
  void ba(std::size_t max_bytes = kNoLimit) { deliver(b, a, rng, max_bytes); }
  void settle_all() { settle(a, b, rng); }
  TestMux a, b;
  std::mt19937_64 rng;
};

StreamId open_ok(TestMux& s, std::string_view payload = "svc") {
  auto id = s.open_stream(bytes_of(payload));
  EXPECT_TRUE(id) << id.error().message;
  return id ? *id : 0;
}

TEST(MuxSessionTest, StreamIdsHaveTheRoleParity) {
  Pair p;
  EXPECT_EQ(open_ok(p.a), 1u);
  EXPECT_EQ(open_ok(p.a), 3u);
  EXPECT_EQ(open_ok(p.b), 2u);
  EXPECT_EQ(open_ok(p.b), 4u);
  p.settle_all();
  const auto ea = p.a.take_events();
  const auto eb = p.b.take_events();
  ASSERT_EQ(events_of<StreamOpened>(eb).size(), 2u);
  EXPECT_EQ(events_of<StreamOpened>(eb)[0].id, 1u);
  EXPECT_EQ(events_of<StreamOpened>(eb)[0].payload, bytes_of("svc"));
  ASSERT_EQ(events_of<StreamOpened>(ea).size(), 2u);
  EXPECT_EQ(events_of<StreamOpened>(ea)[1].id, 4u);
  EXPECT_EQ(p.a.live_streams(), 4u);
  EXPECT_EQ(p.b.live_streams(), 4u);
  EXPECT_FALSE(p.a.open_stream(filled(kMaxOpenPayload + 1, 1)));
}

// write_space/commit_write: the caller fills the stream's queue in place. Room is handed out
// only when the queue need not grow for it, never beyond the credit, and the bytes arrive as
// write() would send them.
TEST(MuxSessionTest, WriteSpaceFillsTheQueueInPlace) {
  Pair p;
  const StreamId id = open_ok(p.a);
  EXPECT_TRUE(p.a.write_space(id, 100).empty());  // a new stream has no room yet: write() copies
  ASSERT_EQ(p.a.write(id, bytes_of("0123456789")), 10u);
  p.ab();  // framed: the queue is empty again and keeps its room
  auto space = p.a.write_space(id, 10);
  ASSERT_EQ(space.size(), 10u);
  const Bytes abc = bytes_of("abcdefghij");
  std::copy(abc.begin(), abc.end(), space.begin());
  p.a.commit_write(id, 4);  // only what was filled
  EXPECT_EQ(p.a.send_credit(id), kInitialWindow - 14);
  EXPECT_TRUE(p.a.write_space(id, 11).empty());  // 11 would not fit the 10-byte room
  p.a.shutdown_write(id);
  EXPECT_TRUE(p.a.write_space(id, 1).empty());  // after FIN: nothing
  p.ab();
  const auto eb = p.b.take_events();
  EXPECT_EQ(data_of(eb, id), bytes_of("0123456789abcd"));
  EXPECT_EQ(events_of<StreamFin>(eb).size(), 1u);
  EXPECT_TRUE(p.a.write_space(999, 1).empty());  // unknown stream
}

// The data plane seals take_output's gathered form in place: frame headers in `small`, DATA as
// views into the streams' queues. Sent in random budgets, the pieces must decode at the peer to
// exactly what was written, and the views must stay valid after the call even when a stream is
// closed by it (its last DATA and FIN go out after the peer's FIN: ASan checks the reads below).
TEST(MuxSessionTest, GatheredOutputDecodesToWhatWasWrittenAndOutlivesAClosingStream) {
  Pair p;
  std::mt19937_64 rng(11);
  const StreamId s1 = open_ok(p.a, "one");
  const StreamId s2 = open_ok(p.a, "two");
  p.ab();
  p.b.shutdown_write(s1);  // the peer is done with s1: our FIN will close it
  p.ba();
  Bytes d1(100000), d2(50000);
  for (auto& b : d1) b = static_cast<std::byte>(rng());
  for (auto& b : d2) b = static_cast<std::byte>(rng());
  ASSERT_EQ(p.a.write(s1, d1), d1.size());
  ASSERT_EQ(p.a.write(s2, d2), d2.size());
  p.a.shutdown_write(s1);
  bool s1_closed = false;
  for (int round = 0; round < 1000; ++round) {
    std::vector<std::byte> small;
    std::vector<std::span<const std::byte>> pieces;
    const std::size_t budget = 11 + rng() % 40000;
    const std::size_t n = p.a.take_output(small, pieces, budget);
    if (n == 0) break;
    for (const auto& e : p.a.take_events()) s1_closed |= std::holds_alternative<StreamClosed>(e);
    Bytes wire;
    for (const auto& piece : pieces) wire.insert(wire.end(), piece.begin(), piece.end());
    ASSERT_EQ(wire.size(), n);
    ASSERT_TRUE(p.b.on_bytes(wire));
  }
  EXPECT_TRUE(s1_closed);
  EXPECT_EQ(p.a.live_streams(), 1u);  // s2 only
  const auto eb = p.b.take_events();
  EXPECT_EQ(data_of(eb, s1), d1);
  EXPECT_EQ(data_of(eb, s2), d2);
  EXPECT_EQ(events_of<StreamFin>(eb).size(), 1u);
  EXPECT_EQ(p.a.pending_output(), 0u);
}

TEST(MuxSessionTest, HalfCloseEachWay) {
  Pair p;
  const StreamId id = open_ok(p.a);
  ASSERT_EQ(p.a.write(id, bytes_of("request")), 7u);
  p.a.shutdown_write(id);
  EXPECT_EQ(p.a.write(id, bytes_of("late")), 0u);  // nothing after our FIN
  p.settle_all();
  auto eb = p.b.take_events();
  EXPECT_EQ(data_of(eb, id), bytes_of("request"));
  ASSERT_EQ(events_of<StreamFin>(eb).size(), 1u);
  p.b.consume(id, 7);
  // Half-closed: the stream lives on both sides and the other direction still works.
  EXPECT_EQ(p.a.live_streams(), 1u);
  EXPECT_EQ(p.b.live_streams(), 1u);
  ASSERT_EQ(p.b.write(id, bytes_of("response")), 8u);
  p.settle_all();
  auto ea = p.a.take_events();
  EXPECT_EQ(data_of(ea, id), bytes_of("response"));
  EXPECT_TRUE(events_of<StreamFin>(ea).empty());
  EXPECT_TRUE(events_of<StreamClosed>(ea).empty());
  p.b.shutdown_write(id);
  p.settle_all();
  ea = p.a.take_events();
  eb = p.b.take_events();
  EXPECT_EQ(events_of<StreamFin>(ea).size(), 1u);
  EXPECT_EQ(events_of<StreamClosed>(ea).size(), 1u);
  EXPECT_EQ(events_of<StreamClosed>(eb).size(), 1u);
  EXPECT_EQ(p.a.live_streams(), 0u);
  EXPECT_EQ(p.b.live_streams(), 0u);
  EXPECT_EQ(p.a.stats().streams_closed, 1u);
  EXPECT_EQ(p.b.stats().frames_in[static_cast<std::size_t>(FrameType::kFin)], 1u);
}

TEST(MuxSessionTest, ResetByThePeerDropsTheStreamAndLateFramesAreIgnored) {
  Pair p;
  const StreamId id = open_ok(p.a);
  ASSERT_EQ(p.a.write(id, filled(1000, 1)), 1000u);
  p.ab();
  ASSERT_EQ(events_of<StreamOpened>(p.b.take_events()).size(), 1u);
  // B refuses the stream while A's next bytes are already on their way.
  p.b.reset(id, ResetReason::kNoRoute);
  EXPECT_EQ(p.b.live_streams(), 0u);
  ASSERT_EQ(p.a.write(id, filled(5000, 2)), 5000u);
  p.a.shutdown_write(id);
  p.ab();  // DATA and FIN for a stream B forgot: ignored, not an error
  EXPECT_EQ(p.b.stats().frames_ignored, 2u);
  EXPECT_FALSE(p.b.failed());
  p.ba();
  const auto ea = p.a.take_events();
  const auto resets = events_of<StreamReset>(ea);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].id, id);
  EXPECT_EQ(resets[0].reason, ResetReason::kNoRoute);
  EXPECT_EQ(events_of<StreamClosed>(ea).size(), 1u);
  EXPECT_EQ(p.a.live_streams(), 0u);
  EXPECT_EQ(p.a.write(id, filled(10, 3)), 0u);
  EXPECT_EQ(p.a.stats().resets_received[static_cast<std::size_t>(ResetReason::kNoRoute)], 1u);
  EXPECT_EQ(p.b.stats().resets_sent[static_cast<std::size_t>(ResetReason::kNoRoute)], 1u);
  // Our own reset drops queued data: nothing but the RESET leaves.
  const StreamId id2 = open_ok(p.a);
  p.ab();
  ASSERT_EQ(p.a.write(id2, filled(100, 4)), 100u);
  p.a.reset(id2, ResetReason::kCancelled);
  Bytes out;
  p.a.take_output(out);
  EXPECT_EQ(out, frame(FrameType::kReset, id2, {std::byte{6}}));
  ASSERT_TRUE(p.b.on_bytes(out));
  const auto eb = p.b.take_events();
  ASSERT_EQ(events_of<StreamReset>(eb).size(), 1u);
  EXPECT_EQ(events_of<StreamReset>(eb)[0].reason, ResetReason::kCancelled);
  EXPECT_TRUE(data_of(eb, id2).empty());
  EXPECT_EQ(p.b.live_streams(), 0u);
}

TEST(MuxSessionTest, SlowReaderStallsTheWriterAtExactlyTheWindow) {
  Pair p;
  const StreamId id = open_ok(p.a);
  const Bytes chunk = filled(1 << 20, 0x5a);  // 1 MiB offered again and again
  std::size_t accepted = 0;
  for (int round = 0; round < 20; ++round) {
    accepted += p.a.write(id, chunk);
    p.settle_all();
    // The reader never consumes: what it holds is bounded by the window, whatever the writer does.
    EXPECT_LE(p.b.unconsumed(id), kInitialWindow);
    EXPECT_LE(p.a.pending_output(), kInitialWindow + 64 * kFrameHeaderBytes);
  }
  EXPECT_EQ(accepted, kInitialWindow);
  EXPECT_EQ(p.b.unconsumed(id), kInitialWindow);
  EXPECT_EQ(p.b.stats().data_bytes_in, kInitialWindow);
  EXPECT_EQ(p.a.send_credit(id), 0u);
  EXPECT_GE(p.a.stats().window_stalls, 20u);
  EXPECT_EQ(data_of(p.b.take_events(), id).size(), kInitialWindow);

  // Credit comes back in half windows: one byte short of half sends nothing.
  p.b.consume(id, kInitialWindow / 2 - 1);
  p.settle_all();
  EXPECT_EQ(p.a.send_credit(id), 0u);
  EXPECT_TRUE(events_of<StreamWritable>(p.a.take_events()).empty());
  EXPECT_EQ(p.b.stats().frames_out[static_cast<std::size_t>(FrameType::kWindowUpdate)], 0u);
  p.b.consume(id, 1);
  p.settle_all();
  EXPECT_EQ(p.a.send_credit(id), kInitialWindow / 2);
  const auto writable = events_of<StreamWritable>(p.a.take_events());
  ASSERT_EQ(writable.size(), 1u);
  EXPECT_EQ(writable[0].id, id);
  EXPECT_EQ(p.a.write(id, chunk), kInitialWindow / 2);
  p.settle_all();
  EXPECT_EQ(p.b.unconsumed(id), kInitialWindow);
}

TEST(MuxSessionTest, LargerReceiveWindowIsGrantedWhenTheStreamStarts) {
  Pair p(MuxConfig{.receive_window = 1 << 20}, MuxConfig{.receive_window = 512 * 1024});
  const StreamId id = open_ok(p.a);
  EXPECT_EQ(p.a.send_credit(id), kInitialWindow);  // nothing granted yet by B
  p.settle_all();
  EXPECT_EQ(p.a.send_credit(id), 512u * 1024);
  EXPECT_EQ(p.b.send_credit(id), 1u << 20);
  EXPECT_EQ(p.a.write(id, filled(1 << 20, 1)), 512u * 1024);
  p.settle_all();
  EXPECT_EQ(p.b.unconsumed(id), 512u * 1024);
  EXPECT_FALSE(p.a.failed());
  EXPECT_FALSE(p.b.failed());
}

TEST(MuxSessionTest, SmallStreamFinishesWhileABulkOneIsInProgress) {
  Pair p;
  const StreamId bulk = open_ok(p.a);
  ASSERT_EQ(p.a.write(bulk, filled(kInitialWindow, 0xbb)), kInitialWindow);
  p.ab(32 * 1024);  // the bulk stream is already on the wire
  const StreamId small = open_ok(p.a);
  ASSERT_EQ(p.a.write(small, bytes_of("hello")), 5u);
  p.a.shutdown_write(small);
  std::size_t bulk_received = 0;
  bool small_done = false;
  std::size_t bulk_when_small_done = 0;
  for (int step = 0; step < 200 && bulk_received < kInitialWindow; ++step) {
    // The socket takes 20 KiB per turn: a FIFO would send all 256 KiB of bulk first.
    Bytes wire;
    p.a.take_output(wire, 20 * 1024);
    // No DATA frame is longer than a chunk.
    FrameDecoder dec;
    std::span<const std::byte> in(wire);
    for (;;) {
      auto f = dec.next(in);
      ASSERT_TRUE(f);
      if (!f->has_value()) break;
      EXPECT_LE((*f)->payload.size(), kMaxFramePayload);
    }
    ASSERT_TRUE(p.b.on_bytes(wire));
    for (const auto& e : p.b.take_events()) {
      if (const auto* d = std::get_if<StreamData>(&e); d != nullptr && d->id == bulk) {
        bulk_received += d->bytes.size();
        p.b.consume(bulk, d->bytes.size());
      }
      if (const auto* fin = std::get_if<StreamFin>(&e); fin != nullptr && fin->id == small) {
        small_done = true;
        bulk_when_small_done = bulk_received;
      }
    }
    p.ba();
  }
  EXPECT_TRUE(small_done);
  EXPECT_EQ(bulk_received, kInitialWindow);
  EXPECT_LE(bulk_when_small_done, 64u * 1024);
}

TEST(MuxSessionTest, OpensBeyondTheStreamLimitAreRefused) {
  Pair p(MuxConfig{}, MuxConfig{.max_streams = 2});
  const StreamId s1 = open_ok(p.a);
  open_ok(p.a);
  const StreamId s3 = open_ok(p.a);
  ASSERT_EQ(p.a.write(s3, filled(100, 1)), 100u);  // 0-RTT data of a refused stream: ignored
  p.settle_all();
  EXPECT_EQ(events_of<StreamOpened>(p.b.take_events()).size(), 2u);
  EXPECT_EQ(p.b.live_streams(), 2u);
  EXPECT_EQ(p.b.stats().resets_sent[static_cast<std::size_t>(ResetReason::kRefused)], 1u);
  EXPECT_EQ(p.b.stats().streams_opened_remote, 2u);
  const auto ea = p.a.take_events();
  ASSERT_EQ(events_of<StreamReset>(ea).size(), 1u);
  EXPECT_EQ(events_of<StreamReset>(ea)[0].id, s3);
  EXPECT_EQ(events_of<StreamReset>(ea)[0].reason, ResetReason::kRefused);
  EXPECT_EQ(p.a.live_streams(), 2u);
  // Room again once a stream is gone.
  p.a.reset(s1, ResetReason::kCancelled);
  p.settle_all();
  const StreamId s4 = open_ok(p.a);
  p.settle_all();
  const auto opened = events_of<StreamOpened>(p.b.take_events());
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].id, s4);
  // The local side refuses beyond its own limit.
  MuxSession one(MuxRole::kInitiator, MuxConfig{.max_streams = 1});
  EXPECT_TRUE(one.open_stream({}));
  EXPECT_FALSE(one.open_stream({}));
}

TEST(MuxSessionTest, PingIsAnsweredWithItsPayload) {
  Pair p;
  p.a.ping(0xdeadbeefcafef00du);
  p.settle_all();
  const auto pongs = events_of<Pong>(p.a.take_events());
  ASSERT_EQ(pongs.size(), 1u);
  EXPECT_EQ(pongs[0].payload, 0xdeadbeefcafef00du);
  EXPECT_EQ(p.b.stats().frames_in[static_cast<std::size_t>(FrameType::kPing)], 1u);
  EXPECT_EQ(p.b.stats().frames_out[static_cast<std::size_t>(FrameType::kPong)], 1u);
}

TEST(MuxSessionTest, GoAwayStopsNewStreamsButNotOpenOnes) {
  Pair p;
  const StreamId id = open_ok(p.a);
  p.settle_all();
  p.b.go_away();
  p.settle_all();
  const auto gone = events_of<GoAway>(p.a.take_events());
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].reason, GoAwayReason::kNormal);
  EXPECT_STREQ(to_string(gone[0].reason), "normal");
  EXPECT_FALSE(p.a.open_stream({}));
  EXPECT_FALSE(p.b.open_stream({}));
  ASSERT_EQ(p.a.write(id, bytes_of("still here")), 10u);
  p.settle_all();
  EXPECT_EQ(data_of(p.b.take_events(), id), bytes_of("still here"));
  // An OPEN that crossed the GOAWAY is refused, not an error.
  ASSERT_TRUE(p.b.on_bytes(frame(FrameType::kOpen, 5)));
  Bytes out;
  p.b.take_output(out);
  EXPECT_EQ(out, frame(FrameType::kReset, 5, {std::byte{0}}));
}

// ---- protocol errors ----

struct ErrorCase {
  const char* name;
  MuxRole role;
  Bytes wire;
  MuxError want;
};

std::vector<ErrorCase> error_cases() {
  Bytes beyond_window = frame(FrameType::kOpen, 1);
  for (std::size_t sent = 0; sent < kInitialWindow; sent += kMaxFramePayload) {
    const Bytes d = frame(FrameType::kData, 1, filled(kMaxFramePayload, 1));
    beyond_window.insert(beyond_window.end(), d.begin(), d.end());
  }
  const Bytes one = frame(FrameType::kData, 1, filled(1, 1));
  beyond_window.insert(beyond_window.end(), one.begin(), one.end());
  const auto R = MuxRole::kResponder;
  return {
      {"peer exceeding the window", R, beyond_window, MuxError::kWindowExceeded},
      {"even id from the initiator", R, frame(FrameType::kOpen, 2), MuxError::kBadParity},
      {"odd id from the responder", MuxRole::kInitiator, frame(FrameType::kOpen, 1), MuxError::kBadParity},
      {"reused id", R, concat({frame(FrameType::kOpen, 1), frame(FrameType::kOpen, 1)}), MuxError::kReusedId},
      {"lower id", R, concat({frame(FrameType::kOpen, 5), frame(FrameType::kOpen, 3)}), MuxError::kReusedId},
      {"oversize data", R, raw_frame(0, 0, 1, {}, kMaxFramePayload + 1), MuxError::kOversize},
      {"oversize open", R, raw_frame(1, 0, 1, filled(kMaxOpenPayload + 1, 0)), MuxError::kOversize},
      {"unknown type", R, raw_frame(9, 0, 1, {}), MuxError::kUnknownType},
      {"reserved flag", R, raw_frame(3, 1, 1, {}), MuxError::kBadFlags},
      {"data for a stream never opened", R, frame(FrameType::kData, 7, filled(3, 0)), MuxError::kUnknownStream},
      {"window update for our unopened id", R, frame(FrameType::kWindowUpdate, 2, u32_payload(1)),
       MuxError::kUnknownStream},
      {"data after fin", R, concat({frame(FrameType::kOpen, 1), frame(FrameType::kFin, 1), one}), MuxError::kAfterFin},
      {"second fin", R, concat({frame(FrameType::kOpen, 1), frame(FrameType::kFin, 1), frame(FrameType::kFin, 1)}),
       MuxError::kAfterFin},
      {"zero window update", R, concat({frame(FrameType::kOpen, 1), frame(FrameType::kWindowUpdate, 1, u32_payload(0))}),
       MuxError::kBadWindowUpdate},
      {"window above 2^31-1", R,
       concat({frame(FrameType::kOpen, 1), frame(FrameType::kWindowUpdate, 1, u32_payload(kMaxWindow))}),
       MuxError::kBadWindowUpdate},
  };
}

TEST(MuxSessionTest, ProtocolErrorsAreFatalWithTheirReason) {
  for (const auto& c : error_cases()) {
    SCOPED_TRACE(c.name);
    MuxSession s(c.role);
    std::mt19937_64 rng(3);
    // Fed in random chunks: the error must not depend on where the bytes were split.
    std::optional<MuxError> err;
    for (std::size_t pos = 0; pos < c.wire.size() && !err;) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 3000, c.wire.size() - pos);
      auto r = s.on_bytes(std::span<const std::byte>(c.wire).subspan(pos, n));
      if (!r) err = r.error();
      pos += n;
    }
    ASSERT_TRUE(err.has_value());
    EXPECT_EQ(*err, c.want) << to_string(*err);
    EXPECT_TRUE(s.failed());
    EXPECT_EQ(s.stats().protocol_errors[static_cast<std::size_t>(c.want)], 1u);
    // Sticky: valid bytes are refused afterwards, and the peer is told why.
    auto again = s.on_bytes(frame(FrameType::kPing, 0, filled(8, 0)));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), c.want);
    Bytes out;
    s.take_output(out);
    const Bytes goaway = frame(FrameType::kGoAway, 0, {std::byte{1}});
    ASSERT_GE(out.size(), goaway.size());
    EXPECT_TRUE(std::equal(goaway.begin(), goaway.end(), out.end() - static_cast<std::ptrdiff_t>(goaway.size())));
    EXPECT_EQ(s.stats().protocol_errors[static_cast<std::size_t>(c.want)], 1u);  // counted once
  }
}

TEST(MuxSessionTest, EveryPrefixOfAValidStreamIsAccepted) {
  Bytes ping;
  put_u64(ping, 99);
  const Bytes wire = concat({frame(FrameType::kOpen, 1, bytes_of("db")), frame(FrameType::kData, 1, bytes_of("abc")),
                             frame(FrameType::kWindowUpdate, 1, u32_payload(10)), frame(FrameType::kOpen, 3),
                             frame(FrameType::kPing, 0, ping), frame(FrameType::kFin, 1),
                             frame(FrameType::kReset, 3, {std::byte{42}}),  // a reason from a newer peer
                             frame(FrameType::kGoAway, 0, {std::byte{0}})});
  for (std::size_t p = 0; p <= wire.size(); ++p) {
    MuxSession s(MuxRole::kResponder);
    ASSERT_TRUE(s.on_bytes(std::span<const std::byte>(wire).first(p))) << "prefix " << p;
    if (p == wire.size()) {
      const auto ev = s.take_events();
      EXPECT_EQ(data_of(ev, 1), bytes_of("abc"));
      ASSERT_EQ(events_of<StreamReset>(ev).size(), 1u);
      EXPECT_EQ(static_cast<int>(events_of<StreamReset>(ev)[0].reason), 42);
      EXPECT_EQ(s.stats().resets_received_unknown, 1u);
      EXPECT_EQ(events_of<GoAway>(ev).size(), 1u);
      EXPECT_EQ(s.live_streams(), 1u);  // stream 1: peer FIN, ours not sent
    }
  }
}

// ---- many streams, random traffic ----

// One direction of one stream: what the sender still has to write (random contents from its
// own generator) and the hash of what was accepted; at the receiver, the hash of what arrived.
struct Flow {
  std::uint64_t total = 0;
  std::uint64_t offered = 0;  // generated so far (accepted or pending)
  Bytes pending;              // generated, not yet accepted by write()
  Sha256 sent_hash;
  std::uint64_t sent = 0;
  bool fin_sent = false;
  Sha256 recv_hash;
  std::uint64_t received = 0;
  std::uint64_t unconsumed = 0;  // received, not yet given back with consume()
  bool fin_received = false;
};

struct Side {
  TestMux* s;
  std::map<StreamId, Flow> out;  // what this side sends on each stream
  std::map<StreamId, Flow> in;   // what it receives
  std::map<StreamId, bool> closed;
};

std::uint64_t log_uniform(std::mt19937_64& rng, std::uint64_t max) {
  const double x = std::uniform_real_distribution<double>(0, std::log(static_cast<double>(max)))(rng);
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::exp(x)));
}

void pump_writes(Side& side, std::mt19937_64& rng) {
  for (auto& [id, f] : side.out) {
    if (side.closed[id]) continue;
    if (f.pending.empty() && f.offered < f.total) {
      // Writes of 1 B .. 1 MiB; the part beyond the window stays pending (backpressure).
      const std::uint64_t n = std::min(log_uniform(rng, 1 << 20), f.total - f.offered);
      f.pending.resize(n);
      for (auto& b : f.pending) b = static_cast<std::byte>(rng());
      f.offered += n;
    }
    if (!f.pending.empty()) {
      const std::size_t n = side.s->write(id, f.pending);
      f.sent_hash.update(std::span<const std::byte>(f.pending).first(n));
      f.sent += n;
      f.pending.erase(f.pending.begin(), f.pending.begin() + static_cast<std::ptrdiff_t>(n));
    }
    if (!f.fin_sent && f.sent == f.total) {
      side.s->shutdown_write(id);
      f.fin_sent = true;
    }
  }
}

void handle_events(Side& side, std::mt19937_64& rng) {
  for (auto& e : side.s->take_events()) {
    if (auto* o = std::get_if<StreamOpened>(&e)) {
      ASSERT_EQ(o->payload.size(), 8u);
      side.out[o->id].total = get_u64(o->payload);  // the opener says how much to answer
      side.in[o->id];
    } else if (auto* d = std::get_if<StreamData>(&e)) {
      Flow& f = side.in[d->id];
      f.recv_hash.update(d->bytes);
      f.received += d->bytes.size();
      f.unconsumed += d->bytes.size();
    } else if (auto* fin = std::get_if<StreamFin>(&e)) {
      side.in[fin->id].fin_received = true;
    } else if (auto* c = std::get_if<StreamClosed>(&e)) {
      side.closed[c->id] = true;
    } else if (auto* r = std::get_if<StreamReset>(&e)) {
      ADD_FAILURE() << "unexpected reset of stream " << r->id;
    }
  }
  // A slowish app: gives back a random part of what it holds.
  for (auto& [id, f] : side.in) {
    if (f.unconsumed == 0) continue;
    EXPECT_LE(side.s->unconsumed(id), kInitialWindow);
    const std::uint64_t n = rng() % 3 == 0 ? f.unconsumed : rng() % (f.unconsumed + 1);
    side.s->consume(id, n);
    f.unconsumed -= n;
  }
}

TEST(MuxSessionTest, ManyStreamsBothWaysArriveIntactThroughRandomChunks) {
  ASSERT_GE(sodium_init(), 0);
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Pair p({}, {}, seed);
    std::mt19937_64 rng(seed * 1000);
    Side a{&p.a, {}, {}, {}};
    Side b{&p.b, {}, {}, {}};
    constexpr int kStreamsEach = 12;
    for (int i = 0; i < 2 * kStreamsEach; ++i) {
      Side& opener = i % 2 == 0 ? a : b;
      // Sizes 1 B .. 1 MiB each way; the first streams carry more than 1 MiB both ways.
      const std::uint64_t answer = i < 2 ? (1u << 20) + 17 : log_uniform(rng, 1 << 20);
      Bytes payload;
      put_u64(payload, answer);  // the opener tells the other end how much to send back
      auto id = opener.s->open_stream(payload);
      ASSERT_TRUE(id);
      opener.out[*id].total = i < 2 ? (1u << 20) + 3 : log_uniform(rng, 1 << 20);
      opener.in[*id];
    }
    std::uint64_t all_closed = 0;
    for (int step = 0; step < 20000; ++step) {
      pump_writes(a, rng);
      pump_writes(b, rng);
      deliver(p.a, p.b, p.rng, p.rng() % 2 == 0 ? kNoLimit : 1 + p.rng() % 100000);
      handle_events(b, rng);
      deliver(p.b, p.a, p.rng, p.rng() % 2 == 0 ? kNoLimit : 1 + p.rng() % 100000);
      handle_events(a, rng);
      ASSERT_FALSE(p.a.failed());
      ASSERT_FALSE(p.b.failed());
      all_closed = 0;
      for (const auto& [id, c] : a.closed) all_closed += c ? 1 : 0;
      for (const auto& [id, c] : b.closed) all_closed += c ? 1 : 0;
      if (all_closed == 4 * kStreamsEach) break;
    }
    ASSERT_EQ(all_closed, 4u * kStreamsEach);
    EXPECT_EQ(p.a.live_streams(), 0u);
    EXPECT_EQ(p.b.live_streams(), 0u);
    std::uint64_t total = 0;
    for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
      ASSERT_EQ(from->out.size(), 2u * kStreamsEach);
      for (auto& [id, f] : from->out) {
        Flow& r = to->in[id];
        EXPECT_TRUE(r.fin_received) << "stream " << id;
        EXPECT_EQ(r.received, f.total) << "stream " << id;
        EXPECT_EQ(f.sent, f.total) << "stream " << id;
        EXPECT_EQ(r.recv_hash.final(), f.sent_hash.final()) << "stream " << id;
        total += f.total;
      }
    }
    EXPECT_EQ(p.a.stats().data_bytes_out + p.b.stats().data_bytes_out, total);
    EXPECT_EQ(p.a.stats().streams_opened_local, std::uint64_t{kStreamsEach});
    EXPECT_EQ(p.a.stats().streams_opened_remote, std::uint64_t{kStreamsEach});
    EXPECT_EQ(p.b.stats().streams_closed, 2u * kStreamsEach);
    EXPECT_GT(p.a.stats().window_stalls, 0u);  // 1 MiB writes met the 256 KiB window
  }
}

}  // namespace
}  // namespace weft::transport
