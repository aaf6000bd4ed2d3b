// weft::gossip codec: round trips, golden vectors that pin the wire format, hostile input
// (truncation, random bytes, absurd length claims), field validation and the packet budget.

#include <gtest/gtest.h>

#include <cstdlib>  // first: defines __GLIBC__ for the malloc probe below

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "weft/gossip/claims.h"
#include "weft/gossip/codec.h"

// ---- largest-allocation probe ----------------------------------------------------------------
// Replaces malloc (forwarding to glibc's own) to record the largest single request while armed:
// the decoder must reject absurd length claims without asking for the memory. msgpack-c's zone
// calls ::malloc directly, so replacing operator new alone would miss it. Not available under
// AddressSanitizer, which owns malloc; the tests then check only the errors.
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_MALLOC_PROBE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_MALLOC_PROBE 0
#endif
#endif
#if !defined(WEFT_MALLOC_PROBE) && defined(__GLIBC__)
#define WEFT_MALLOC_PROBE 1
#endif
#ifndef WEFT_MALLOC_PROBE
#define WEFT_MALLOC_PROBE 0
#endif

namespace {
bool g_probe_armed = false;
std::size_t g_largest_malloc = 0;
}  // namespace

#if WEFT_MALLOC_PROBE
extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* malloc(std::size_t size) noexcept {
  if (g_probe_armed && size > g_largest_malloc) g_largest_malloc = size;
  return __libc_malloc(size);
}
#endif

namespace weft::gossip {

void PrintTo(DecodeError e, std::ostream* os) { *os << to_string(e); }

namespace {

using Bytes = std::vector<std::byte>;

// "92 01 a1 62" -> bytes. Spaces are ignored.
Bytes hex(std::string_view text) {
  Bytes out;
  int high = -1;
  for (char c : text) {
    if (c == ' ') continue;
    const int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    EXPECT_GE(v, 0) << "bad hex digit '" << c << "'";
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::byte>(high * 16 + v));
      high = -1;
    }
  }
  EXPECT_LT(high, 0) << "odd number of hex digits";
  return out;
}

std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::byte b : bytes) {
    if (!out.empty()) out += ' ';
    const auto v = std::to_integer<unsigned>(b);
    out += kDigits[v >> 4];
    out += kDigits[v & 15];
  }
  return out;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes encoded(const Message& m) {
  Bytes out;
  encode_message(m, out);
  return out;
}

// Packet of the given messages (through PacketBuilder, with room to spare).
Bytes packet(std::initializer_list<Message> messages) {
  PacketBuilder b(65535);
  for (const auto& m : messages) EXPECT_TRUE(b.add(m));
  return b.finish();
}

// A packet envelope around already-encoded message bytes, with any element count.
Bytes envelope(std::size_t messages, const Bytes& body) {
  Bytes out;
  const std::size_t n = messages + 1;
  if (n <= 15) {
    out.push_back(static_cast<std::byte>(0x90 | n));
  } else {
    out.push_back(std::byte{0xdc});
    out.push_back(static_cast<std::byte>(n >> 8));
    out.push_back(static_cast<std::byte>(n & 0xff));
  }
  out.push_back(std::byte{0x01});
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

std::optional<DecodeError> packet_error(std::span<const std::byte> bytes) {
  auto r = decode_packet(bytes);
  if (r) return std::nullopt;
  return r.error();
}

std::optional<DecodeError> stream_error(std::span<const std::byte> bytes) {
  auto r = decode_stream(bytes);
  if (r) return std::nullopt;
  return r.error();
}

Endpoint v6(std::string_view text) {
  auto e = Endpoint::parse(text);
  EXPECT_TRUE(e) << text;
  return e ? *e : Endpoint{};
}

std::vector<std::byte> blob(std::size_t n, std::uint8_t fill = 0xab) {
  return std::vector<std::byte>(n, static_cast<std::byte>(fill));
}

// ---- random values ----

std::string random_name(std::mt19937_64& rng, std::size_t max = kMaxNameBytes) {
  std::string s(std::uniform_int_distribution<std::size_t>(1, max)(rng), '\0');
  for (auto& c : s) c = static_cast<char>(rng());  // any bytes: names are not validated as UTF-8
  return s;
}

Endpoint random_endpoint(std::mt19937_64& rng) {
  Endpoint e;
  e.family = (rng() & 1) ? Endpoint::Family::kV4 : Endpoint::Family::kV6;
  for (std::size_t i = 0; i < e.ip_size(); ++i) e.ip[i] = static_cast<std::uint8_t>(rng());
  e.port = static_cast<std::uint16_t>(rng());
  return e;
}

std::vector<std::byte> random_meta(std::mt19937_64& rng, std::size_t max = kMaxMetaBytes) {
  std::vector<std::byte> m(std::uniform_int_distribution<std::size_t>(0, max)(rng));
  for (auto& b : m) b = static_cast<std::byte>(rng());
  return m;
}

// Integers spread over every msgpack width.
std::uint64_t random_u64(std::mt19937_64& rng) { return rng() >> (rng() % 64); }
std::uint32_t random_u32(std::mt19937_64& rng) { return static_cast<std::uint32_t>(random_u64(rng)); }

Message random_message(std::mt19937_64& rng, std::size_t max_name = kMaxNameBytes,
                       std::size_t max_meta = kMaxMetaBytes) {
  switch (rng() % 8) {
    case 0: return Ping{random_u32(rng), random_name(rng, max_name)};
    case 1: return IndirectPing{random_u32(rng), random_name(rng, max_name), random_endpoint(rng), (rng() & 1) != 0};
    case 2: return Ack{random_u32(rng)};
    case 3: return Nack{random_u32(rng)};
    case 4: return Alive{random_name(rng, max_name), random_endpoint(rng), random_u64(rng), random_meta(rng, max_meta)};
    case 5: return Suspect{random_name(rng, max_name), random_u64(rng), random_name(rng, max_name)};
    case 6: return SyncDigest{random_u32(rng), random_u64(rng), (rng() & 1) != 0};
    default: return Dead{random_name(rng, max_name), random_u64(rng), random_name(rng, max_name)};
  }
}

PushPull random_push_pull(std::mt19937_64& rng, std::size_t members) {
  PushPull pp{random_u32(rng), (rng() & 1) != 0, (rng() & 1) != 0, {}, std::nullopt};
  for (std::size_t i = 0; i < members; ++i) {
    pp.members.push_back({random_name(rng, 40), random_endpoint(rng), random_u64(rng),
                          static_cast<MemberState>(rng() % kMemberStateCount), random_meta(rng, 64)});
  }
  return pp;
}

// ---- golden vectors: computed by hand from the msgpack spec; they pin the wire format ----

struct GoldenPacket {
  const char* name;
  std::vector<Message> messages;
  const char* hex;
};

const std::vector<GoldenPacket>& golden_packets() {
  static const std::vector<GoldenPacket> kGolden = {
      {"ping",
       {Ping{7, "b"}},
       // [1, [1, 7, "b"]]
       "92 01  93 01 07 a1 62"},
      {"alive_with_meta",
       {Alive{"n1", Endpoint::v4(10, 0, 0, 1, 7946), 300, {std::byte{0xde}, std::byte{0xad}}}},
       // [1, [5, "n1", bin(10.0.0.1, port 7946 = 0x1f0a), uint16 300, bin(de ad)]]
       "92 01  95 05 a2 6e 31 c4 06 0a 00 00 01 1f 0a cd 01 2c c4 02 de ad"},
      {"compound_of_three",
       {Ack{70000}, Suspect{"a", 0, "b"}, Dead{"c", 1ULL << 32, "c"}},
       // [1, [3, uint32 70000], [6, "a", 0, "b"], [7, "c", uint64 2^32, "c"]]
       "94 01  92 03 ce 00 01 11 70  94 06 a1 61 00 a1 62  94 07 a1 63 cf 00 00 00 01 00 00 00 00 a1 63"},
      {"indirect_ping_v6_and_nack",
       {IndirectPing{255, "t", v6("[::1]:80"), true}, Nack{65535}},
       // [1, [2, uint8 255, "t", bin18(::1, port 80), true], [4, uint16 65535]]
       "93 01  95 02 cc ff a1 74 c4 12 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 50 c3"
       "  92 04 cd ff ff"},
      {"refused_nack_and_ack",
       {Nack{.seq = 7, .refused = true}, Ack{9}},
       // [1, [4, 7, true], [3, 9]]: the refused flag is appended to the nack
       "93 01  93 04 07 c3  92 03 09"},
      {"sync_digest_and_reply",
       {SyncDigest{5, 0xfedcba9876543210ULL, false}, SyncDigest{6, 1, true}},
       // [1, [9, 5, uint64 0xfedcba9876543210, false], [9, 6, 1, true]]
       "93 01  94 09 05 cf fe dc ba 98 76 54 32 10 c2  94 09 06 01 c3"},
  };
  return kGolden;
}

const PushPull& golden_push_pull() {
  static const PushPull kPushPull{
      5, true, false,
      {{"n", Endpoint::v4(1, 2, 3, 4, 1), 1, MemberState::kSuspect, {}},
       {"m6", v6("[2001:db8::1]:65535"), 128, MemberState::kLeft, {std::byte{0x00}}}},
      std::nullopt};
  return kPushPull;
}
// [1, [8, 5, true, false, [["n", bin(1.2.3.4:1), 1, 1, bin()], ["m6", bin18(2001:db8::1, 65535),
//  uint8 128, 3, bin(00)]]]]
constexpr const char* kGoldenPushPullHex =
    "92 01  95 08 05 c3 c2 92"
    "  95 a1 6e c4 06 01 02 03 04 00 01 01 01 c4 00"
    "  95 a2 6d 36 c4 12 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 ff ff cc 80 03 c4 01 00";

// =============================================================================================
// Round trips

TEST(CodecRoundTrip, EveryMessageTypeV4AndV6) {
  const Endpoint a4 = Endpoint::v4(192, 168, 1, 20, 7946);
  const Endpoint a6 = v6("[fe80::1:2:3:4]:7946");
  const std::vector<Message> messages = {
      Ping{0, "x"},
      Ping{0xffffffff, std::string(kMaxNameBytes, 'p')},
      IndirectPing{42, "target", a4, false},
      IndirectPing{43, "target", a6, true},
      Ack{0},
      Ack{0xffffffff},
      Nack{128},
      Nack{.seq = 129, .refused = true},
      Alive{"node-1", a4, 0, {}},
      Alive{"node-1", a6, 0xffffffffffffffffULL, blob(kMaxMetaBytes)},
      Suspect{"node-2", 17, "node-3"},
      Dead{"node-2", 1ULL << 40, "node-2"},
  };
  for (const auto& m : messages) {
    const Bytes bytes = packet({m});
    auto d = decode_packet(bytes);
    ASSERT_TRUE(d) << to_hex(bytes) << " -> " << to_string(d.error());
    ASSERT_EQ(d->messages.size(), 1U);
    EXPECT_EQ(d->messages[0], m) << to_hex(bytes);
    EXPECT_EQ(d->unknown_skipped, 0U);
  }
  // All of them in one compound packet.
  PacketBuilder b(65535);
  for (const auto& m : messages) ASSERT_TRUE(b.add(m));
  auto d = decode_packet(b.finish());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->messages, messages);
}

TEST(CodecRoundTrip, RandomMessages) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 2000; ++i) {
    PacketBuilder b(9000);
    std::vector<Message> added;
    for (int k = 0; k < 8; ++k) {
      Message m = random_message(rng);
      if (b.add(m)) added.push_back(std::move(m));
    }
    const Bytes bytes = b.finish();
    auto d = decode_packet(bytes);
    ASSERT_TRUE(d) << "iteration " << i << ": " << to_string(d.error());
    EXPECT_EQ(d->messages, added) << "iteration " << i;
  }
}

TEST(CodecRoundTrip, StreamsV4AndV6) {
  PushPull pp{99, true, true, {}, std::nullopt};
  EXPECT_EQ(decode_stream(encode_stream(pp)).value(), pp);  // no members

  pp.members = {
      {"a", Endpoint::v4(10, 0, 0, 1, 1), 0, MemberState::kAlive, {}},
      {"b", v6("[2001:db8::2]:9"), 7, MemberState::kSuspect, blob(3)},
      {std::string(kMaxNameBytes, 'c'), Endpoint::v4(255, 255, 255, 255, 65535), 1ULL << 63, MemberState::kFailed,
       blob(kMaxMetaBytes)},
      {"d", v6("[::]:0"), 5, MemberState::kLeft, blob(1)},
  };
  auto d = decode_stream(encode_stream(pp));
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(*d, pp);

  std::mt19937_64 rng(2);
  for (int i = 0; i < 200; ++i) {
    const PushPull r = random_push_pull(rng, rng() % 40);
    auto rd = decode_stream(encode_stream(r));
    ASSERT_TRUE(rd) << "iteration " << i;
    EXPECT_EQ(*rd, r) << "iteration " << i;
  }
}

TEST(CodecRoundTrip, MaximumStreamEntries) {
  PushPull pp{1, false, true, {}, std::nullopt};
  pp.members.assign(kMaxStreamEntries, {"n", Endpoint::v4(1, 1, 1, 1, 1), 1, MemberState::kAlive, {}});
  auto d = decode_stream(encode_stream(pp));
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(d->members.size(), kMaxStreamEntries);

  pp.members.push_back(pp.members.back());
  EXPECT_EQ(stream_error(encode_stream(pp)), DecodeError::kTooLarge);
}

// =============================================================================================
// Golden vectors

TEST(CodecGolden, PacketsEncodeAndDecodeByteForByte) {
  for (const auto& g : golden_packets()) {
    SCOPED_TRACE(g.name);
    PacketBuilder b(1400);
    for (const auto& m : g.messages) ASSERT_TRUE(b.add(m));
    EXPECT_EQ(to_hex(b.finish()), to_hex(hex(g.hex)));

    auto d = decode_packet(hex(g.hex));
    ASSERT_TRUE(d) << to_string(d.error());
    EXPECT_EQ(d->messages, g.messages);
    EXPECT_EQ(d->unknown_skipped, 0U);
  }
}

TEST(CodecGolden, EncodeMessageAppendsWithoutEnvelope) {
  Bytes out = hex("ff");  // existing content is kept
  encode_message(Ping{7, "b"}, out);
  encode_message(Ack{1}, out);
  EXPECT_EQ(to_hex(out), "ff 93 01 07 a1 62 92 03 01");
}

TEST(CodecGolden, PushPullEncodesAndDecodesByteForByte) {
  EXPECT_EQ(to_hex(encode_stream(golden_push_pull())), to_hex(hex(kGoldenPushPullHex)));
  auto d = decode_stream(hex(kGoldenPushPullHex));
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(*d, golden_push_pull());
}

TEST(CodecGolden, EnvelopeHeaderGrowsAtSixteenElements) {
  PacketBuilder b(1400);
  for (int i = 0; i < 14; ++i) ASSERT_TRUE(b.add(Ack{0}));
  const Bytes fifteen = b.finish();  // version + 14 messages: fixarray
  EXPECT_EQ(to_hex(std::span(fifteen).first(5)), "9f 01 92 03 00");
  EXPECT_EQ(fifteen.size(), 1 + 1 + 14 * 3U);

  for (int i = 0; i < 15; ++i) ASSERT_TRUE(b.add(Ack{0}));
  const Bytes sixteen = b.finish();  // version + 15 messages: array16
  EXPECT_EQ(to_hex(std::span(sixteen).first(7)), "dc 00 10 01 92 03 00");
  EXPECT_EQ(sixteen.size(), 3 + 1 + 15 * 3U);
  ASSERT_TRUE(decode_packet(sixteen));
  EXPECT_EQ(decode_packet(sixteen)->messages.size(), 15U);
}

// =============================================================================================
// Hostile input

// Valid inputs whose every strict prefix must be rejected.
std::vector<Bytes> valid_packets() {
  std::vector<Bytes> out;
  for (const auto& g : golden_packets()) out.push_back(hex(g.hex));
  std::mt19937_64 rng(3);
  PacketBuilder b(1400);
  while (b.add(random_message(rng, 20, 40))) {
  }
  out.push_back(b.finish());
  return out;
}

std::vector<Bytes> valid_streams() {
  std::mt19937_64 rng(4);
  return {hex(kGoldenPushPullHex), encode_stream(PushPull{}), encode_stream(random_push_pull(rng, 30))};
}

TEST(CodecHostile, EveryTruncationIsRejected) {
  for (const auto& p : valid_packets()) {
    ASSERT_TRUE(decode_packet(p));
    for (std::size_t n = 0; n < p.size(); ++n) {
      std::optional<DecodeError> e;
      ASSERT_NO_THROW(e = packet_error(std::span(p).first(n)));
      ASSERT_TRUE(e.has_value()) << "prefix " << n << " of " << to_hex(p);
    }
  }
  for (const auto& s : valid_streams()) {
    ASSERT_TRUE(decode_stream(s));
    for (std::size_t n = 0; n < s.size(); ++n) {
      std::optional<DecodeError> e;
      ASSERT_NO_THROW(e = stream_error(std::span(s).first(n)));
      ASSERT_TRUE(e.has_value()) << "prefix " << n << " of " << to_hex(s);
    }
  }
}

TEST(CodecHostile, TruncatedPacketsAreMalformed) {
  // Packet containers never claim more than the container limit, so a cut packet is always
  // reported as truncated (what a too-small receive buffer produces).
  for (const auto& p : valid_packets()) {
    for (std::size_t n = 0; n < p.size(); ++n) {
      EXPECT_EQ(packet_error(std::span(p).first(n)), DecodeError::kMalformed) << "prefix " << n << " of " << to_hex(p);
    }
  }
}

// Decodes `bytes` both ways; whatever is accepted must survive re-encoding unchanged.
void decode_and_check(std::span<const std::byte> bytes) {
  Result<DecodedPacket, DecodeError> p = Unexpected<DecodeError>(DecodeError::kMalformed);
  ASSERT_NO_THROW(p = decode_packet(bytes)) << to_hex(bytes);
  if (p && !p->messages.empty()) {
    PacketBuilder b(65535);
    for (const auto& m : p->messages) ASSERT_TRUE(b.add(m));
    auto again = decode_packet(b.finish());
    ASSERT_TRUE(again) << to_hex(bytes);
    EXPECT_EQ(again->messages, p->messages) << to_hex(bytes);
  }
  Result<PushPull, DecodeError> s = Unexpected<DecodeError>(DecodeError::kMalformed);
  ASSERT_NO_THROW(s = decode_stream(bytes)) << to_hex(bytes);
  if (s) {
    auto again = decode_stream(encode_stream(*s));
    ASSERT_TRUE(again) << to_hex(bytes);
    EXPECT_EQ(*again, *s) << to_hex(bytes);
  }
}

TEST(CodecHostile, RandomBytesNeverThrow) {
  std::mt19937_64 rng(5);
  Bytes buf;
  for (int i = 0; i < 50000; ++i) {
    buf.resize(rng() % 48);
    for (auto& b : buf) b = static_cast<std::byte>(rng());
    if (!buf.empty() && (i & 1)) buf[0] = static_cast<std::byte>(0x92 + rng() % 4);  // look like an envelope
    decode_and_check(buf);
  }
}

TEST(CodecHostile, MutatedValidInputsNeverThrow) {
  std::mt19937_64 rng(6);
  std::vector<Bytes> seeds = valid_packets();
  for (auto& s : valid_streams()) seeds.push_back(std::move(s));
  for (int i = 0; i < 30000; ++i) {
    Bytes b = seeds[rng() % seeds.size()];
    for (int k = 1 + static_cast<int>(rng() % 4); k > 0 && !b.empty(); --k) {
      const std::size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0: b[at] = static_cast<std::byte>(rng()); break;
        case 1: b[at] ^= static_cast<std::byte>(1U << (rng() % 8)); break;
        case 2: b.erase(b.begin() + static_cast<std::ptrdiff_t>(at)); break;
        default: b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::byte>(rng())); break;
      }
    }
    decode_and_check(b);
  }
}

TEST(CodecHostile, AbsurdLengthClaimsAreRejectedFastWithoutAllocating) {
  struct Case {
    const char* what;
    const char* hex;
    bool stream;
    DecodeError want;
  };
  const Case cases[] = {
      {"packet envelope array32 of 2^32-1", "dd ff ff ff ff", false, DecodeError::kTooManyMessages},
      {"packet envelope array16 of 65535", "dc ff ff", false, DecodeError::kTooManyMessages},
      {"array32 of 2^32-1 as a message", "92 01 dd ff ff ff ff", false, DecodeError::kTooLarge},
      {"map32 of 2^32-1 as a message", "92 01 df ff ff ff ff", false, DecodeError::kTooLarge},
      {"map32 of 2^32-1 as the envelope", "df ff ff ff ff", false, DecodeError::kTooLarge},
      // A str/bin/ext claim beyond the input is a truncation: msgpack-c waits for the bytes.
      {"ext32 of 2^32-1 as an extra field", "92 01 94 03 01 c9 ff ff ff ff 01", false, DecodeError::kMalformed},
      {"str32 of 4 GiB alone", "db ff ff ff ff", false, DecodeError::kMalformed},
      {"bin32 of 4 GiB alone", "c6 ff ff ff ff", false, DecodeError::kMalformed},
      {"str32 of 4 GiB as a ping target", "92 01 93 01 07 db ff ff ff ff", false, DecodeError::kMalformed},
      {"bin32 of 4 GiB as alive meta", "92 01 95 05 a1 61 c4 06 01 02 03 04 00 01 00 c6 ff ff ff ff", false,
       DecodeError::kMalformed},
      {"stream envelope array32 of 2^32-1", "dd ff ff ff ff", true, DecodeError::kTooLarge},
      {"stream entries array32 of 2^32-1", "92 01 95 08 00 c2 c2 dd ff ff ff ff", true, DecodeError::kTooLarge},
      {"stream entries array32 of 100000", "92 01 95 08 00 c2 c2 dd 00 01 86 a0", true, DecodeError::kTooLarge},
      {"stream str32 of 4 GiB as a name", "92 01 95 08 00 c2 c2 91 95 db ff ff ff ff", true, DecodeError::kMalformed},
      {"stream bin32 of 4 GiB alone", "c6 ff ff ff ff", true, DecodeError::kMalformed},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const Bytes input = hex(c.hex);
    g_largest_malloc = 0;
    g_probe_armed = true;
    const auto start = std::chrono::steady_clock::now();
    std::optional<DecodeError> e;
    for (int i = 0; i < 1000; ++i) e = c.stream ? stream_error(input) : packet_error(input);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    g_probe_armed = false;
    EXPECT_EQ(e, c.want);
    // Generous bound (sanitizer builds included): a rejection costs microseconds, never time
    // proportional to the claimed size.
    EXPECT_LT(elapsed, std::chrono::seconds(2));
    if (WEFT_MALLOC_PROBE) {
      EXPECT_LT(g_largest_malloc, 64U * 1024) << "largest single malloc";
    }
  }
}

TEST(CodecHostile, MallocProbeSeesTheDecoder) {
  if (!WEFT_MALLOC_PROBE) GTEST_SKIP() << "no malloc probe under AddressSanitizer";
  const Bytes p = hex(golden_packets()[0].hex);
  g_largest_malloc = 0;
  g_probe_armed = true;
  const bool ok = decode_packet(p).has_value();
  g_probe_armed = false;
  EXPECT_TRUE(ok);
  EXPECT_GT(g_largest_malloc, 1000U);  // at least msgpack-c's first zone chunk
}

TEST(CodecHostile, OversizedInputsAreRejectedBeforeParsing) {
  Bytes big(65536, std::byte{0});
  EXPECT_EQ(packet_error(big), DecodeError::kTooLarge);
  big.resize(kMaxStreamBytes + 1);
  EXPECT_EQ(stream_error(big), DecodeError::kTooLarge);
}

TEST(CodecHostile, NestingDeeperThanMaxDepthIsRejected) {
  // Envelope, message, then two more levels in an extra field: kMaxDepth = 4 levels in all.
  auto d = decode_packet(hex("92 01  94 01 07 a1 62 91 91 01"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->messages, (std::vector<Message>{Ping{7, "b"}}));
  EXPECT_EQ(packet_error(hex("92 01  94 01 07 a1 62 91 91 91 01")), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(hex("92 01  94 01 07 a1 62 81 01 81 01 81 01 02")), DecodeError::kTooLarge);  // maps
  // msgpack-c (API v3) counts empty containers too.
  EXPECT_EQ(packet_error(hex("92 01  94 01 07 a1 62 91 91 90")), DecodeError::kTooLarge);
  // A stream's entries are already at depth 4: their extra fields cannot be containers.
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 c3 c2 91 96 a1 6e c4 06 01 02 03 04 00 01 01 01 c4 00 90")),
            DecodeError::kTooLarge);
}

TEST(CodecHostile, ReservedAndTrailingBytesAreMalformed) {
  EXPECT_EQ(packet_error({}), DecodeError::kMalformed);
  EXPECT_EQ(stream_error({}), DecodeError::kMalformed);
  EXPECT_EQ(packet_error(hex("c1")), DecodeError::kMalformed);                     // never-used byte
  EXPECT_EQ(packet_error(hex("92 01 93 01 07 c1")), DecodeError::kMalformed);
  for (const char* tail : {"00", "c0", "93 01 07 a1 62", "c1"}) {
    EXPECT_EQ(packet_error(concat({hex("92 01 93 01 07 a1 62"), hex(tail)})), DecodeError::kMalformed) << tail;
    EXPECT_EQ(stream_error(concat({hex(kGoldenPushPullHex), hex(tail)})), DecodeError::kMalformed) << tail;
  }
}

// =============================================================================================
// Envelope and message validation

TEST(CodecValidation, Envelope) {
  EXPECT_EQ(packet_error(hex("01")), DecodeError::kBadEnvelope);            // not an array
  EXPECT_EQ(packet_error(hex("a1 62")), DecodeError::kBadEnvelope);
  EXPECT_EQ(packet_error(hex("80")), DecodeError::kBadEnvelope);            // a map
  EXPECT_EQ(packet_error(hex("90")), DecodeError::kBadEnvelope);            // no version
  EXPECT_EQ(packet_error(hex("91 01")), DecodeError::kBadEnvelope);         // no message
  EXPECT_EQ(packet_error(hex("92 a1 31 93 01 07 a1 62")), DecodeError::kBadEnvelope);  // version as a string
  EXPECT_EQ(packet_error(hex("92 ff 93 01 07 a1 62")), DecodeError::kBadEnvelope);     // negative version
  EXPECT_EQ(packet_error(hex("92 02 93 01 07 a1 62")), DecodeError::kBadVersion);
  EXPECT_EQ(packet_error(hex("92 00 93 01 07 a1 62")), DecodeError::kBadVersion);
  EXPECT_EQ(packet_error(hex("92 cf 00 00 00 01 00 00 00 01 93 01 07 a1 62")), DecodeError::kBadVersion);

  EXPECT_EQ(stream_error(hex("01")), DecodeError::kBadEnvelope);
  EXPECT_EQ(stream_error(hex("91 01")), DecodeError::kBadEnvelope);
  Bytes v2 = hex(kGoldenPushPullHex);
  v2[1] = std::byte{0x02};
  EXPECT_EQ(stream_error(v2), DecodeError::kBadVersion);
}

TEST(CodecValidation, TooManyMessages) {
  Bytes body;
  for (std::size_t i = 0; i < kMaxMessagesPerPacket; ++i) encode_message(Ack{7}, body);
  auto max = decode_packet(envelope(kMaxMessagesPerPacket, body));
  ASSERT_TRUE(max) << to_string(max.error());
  EXPECT_EQ(max->messages.size(), kMaxMessagesPerPacket);

  encode_message(Ack{7}, body);
  EXPECT_EQ(packet_error(envelope(kMaxMessagesPerPacket + 1, body)), DecodeError::kTooManyMessages);
}

TEST(CodecValidation, UnknownMessageTypesAreSkippedAndCounted) {
  const Bytes p = hex(
      "97 01"
      "  93 63 a1 78 92 01 02"                 // [99, "x", [1, 2]]
      "  91 00"                                // [0]
      "  92 08 05"                             // [8, 5]: push-pull has no place in a packet
      "  91 cf 00 00 01 00 00 00 00 00"        // [2^40]
      "  93 01 07 a1 62"                       // ping
      "  92 cc ff 84 01 02 03 04 05 06 07 08"  // [255, {1:2, 3:4, 5:6, 7:8}]
      );
  auto d = decode_packet(p);
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(d->messages, (std::vector<Message>{Ping{7, "b"}}));
  EXPECT_EQ(d->unknown_skipped, 5U);

  auto only_unknown = decode_packet(hex("92 01 91 0a"));
  ASSERT_TRUE(only_unknown);
  EXPECT_TRUE(only_unknown->messages.empty());
  EXPECT_EQ(only_unknown->unknown_skipped, 1U);

  // A malformed element rejects the whole packet, unknown type or not.
  EXPECT_EQ(packet_error(hex("93 01 93 01 07 a1 62 01")), DecodeError::kBadMessage);        // not an array
  EXPECT_EQ(packet_error(hex("93 01 93 01 07 a1 62 90")), DecodeError::kBadMessage);        // empty
  EXPECT_EQ(packet_error(hex("93 01 93 01 07 a1 62 92 a1 78 01")), DecodeError::kBadMessage);  // type a str
  EXPECT_EQ(packet_error(hex("93 01 93 01 07 a1 62 92 ff 01")), DecodeError::kBadMessage);  // type negative

  // In a stream, a type other than push-pull is an error.
  EXPECT_EQ(stream_error(hex("92 01 95 07 05 c3 c2 90")), DecodeError::kUnknownType);
  EXPECT_EQ(stream_error(hex("92 01 91 09")), DecodeError::kUnknownType);
}

TEST(CodecValidation, ExtraTrailingFieldsAreAccepted) {
  // [1, 7, "b", nil, "hello", {1: 2}, [1, [2]]]
  auto ping = decode_packet(hex("92 01  97 01 07 a1 62 c0 a5 68 65 6c 6c 6f 81 01 02 92 01 91 02"));
  ASSERT_TRUE(ping) << to_string(ping.error());
  EXPECT_EQ(ping->messages, (std::vector<Message>{Ping{7, "b"}}));

  // After the last field this version knows (the signed claim's sig and cred).
  const Alive alive{"n1", Endpoint::v4(10, 0, 0, 1, 7946), 300, {std::byte{0xde}, std::byte{0xad}},
                    {std::byte{0xaa}}, {std::byte{0xbb}}};
  Bytes msg = encoded(alive);
  ASSERT_EQ(msg[0], std::byte{0x97});
  msg[0] = std::byte{0x99};  // 7 fields -> 9
  msg.push_back(std::byte{0xc3});
  msg.push_back(std::byte{0xcb});  // float64 0.0
  msg.insert(msg.end(), 8, std::byte{0});
  auto d = decode_packet(envelope(1, msg));
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(d->messages, (std::vector<Message>{alive}));

  // Stream: a third envelope element, a seventh push-pull field (after the optional digest) and
  // an eleventh entry field (after the signed claim's five).
  const Bytes s = hex(
      "93 01  97 08 05 c3 c2 91"
      "  9b a1 6e c4 06 01 02 03 04 00 01 01 01 c4 00  c4 01 aa c4 01 bb a1 6d c4 01 cc c2  a3 6e 65 77"
      "  07 c0"
      "  c2");
  auto pp = decode_stream(s);
  ASSERT_TRUE(pp) << to_string(pp.error());
  EXPECT_EQ(pp->seq, 5U);
  ASSERT_EQ(pp->members.size(), 1U);
  PushPullEntry want = golden_push_pull().members[0];
  want.sig = {std::byte{0xaa}};
  want.cred = {std::byte{0xbb}};
  want.accuser = "m";
  want.accuse_sig = {std::byte{0xcc}};
  EXPECT_EQ(pp->members[0], want);
  EXPECT_EQ(pp->digest, std::optional<std::uint64_t>(7));
}

// Signed claims (claims.h) append their fields; unsigned messages keep their bytes (the goldens
// above). Signed ones round-trip, and an oversized or mistyped signature rejects the packet.
TEST(CodecSignedClaims, RoundTripAndLimits) {
  const Bytes sig(64, std::byte{0x5a});
  const Bytes cred(300, std::byte{0xc7});
  const std::vector<Message> messages = {
      Alive{"n1", Endpoint::v4(10, 0, 0, 1, 7946), 3, {std::byte{1}}, sig, cred},
      Suspect{"n1", 3, "n2", sig, false},
      Suspect{"n1", 3, "n2", sig, true},
      Dead{"n1", 3, "n1", sig},
  };
  for (const Message& m : messages) {
    auto d = decode_packet(envelope(1, encoded(m)));
    ASSERT_TRUE(d) << to_string(d.error());
    EXPECT_EQ(d->messages, std::vector<Message>{m});
  }
  PushPull pp{9, false, true, {}, std::nullopt};
  pp.members.push_back(PushPullEntry{"a", Endpoint::v4(1, 2, 3, 4, 5), 7, MemberState::kAlive, {}, sig, cred});
  pp.members.push_back(
      PushPullEntry{"b", Endpoint::v4(1, 2, 3, 4, 6), 8, MemberState::kFailed, {}, sig, cred, "a", sig, true});
  auto back = decode_stream(encode_stream(pp));
  ASSERT_TRUE(back) << to_string(back.error());
  EXPECT_EQ(*back, pp);

  const Bytes big_sig(kMaxSignatureBytes + 1, std::byte{1});
  auto too_big = decode_packet(envelope(1, encoded(Dead{"n1", 3, "n2", big_sig})));
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error(), DecodeError::kTooLarge);
  const Bytes big_cred(kMaxCredentialBytes + 1, std::byte{1});
  auto cred_too_big = decode_packet(envelope(1, encoded(Alive{"n1", Endpoint::v4(1, 1, 1, 1, 1), 1, {}, sig, big_cred})));
  ASSERT_FALSE(cred_too_big);
  EXPECT_EQ(cred_too_big.error(), DecodeError::kTooLarge);
  // An empty signature means unsigned: the other claim fields are dropped, as encoding would.
  auto unsigned_alive = decode_packet(
      envelope(1, hex("97 05 a1 6e c4 06 01 02 03 04 00 01 01 c4 00 c4 00 c4 02 ab cd")));
  ASSERT_TRUE(unsigned_alive) << to_string(unsigned_alive.error());
  EXPECT_EQ(unsigned_alive->messages, (std::vector<Message>{Alive{"n", Endpoint::v4(1, 2, 3, 4, 1), 1, {}}}));
  // [7, "n", 1, "m", "not a bin"]: a signature of the wrong type
  auto mistyped = decode_packet(hex("92 01  95 07 a1 6e 01 a1 6d a3 61 62 63"));
  ASSERT_FALSE(mistyped);
  EXPECT_EQ(mistyped.error(), DecodeError::kBadMessage);
}

// The signed bytes are fixed: a change would split a cluster of mixed builds.
TEST(CodecSignedClaims, ClaimBytesAreGolden) {
  EXPECT_EQ(to_hex(accusation_claim(ClaimKind::kDead, "n", 2, "m")),
            to_hex(hex("96 b1 77 65 66 74 20 67 6f 73 73 69 70 20 63 6c 61 69 6d 01 03 a1 6e 02 a1 6d")));
  EXPECT_EQ(to_hex(alive_claim("n", Endpoint::v4(1, 2, 3, 4, 1), 2, {std::byte{9}})),
            to_hex(hex("97 b1 77 65 66 74 20 67 6f 73 73 69 70 20 63 6c 61 69 6d 01 01 a1 6e 02"
                       " c4 06 01 02 03 04 00 01 c4 01 09")));
  // Kinds are distinct in the signed bytes: a suspect can never pass as a dead claim.
  EXPECT_NE(accusation_claim(ClaimKind::kSuspect, "n", 2, "m"), accusation_claim(ClaimKind::kDead, "n", 2, "m"));
}

// The push-pull digest came after version 1 shipped: an optional sixth field, a u64 when present;
// without it the encoding is byte for byte the old one.
TEST(CodecValidation, PushPullDigestIsAnOptionalTrailingField) {
  PushPull pp{3, false, false, {}, std::nullopt};
  const Bytes plain = encode_stream(pp);
  EXPECT_EQ(plain, hex("92 01 95 08 03 c2 c2 90"));
  pp.digest = 0xfedcba9876543210ULL;
  const Bytes with = encode_stream(pp);
  EXPECT_EQ(with, hex("92 01 96 08 03 c2 c2 90 cf fe dc ba 98 76 54 32 10"));
  auto back = decode_stream(with);
  ASSERT_TRUE(back) << to_string(back.error());
  EXPECT_EQ(*back, pp);
  EXPECT_FALSE(decode_stream(plain)->digest.has_value());
  // Present, it must be an unsigned integer.
  auto bad = decode_stream(hex("92 01 96 08 03 c2 c2 90 a1 78"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), DecodeError::kBadMessage);
}

// Nack's `refused` flag came after version 1 shipped: an optional trailing field.
TEST(CodecValidation, NackRefusedIsAnOptionalTrailingField) {
  // A plain nack keeps the original form, byte for byte: older peers see what they always saw.
  EXPECT_EQ(to_hex(encoded(Nack{7})), "92 04 07");
  EXPECT_EQ(to_hex(encoded(Nack{.seq = 7, .refused = false})), "92 04 07");
  EXPECT_EQ(to_hex(encoded(Nack{.seq = 7, .refused = true})), "93 04 07 c3");

  // The old form still decodes, as not refused.
  auto plain = decode_packet(hex("92 01  92 04 07"));
  ASSERT_TRUE(plain) << to_string(plain.error());
  EXPECT_EQ(plain->messages, (std::vector<Message>{Nack{.seq = 7, .refused = false}}));
  // Explicitly false decodes the same; true is refused.
  auto no = decode_packet(hex("92 01  93 04 07 c2"));
  ASSERT_TRUE(no) << to_string(no.error());
  EXPECT_EQ(no->messages, (std::vector<Message>{Nack{7}}));
  auto yes = decode_packet(hex("92 01  93 04 07 c3"));
  ASSERT_TRUE(yes) << to_string(yes.error());
  EXPECT_EQ(yes->messages, (std::vector<Message>{Nack{.seq = 7, .refused = true}}));

  // What an older decoder does with the new form: extra trailing fields are ignored. A field
  // appended after `refused` is ignored by this decoder in turn.
  auto later = decode_packet(hex("92 01  94 04 07 c3 a3 6e 65 77"));
  ASSERT_TRUE(later) << to_string(later.error());
  EXPECT_EQ(later->messages, (std::vector<Message>{Nack{.seq = 7, .refused = true}}));

  // Present, the field must be a bool.
  EXPECT_EQ(packet_error(hex("92 01  93 04 07 01")), DecodeError::kBadMessage);
  EXPECT_EQ(packet_error(hex("92 01  93 04 07 c0")), DecodeError::kBadMessage);
  EXPECT_EQ(packet_error(hex("92 01  93 04 07 a1 74")), DecodeError::kBadMessage);
  // The seq is still required.
  EXPECT_EQ(packet_error(hex("92 01  91 04")), DecodeError::kBadMessage);
}

TEST(CodecValidation, MissingFields) {
  EXPECT_EQ(packet_error(hex("92 01 92 01 07")), DecodeError::kBadMessage);                  // ping: no target
  EXPECT_EQ(packet_error(hex("92 01 91 03")), DecodeError::kBadMessage);                     // ack: no seq
  EXPECT_EQ(packet_error(hex("92 01 94 02 01 a1 74 c4 06 01 02 03 04 00 01")), DecodeError::kBadMessage);  // no want_nack
  EXPECT_EQ(packet_error(hex("92 01 94 05 a1 61 c4 06 01 02 03 04 00 01 00")), DecodeError::kBadMessage);  // no meta
  EXPECT_EQ(packet_error(hex("92 01 93 06 a1 61 00")), DecodeError::kBadMessage);            // suspect: no from
  EXPECT_EQ(packet_error(hex("92 01 93 07 a1 61 00")), DecodeError::kBadMessage);            // dead: no from
  EXPECT_EQ(stream_error(hex("92 01 94 08 05 c3 c2")), DecodeError::kBadMessage);            // no entries
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 c3 c2 91 94 a1 6e c4 06 01 02 03 04 00 01 01 01")),
            DecodeError::kBadMessage);  // entry without meta
  EXPECT_EQ(stream_error(hex("92 01 90")), DecodeError::kBadMessage);
}

TEST(CodecValidation, MistypedFields) {
  EXPECT_EQ(packet_error(hex("92 01 93 01 a1 37 a1 62")), DecodeError::kBadMessage);  // seq as a string
  EXPECT_EQ(packet_error(hex("92 01 93 01 ff a1 62")), DecodeError::kBadMessage);     // seq negative
  EXPECT_EQ(packet_error(hex("92 01 93 01 c3 a1 62")), DecodeError::kBadMessage);     // seq as a bool
  EXPECT_EQ(packet_error(hex("92 01 93 01 cb 00 00 00 00 00 00 00 00 a1 62")), DecodeError::kBadMessage);  // float
  EXPECT_EQ(packet_error(hex("92 01 93 01 07 c4 01 62")), DecodeError::kBadMessage);  // target as bin
  EXPECT_EQ(packet_error(hex("92 01 93 01 07 c0")), DecodeError::kBadMessage);        // target nil
  EXPECT_EQ(packet_error(hex("92 01 95 02 01 a1 74 c4 06 01 02 03 04 00 01 01")), DecodeError::kBadMessage);  // bool as 1
  EXPECT_EQ(packet_error(hex("92 01 94 06 a1 61 a1 30 a1 62")), DecodeError::kBadMessage);  // incarnation as str
  EXPECT_EQ(packet_error(hex("92 01 95 05 a1 61 c4 06 01 02 03 04 00 01 00 a0")), DecodeError::kBadMessage);  // meta str
  EXPECT_EQ(stream_error(hex("92 01 08")), DecodeError::kBadMessage);                         // push-pull not an array
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 c3 c2 80")), DecodeError::kBadMessage);          // entries a map
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 c3 c2 91 01")), DecodeError::kBadMessage);       // entry not an array
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 01 c2 90")), DecodeError::kBadMessage);          // join as 1

  // Non-minimal integer encodings are still integers.
  auto d = decode_packet(hex("93 01  93 01 cf 00 00 00 00 00 00 00 07 a1 62  93 01 d0 07 a1 62"));
  ASSERT_TRUE(d) << to_string(d.error());
  EXPECT_EQ(d->messages, (std::vector<Message>{Ping{7, "b"}, Ping{7, "b"}}));
}

TEST(CodecValidation, IntegerRanges) {
  EXPECT_EQ(packet_error(hex("92 01 93 01 cf 00 00 00 01 00 00 00 00 a1 62")), DecodeError::kBadMessage);  // seq 2^32
  EXPECT_TRUE(decode_packet(hex("92 01 93 01 ce ff ff ff ff a1 62")));                                     // seq 2^32-1

  PushPull pp = golden_push_pull();
  for (unsigned s = 0; s < kMemberStateCount; ++s) {
    pp.members[0].state = static_cast<MemberState>(s);
    EXPECT_TRUE(decode_stream(encode_stream(pp))) << s;
  }
  for (unsigned s : {4U, 5U, 127U, 255U}) {
    pp.members[0].state = static_cast<MemberState>(s);
    EXPECT_EQ(stream_error(encode_stream(pp)), DecodeError::kBadMessage) << s;
  }
  EXPECT_EQ(stream_error(hex("92 01 95 08 05 c3 c2 91 95 a1 6e c4 06 01 02 03 04 00 01 01 ff c4 00")),
            DecodeError::kBadMessage);  // state -1
  EXPECT_EQ(stream_error(hex("92 01 95 08 cf 00 00 00 01 00 00 00 00 c3 c2 90")), DecodeError::kBadMessage);  // seq
}

TEST(CodecValidation, Addresses) {
  const Endpoint a = Endpoint::v4(1, 2, 3, 4, 0x0102);
  for (std::size_t size : {0U, 4U, 5U, 7U, 16U, 17U, 19U, 20U}) {
    // [5, "a", bin(size), 0, bin()]
    Bytes m = concat({hex("95 05 a1 61 c4"), Bytes{static_cast<std::byte>(size)}, blob(size, 1), hex("00 c4 00")});
    EXPECT_EQ(packet_error(envelope(1, m)), DecodeError::kBadAddress) << size;

    Bytes ip = concat({hex("95 02 01 a1 74 c4"), Bytes{static_cast<std::byte>(size)}, blob(size, 1), hex("c2")});
    EXPECT_EQ(packet_error(envelope(1, ip)), DecodeError::kBadAddress) << size;

    Bytes s = concat({hex("92 01 95 08 05 c3 c2 91 95 a1 6e c4"), Bytes{static_cast<std::byte>(size)}, blob(size, 1),
                      hex("01 01 c4 00")});
    EXPECT_EQ(stream_error(s), DecodeError::kBadAddress) << size;
  }
  // An address that is not a bin is a mistyped field.
  EXPECT_EQ(packet_error(hex("92 01 95 05 a1 61 a6 01 02 03 04 01 02 00 c4 00")), DecodeError::kBadMessage);
  // Port is big endian.
  auto d = decode_packet(hex("92 01 95 05 a1 61 c4 06 01 02 03 04 01 02 00 c4 00"));
  ASSERT_TRUE(d);
  EXPECT_EQ(std::get<Alive>(d->messages[0]).addr, a);
}

TEST(CodecValidation, NameAndMetaLimits) {
  const std::string max_name(kMaxNameBytes, 'n');
  const std::string long_name(kMaxNameBytes + 1, 'n');
  const Endpoint a = Endpoint::v4(1, 2, 3, 4, 5);

  EXPECT_TRUE(decode_packet(packet({Ping{1, max_name}})));
  EXPECT_EQ(packet_error(packet({Ping{1, long_name}})), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(packet({Ping{1, ""}})), DecodeError::kBadMessage);
  EXPECT_EQ(packet_error(packet({IndirectPing{1, long_name, a, false}})), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(packet({Alive{long_name, a, 1, {}}})), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(packet({Alive{"", a, 1, {}}})), DecodeError::kBadMessage);
  EXPECT_EQ(packet_error(packet({Suspect{"x", 1, long_name}})), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(packet({Suspect{"x", 1, ""}})), DecodeError::kBadMessage);
  EXPECT_EQ(packet_error(packet({Dead{long_name, 1, "x"}})), DecodeError::kTooLarge);
  EXPECT_EQ(packet_error(packet({Dead{"", 1, "x"}})), DecodeError::kBadMessage);

  EXPECT_TRUE(decode_packet(packet({Alive{"x", a, 1, blob(kMaxMetaBytes)}})));
  EXPECT_EQ(packet_error(packet({Alive{"x", a, 1, blob(kMaxMetaBytes + 1)}})), DecodeError::kTooLarge);

  PushPull pp = golden_push_pull();
  pp.members[1].name = long_name;
  EXPECT_EQ(stream_error(encode_stream(pp)), DecodeError::kTooLarge);
  pp.members[1].name = "";
  EXPECT_EQ(stream_error(encode_stream(pp)), DecodeError::kBadMessage);
  pp.members[1].name = max_name;
  pp.members[1].meta = blob(kMaxMetaBytes + 1);
  EXPECT_EQ(stream_error(encode_stream(pp)), DecodeError::kTooLarge);
  pp.members[1].meta = blob(kMaxMetaBytes);
  EXPECT_TRUE(decode_stream(encode_stream(pp)));
}

// =============================================================================================
// PacketBuilder

TEST(PacketBuilderTest, ExactFit) {
  const Message m = Alive{"node", Endpoint::v4(1, 2, 3, 4, 5), 9, blob(100)};
  const std::size_t size = encoded(m).size();
  {
    PacketBuilder b(1 + 1 + size);  // fixarray header + version + message
    EXPECT_EQ(b.remaining(), size);
    EXPECT_TRUE(b.add(m));
    EXPECT_EQ(b.remaining(), 0U);
    EXPECT_FALSE(b.add(Ack{0}));
    EXPECT_EQ(b.finish().size(), 2 + size);
  }
  {
    PacketBuilder b(size);  // one byte short
    EXPECT_EQ(b.remaining(), size - 2);
    EXPECT_FALSE(b.add(m));
    EXPECT_FALSE(b.add_encoded(encoded(m)));
    EXPECT_TRUE(b.empty());
    EXPECT_TRUE(b.finish().empty());
  }
  for (std::size_t tiny : {0U, 1U, 2U, 3U, 4U, 5U, 6U}) {
    PacketBuilder b(tiny);
    EXPECT_EQ(b.remaining(), tiny > 2 ? tiny - 2 : 0U);
    EXPECT_EQ(b.add(Ack{0}), tiny >= 5) << tiny;  // an ack is 3 bytes
  }
}

TEST(PacketBuilderTest, HeaderGrowthAtSixteenElementsIsCounted) {
  // 14 acks of 3 bytes: 1 + 1 + 42 = 44 bytes. The 15th makes 16 elements and an array16
  // header: 3 + 1 + 45 = 49 bytes. A budget of 48 must refuse it, though 1 + 1 + 45 would fit.
  for (std::size_t budget : {48U, 49U}) {
    PacketBuilder b(budget);
    for (int i = 0; i < 14; ++i) ASSERT_TRUE(b.add(Ack{0}));
    EXPECT_EQ(b.remaining(), budget - 46);
    EXPECT_EQ(b.add(Ack{0}), budget == 49);
    const Bytes p = b.finish();
    EXPECT_EQ(p.size(), budget == 49 ? 49U : 44U);
    EXPECT_LE(p.size(), budget);
    EXPECT_TRUE(decode_packet(p));
  }
}

TEST(PacketBuilderTest, AtMostMaxMessages) {
  PacketBuilder b(65535);
  for (std::size_t i = 0; i < kMaxMessagesPerPacket; ++i) ASSERT_TRUE(b.add(Ack{0})) << i;
  EXPECT_EQ(b.count(), kMaxMessagesPerPacket);
  EXPECT_EQ(b.remaining(), 0U);
  EXPECT_FALSE(b.add(Ack{0}));
  EXPECT_FALSE(b.add_encoded(encoded(Ack{0})));
  auto d = decode_packet(b.finish());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->messages.size(), kMaxMessagesPerPacket);
}

TEST(PacketBuilderTest, FinishResets) {
  PacketBuilder b(1400);
  EXPECT_TRUE(b.finish().empty());  // nothing to send
  ASSERT_TRUE(b.add(Ping{7, "b"}));
  EXPECT_EQ(to_hex(b.finish()), "92 01 93 01 07 a1 62");
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.remaining(), 1400U - 2);
  ASSERT_TRUE(b.add(Ack{1}));
  EXPECT_EQ(to_hex(b.finish()), "92 01 92 03 01");
}

TEST(PacketBuilderTest, RandomMixesRespectTheBudgetExactly) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 3000; ++round) {
    const std::size_t budget = std::uniform_int_distribution<std::size_t>(0, 3000)(rng);
    PacketBuilder by_message(budget);
    PacketBuilder by_bytes(budget);
    std::vector<Message> added;
    std::size_t body = 0;
    for (int tries = 0; tries < 40; ++tries) {
      // Mostly small messages so packets cross the 15/16 boundary, sometimes big ones.
      Message m = (rng() % 8 == 0) ? random_message(rng) : random_message(rng, 8, 8);
      const std::size_t size = encoded(m).size();
      const std::size_t n = added.size();
      const std::size_t header = n + 2 <= 15 ? 1 : 3;
      const bool fits = n < kMaxMessagesPerPacket && header + 1 + body + size <= budget;
      ASSERT_EQ(by_message.remaining() >= size, fits);
      ASSERT_EQ(by_message.add(m), fits) << "budget " << budget << " body " << body << " size " << size;
      ASSERT_EQ(by_bytes.add_encoded(encoded(m)), fits);
      if (fits) {
        body += size;
        added.push_back(std::move(m));
      }
    }
    const Bytes p = by_message.finish();
    ASSERT_LE(p.size(), budget);
    ASSERT_EQ(p, by_bytes.finish());
    if (added.empty()) {
      EXPECT_TRUE(p.empty());
      continue;
    }
    EXPECT_EQ(p.size(), (added.size() + 1 <= 15 ? 1 : 3) + 1 + body);
    auto d = decode_packet(p);
    ASSERT_TRUE(d) << to_string(d.error());
    EXPECT_EQ(d->messages, added);
  }
}

}  // namespace
}  // namespace weft::gossip
