// libFuzzer target for the signed key-operation decoders (transport/keyop.h): the armor and the
// envelope/body. Nothing may crash or trip a sanitizer, and:
//  - a decoded operation passes check_key_op, and re-signing it with a fixed key decodes to the
//    same operation (the encoder and decoder agree on every field the decoder accepts);
//  - the input never verifies against a key that did not sign it.
// The input is tried both as armored text and as the envelope bytes.
// Seeds: fuzz/corpus/keyop/ (signed operations, armored and raw).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "weft/transport/keyop.h"

namespace {

namespace tr = weft::transport;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "keyop_fuzz: %s\n", what);
  std::abort();
}

const tr::OperatorKey& fixed_key() {
  static const tr::OperatorKey k = tr::OperatorKey::from_seed(std::array<unsigned char, 32>{9});
  return k;
}

void check_envelope(std::span<const std::byte> envelope) {
  auto d = tr::decode_key_op(envelope);
  const tr::SignPublicKey trusted[] = {fixed_key().public_key()};
  if (d) {
    const tr::KeyOpTarget target{d->op.op, d->op.key_id, d->op.fingerprint.value_or(tr::KeyFingerprint{})};
    if (tr::verify_key_op(envelope, trusted, d->op.cluster, target, d->op.issued)) {
      fail("an input verified against a key that never signed it");
    }
  }
  if (!d) return;
  const tr::KeyOperation& k = d->op;
  if (!tr::check_key_op(k)) fail("a decoded operation fails check_key_op");
  auto again = tr::sign_key_op(k, fixed_key());
  if (!again) fail("a decoded operation cannot be signed again");
  auto d2 = tr::decode_key_op(*again);
  if (!d2) fail("a re-signed operation does not decode");
  tr::KeyOperation want = k;
  want.issuer = fixed_key().issuer();
  if (!(d2->op == want)) fail("a re-signed operation decodes differently");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto env = tr::unarmor_key_op(text)) {
    auto back = tr::unarmor_key_op(tr::armor_key_op(*env));
    if (!back || *back != *env) fail("armor does not round-trip");
    check_envelope(*env);
  }
  check_envelope(bytes);
  return 0;
}
