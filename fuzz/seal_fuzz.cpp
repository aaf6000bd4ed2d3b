// libFuzzer target for the seal: arbitrary bytes go to Keyring::open, on a ring with a fixed key
// (both purposes) and on a plaintext ring. Nothing may crash or trip a sanitizer, and the
// results must be consistent: an error leaves `out` empty; a sealed input that opens has exactly
// kSealOverhead bytes more than its plaintext, names the ring's key and re-seals to a message
// that opens to the same bytes; a plaintext ring returns the input minus its 0x00 byte.
// Seeds: fuzz/corpus/seal/ are valid seals made with kFuzzKey (see fuzz/CMakeLists.txt).

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "weft/transport/keyring.h"

namespace {

using weft::transport::Key;
using weft::transport::Keyring;
using weft::transport::kSealOverhead;
using weft::transport::Purpose;

// Key bytes 0, 1, …, 31 (key id 99c0a22c): the corpus was sealed with it.
constexpr Key kFuzzKey = [] {
  Key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<unsigned char>(i);
  return k;
}();

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "seal_fuzz: %s\n", what);
  std::abort();
}

const Keyring& keyed() {
  static const Keyring ring = [] {
    Keyring r;
    r.install(kFuzzKey);
    return r;
  }();
  return ring;
}

void check_keyed(Purpose purpose, std::span<const std::byte> bytes) {
  std::vector<std::byte> out{std::byte{0x55}};  // stale contents must be replaced
  auto res = keyed().open(purpose, bytes, out);
  if (!res) {
    if (!out.empty()) fail("a failed open left bytes in out");
    return;
  }
  if (bytes.size() != out.size() + kSealOverhead) fail("opened size is not input minus the overhead");
  std::vector<std::byte> again;
  keyed().seal(purpose, out, again);
  std::vector<std::byte> back;
  if (!keyed().open(purpose, again, back) || back != out)
    fail("re-sealed message does not open to the same bytes");
  const Purpose other = purpose == Purpose::kDatagram ? Purpose::kStream : Purpose::kDatagram;
  if (keyed().open(other, bytes, back)) fail("a seal opened under the other purpose");
}

void check_plain(std::span<const std::byte> bytes) {
  static const Keyring plain;
  std::vector<std::byte> out{std::byte{0x55}};
  auto res = plain.open(Purpose::kDatagram, bytes, out);
  if (!res) {
    if (!out.empty()) fail("a failed plaintext open left bytes in out");
    return;
  }
  if (bytes.empty() || bytes[0] != std::byte{0} || out.size() + 1 != bytes.size()) {
    fail("plaintext open is not input minus 0x00");
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] != bytes[i + 1]) fail("plaintext open changed the payload");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  check_keyed(Purpose::kDatagram, bytes);
  check_keyed(Purpose::kStream, bytes);
  check_plain(bytes);
  return 0;
}
