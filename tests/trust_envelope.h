#pragma once
// For tests of signed trust documents (revocation lists, key operations): an envelope
// [body:bin, sig:bin64] built by hand, to feed the decoders bodies the signers never write.

#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "weft/transport/trust.h"

namespace weft::transport::test {

inline std::vector<std::byte> pack_envelope(std::span<const std::byte> body, const Signature& sig) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(2);
  pk.pack_bin(static_cast<std::uint32_t>(body.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(body.data()), static_cast<std::uint32_t>(body.size()));
  pk.pack_bin(64);
  pk.pack_bin_body(reinterpret_cast<const char*>(sig.data()), 64);
  const auto* p = reinterpret_cast<const std::byte*>(b.data());
  return {p, p + b.size()};
}

}  // namespace weft::transport::test
