// libFuzzer target for the trust root's decoders (transport/trust.h): the armor, node
// certificates, operator secret and public key files, node.pub. Nothing may crash or trip a
// sanitizer, and:
//  - armor round-trips: unarmor(armor(label, bytes)) == bytes;
//  - a decoded certificate satisfies the field checks (names, services, validity order), and the
//    input never verifies against a key that did not sign it;
//  - a plain operator secret key that unlocks yields the public key stored in the file.
// The input is tried both as armored text and as the msgpack payload inside each armor label.
// Passphrase-protected key files are parsed but never unlocked here (Argon2id would dominate).
// Seeds: fuzz/corpus/cert/ (a certificate, key files, their payloads).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include "weft/transport/trust.h"

namespace {

namespace tr = weft::transport;
using namespace std::chrono_literals;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "cert_fuzz: %s\n", what);
  std::abort();
}

const tr::OperatorKey& fixed_key() {
  static const tr::OperatorKey k = tr::OperatorKey::from_seed(std::array<unsigned char, 32>{7});
  return k;
}

void check_cert(std::span<const std::byte> envelope) {
  auto d = tr::decode_cert(envelope);
  if (d) {
    const tr::NodeCert& c = d->cert;
    if (!tr::check_trust_name("node", c.node)) fail("a decoded certificate has a bad node name");
    if (c.services.size() > tr::kMaxCertServices) fail("too many services decoded");
    for (const auto& s : c.services) {
      if (!tr::check_trust_name("service", s)) fail("a decoded certificate has a bad service name");
    }
    if (c.not_after <= c.not_before) fail("a decoded certificate has an empty validity window");
    if (tr::format_rfc3339(c.not_before).size() != 20 || tr::format_rfc3339(c.not_after).size() != 20) {
      fail("a decoded certificate's times do not print as RFC 3339");
    }
  }
  const tr::SignPublicKey trusted[] = {fixed_key().public_key()};
  auto v = tr::verify_cert(envelope, trusted, tr::UnixTime(std::chrono::seconds(1'800'000'000)), 300s);
  if (v && !d) fail("verify_cert accepted what decode_cert refused");
  if (v) fail("an input verified against a key that never signed it");
}

void check_secret(std::string_view text) {
  auto f = tr::parse_operator_secret(text);
  if (!f || f->passphrase_protected) return;
  auto k = tr::unlock_operator_secret(*f, std::nullopt);
  if (k && k->public_key() != f->pk) fail("an unlocked key does not match its file's public key");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // As text: every file decoder.
  if (auto env = tr::unarmor_cert(text)) check_cert(*env);
  check_secret(text);
  (void)tr::decode_operator_public(text);
  (void)tr::decode_node_public(text);

  // As the payload inside each armor.
  if (size > tr::kMaxArmoredBytes / 2) return 0;
  check_cert(bytes);
  for (std::string_view label : {tr::kLabelOperatorSecret, tr::kLabelOperatorPublic, tr::kLabelNodePublic}) {
    const std::string armored = tr::armor(label, bytes);
    auto back = tr::unarmor(armored, label);
    if (size > 0 &&
        (!back || back->size() != size || !std::equal(back->begin(), back->end(), bytes.begin()))) {
      fail("armor does not round-trip");
    }
    if (label == tr::kLabelOperatorSecret) check_secret(armored);
    if (label == tr::kLabelOperatorPublic) (void)tr::decode_operator_public(armored);
    if (label == tr::kLabelNodePublic) (void)tr::decode_node_public(armored);
  }
  return 0;
}
