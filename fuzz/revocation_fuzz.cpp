// libFuzzer target for the revocation list decoders (transport/revocation.h): the armor and the
// envelope/body. Nothing may crash or trip a sanitizer, and:
//  - a decoded list passes check_revocations, and re-signing it with a fixed key decodes to the
//    same list (the encoder and decoder agree on every field the decoder accepts);
//  - the input never verifies against a key that did not sign it;
//  - contains() finds every entry of a decoded list.
// The input is tried both as armored text and as the envelope bytes.
// Seeds: fuzz/corpus/revocation/ (a signed list, armored and raw).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "weft/transport/revocation.h"

namespace {

namespace tr = weft::transport;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "revocation_fuzz: %s\n", what);
  std::abort();
}

const tr::OperatorKey& fixed_key() {
  static const tr::OperatorKey k = tr::OperatorKey::from_seed(std::array<unsigned char, 32>{9});
  return k;
}

void check_envelope(std::span<const std::byte> envelope) {
  auto d = tr::decode_revocations(envelope);
  const tr::SignPublicKey trusted[] = {fixed_key().public_key()};
  auto v = tr::verify_revocations(envelope, trusted, "default", std::nullopt);
  if (v && !d) fail("verify_revocations accepted what decode_revocations refused");
  if (v) fail("an input verified against a key that never signed it");
  if (!d) return;
  const tr::RevocationList& l = d->list;
  if (!tr::check_revocations(l)) fail("a decoded list fails check_revocations");
  for (const tr::RevokedCert& c : l.revoked) {
    if (!l.contains(c.issuer, c.serial)) fail("contains() misses an entry");
  }
  auto again = tr::sign_revocations(l, fixed_key());
  if (!again) fail("a decoded list cannot be signed again");
  auto d2 = tr::decode_revocations(*again);
  if (!d2) fail("a re-signed list does not decode");
  tr::RevocationList want = l;
  want.issuer = fixed_key().issuer();
  if (!(d2->list == want)) fail("a re-signed list decodes differently");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto env = tr::unarmor_revocations(text)) {
    auto back = tr::unarmor_revocations(tr::armor_revocations(*env));
    if (!back || *back != *env) fail("armor does not round-trip");
    check_envelope(*env);
  }
  check_envelope(bytes);
  return 0;
}
