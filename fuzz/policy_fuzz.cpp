// libFuzzer target for the signed policy decoders (transport/policy.h): the armor and the
// envelope/body. Nothing may crash or trip a sanitizer, and:
//  - a decoded policy passes check_policy, and re-signing it with a fixed key decodes to the same
//    policy (the encoder and decoder agree on every field the decoder accepts);
//  - the input never verifies against a key that did not sign it;
//  - decide() on a decoded policy returns allow or deny and a rule index in range.
// The input is tried both as armored text and as the envelope bytes.
// Seeds: fuzz/corpus/policy/ (a signed policy, armored and raw).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "weft/transport/policy.h"

namespace {

namespace tr = weft::transport;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "policy_fuzz: %s\n", what);
  std::abort();
}

const tr::OperatorKey& fixed_key() {
  static const tr::OperatorKey k = tr::OperatorKey::from_seed(std::array<unsigned char, 32>{9});
  return k;
}

void check_envelope(std::span<const std::byte> envelope) {
  auto d = tr::decode_policy(envelope);
  const tr::SignPublicKey trusted[] = {fixed_key().public_key()};
  auto v = tr::verify_policy(envelope, trusted, "default", std::nullopt,
                             tr::UnixTime(std::chrono::seconds(1'800'000'000)));
  if (v && !d) fail("verify_policy accepted what decode_policy refused");
  if (v) fail("an input verified against a key that never signed it");
  if (!d) return;
  const tr::Policy& p = d->policy;
  if (!tr::check_policy(p)) fail("a decoded policy fails check_policy");
  if (p.expires && tr::format_rfc3339(*p.expires).size() != 20) fail("expires does not print as RFC 3339");
  auto again = tr::sign_policy(p, fixed_key());
  if (!again) fail("a decoded policy cannot be signed again");
  auto d2 = tr::decode_policy(*again);
  if (!d2) fail("a re-signed policy does not decode");
  tr::Policy want = p;
  want.issuer = fixed_key().issuer();
  if (!(d2->policy == want)) fail("a re-signed policy decodes differently");
  for (const tr::PolicyRule& r : p.rules) {
    const tr::Decision dec = tr::decide(p, r.from, r.to);
    if (dec.effective != tr::PolicyAction::kAllow && dec.effective != tr::PolicyAction::kDeny)
      fail("decide returned neither allow nor deny");
    if (dec.rule && *dec.rule >= p.rules.size()) fail("decide returned a rule out of range");
    if (!dec.rule) fail("a rule's own names matched no rule");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto env = tr::unarmor_policy(text)) {
    auto back = tr::unarmor_policy(tr::armor_policy(*env));
    if (!back || *back != *env) fail("armor does not round-trip");
    check_envelope(*env);
  }
  check_envelope(bytes);
  return 0;
}
