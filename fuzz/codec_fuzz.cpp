// libFuzzer target for the membership codec: arbitrary bytes go to decode_packet and
// decode_stream. Neither may crash, leak or trip a sanitizer, and whatever decodes must survive
// a re-encode: decode(encode(x)) == x, and encoding is deterministic.
// Seeds: fuzz/corpus/codec/ (see fuzz/CMakeLists.txt for how to build and run).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "weft/gossip/codec.h"

namespace {

using weft::gossip::decode_packet;
using weft::gossip::decode_stream;
using weft::gossip::encode_stream;
using weft::gossip::PacketBuilder;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "codec_fuzz: %s\n", what);
  std::abort();
}

void check_packet(std::span<const std::byte> bytes) {
  auto decoded = decode_packet(bytes);
  if (!decoded || decoded->messages.empty()) return;
  // Re-encoding is canonical (never longer than the input) and drops unknown messages, so it
  // always fits the largest datagram.
  PacketBuilder builder(65535);
  for (const auto& m : decoded->messages) {
    if (!builder.add(m)) fail("a decoded message does not fit a re-encoded packet");
  }
  const std::vector<std::byte> encoded = builder.finish();
  if (encoded.size() > bytes.size()) fail("re-encoded packet is longer than the input");
  auto again = decode_packet(encoded);
  if (!again) fail("re-encoded packet does not decode");
  if (again->messages != decoded->messages || again->unknown_skipped != 0) fail("packet round trip differs");
  for (const auto& m : again->messages) builder.add(m);
  if (builder.finish() != encoded) fail("packet encoding is not deterministic");
}

void check_stream(std::span<const std::byte> bytes) {
  auto decoded = decode_stream(bytes);
  if (!decoded) return;
  const std::vector<std::byte> encoded = encode_stream(*decoded);
  if (encoded.size() > bytes.size()) fail("re-encoded stream is longer than the input");
  auto again = decode_stream(encoded);
  if (!again) fail("re-encoded stream does not decode");
  if (*again != *decoded) fail("stream round trip differs");
  if (encode_stream(*again) != encoded) fail("stream encoding is not deterministic");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  check_packet(bytes);
  check_stream(bytes);
  return 0;
}
