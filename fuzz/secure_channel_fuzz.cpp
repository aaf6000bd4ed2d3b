// libFuzzer target for the secure channel (noise.h, record.h): arbitrary bytes go
//  1. to a responder's read_message (as Noise_IK message 1), and
//  2. to a RecordOpener of each cipher, once in one piece and once in small pieces.
// Nothing may crash or trip a sanitizer, and the results must be consistent: a message 1 that
// reads has the overhead plus its payload and names a remote static key, and the responder can
// answer it; the opener gives the same plaintext, the same record count and the same error
// whichever way the bytes are cut, never buffers more than one record, and releases only
// authentic plaintext (what it opens re-seals to the same bytes).
// Seeds: fuzz/corpus/secure_channel/ are a valid message 1 to kResponderSecret and record streams
// sealed with kRecordKey (both ciphers), made with the keys below.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "weft/transport/noise.h"
#include "weft/transport/record.h"

namespace {

using namespace weft::transport;

// Responder static secret 0x01 0x02 … 0x20; record key 0x00 … 0x1f. The seeds were made with them.
constexpr std::array<unsigned char, 32> kResponderSecret = [] {
  std::array<unsigned char, 32> k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<unsigned char>(i + 1);
  return k;
}();
constexpr RecordKey kRecordKey = [] {
  RecordKey k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<unsigned char>(i);
  return k;
}();
constexpr std::byte kPrologue[] = {std::byte{'w'}, std::byte{'e'}, std::byte{'f'}, std::byte{'t'}};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "secure_channel_fuzz: %s\n", what);
  std::abort();
}

void check_handshake(std::span<const std::byte> bytes) {
  static const NoiseKeyPair responder_static = NoiseKeyPair::from_secret(kResponderSecret);
  auto hs = Handshake::responder(responder_static, kPrologue);
  auto payload = hs.read_message(bytes);
  if (!payload) {
    if (!hs.failed() || hs.remote_static().has_value()) fail("a failed read left a usable handshake");
    return;
  }
  if (payload->size() + kMessage1Overhead != bytes.size()) fail("payload size is not message minus overhead");
  if (!hs.remote_static().has_value()) fail("message 1 read without a remote static key");
  auto reply = hs.write_message(*payload);
  if (!reply || reply->size() != payload->size() + kMessage2Overhead || !hs.complete()) {
    fail("the responder could not answer an authentic message 1");
  }
  if (!hs.split()) fail("split failed after completion");
}

struct Outcome {
  std::vector<std::byte> plain;
  std::size_t records = 0;
  bool ok = true;
  RecordError error = RecordError::kBadTag;
  bool closed = false;
};

Outcome open_all(Cipher cipher, std::span<const std::byte> bytes, std::size_t piece) {
  RecordOpener opener(cipher, kRecordKey);
  Outcome o;
  while (!bytes.empty() && o.ok) {
    const std::size_t n = piece == 0 ? bytes.size() : std::min(piece, bytes.size());
    auto r = opener.feed(bytes.first(n), o.plain);
    if (opener.buffered() > kMaxRecordBytes) fail("the opener buffered more than one record");
    if (!r) {
      o.ok = false;
      o.error = r.error();
    }
    bytes = bytes.subspan(n);
  }
  o.closed = opener.closed();
  o.records = static_cast<std::size_t>(opener.stats().records_opened);
  if (o.ok) {
    auto f = opener.finish();
    if (f.has_value() != o.closed) fail("finish() disagrees with closed()");
  }
  if (opener.stats().bytes_opened != o.plain.size()) fail("bytes_opened is not the plaintext released");
  return o;
}

void check_records(Cipher cipher, std::span<const std::byte> bytes) {
  const Outcome whole = open_all(cipher, bytes, 0);
  const std::size_t piece = 1 + bytes.size() % 7;
  const Outcome cut = open_all(cipher, bytes, piece);
  if (whole.plain != cut.plain || whole.records != cut.records || whole.closed != cut.closed) {
    fail("opening in pieces differs from opening at once");
  }
  // The header is checked as soon as its 4 bytes are in, however they arrive: same error.
  if (whole.ok != cut.ok || (!whole.ok && whole.error != cut.error)) fail("the error depends on how bytes were cut");
  if (whole.records == 0) return;
  // What was released is ordinary plaintext: sealed again as one record (if it fits), it opens
  // to the same bytes.
  if (whole.plain.size() <= kMaxRecordPlaintext) {
    RecordSealer sealer(cipher, kRecordKey);
    std::vector<std::byte> wire;
    if (!sealer.seal_into(wire, RecordType::kData, whole.plain)) fail("re-seal failed");
    RecordOpener opener(cipher, kRecordKey);
    std::vector<std::byte> back;
    if (!opener.feed(wire, back) || back != whole.plain) fail("re-sealed plaintext does not open the same");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  check_handshake(bytes);
  check_records(Cipher::kAes256Gcm, bytes);
  check_records(Cipher::kXChaCha20Poly1305, bytes);
  return 0;
}
