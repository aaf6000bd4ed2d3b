// The trust root (transport/trust.h): armor, operator key files, node.pub, node certificates.

#include "weft/transport/trust.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <msgpack.hpp>
#include <string>

#include "trust_envelope.h"

namespace {

using namespace weft::transport;
using namespace std::chrono_literals;

const UnixTime kNow{std::chrono::seconds(1'800'000'000)};

NodeCert sample_cert(const NodeIdentity& id) {
  NodeCert c;
  c.serial = 42;
  c.node = "node-1";
  c.sign_pk = id.sign_pk;
  c.kx_pk = id.kx_pk;
  c.services = {"web", "db"};
  c.not_before = kNow - 1h;
  c.not_after = kNow + 24h;
  return c;
}

std::vector<std::byte> signed_sample(const OperatorKey& op, const NodeIdentity& id) {
  auto env = sign_cert(sample_cert(id), op);
  EXPECT_TRUE(env.has_value()) << env.error().message;
  return *env;
}

std::vector<std::byte> context_and(std::span<const std::byte> body) {
  std::vector<std::byte> msg(kCertContext.size() + body.size());
  std::memcpy(msg.data(), kCertContext.data(), kCertContext.size());
  if (!body.empty()) std::memcpy(msg.data() + kCertContext.size(), body.data(), body.size());
  return msg;
}

std::string temp_dir() {
  std::string t = ::testing::TempDir() + "trust_test_XXXXXX";
  char* d = ::mkdtemp(t.data());
  EXPECT_NE(d, nullptr);
  return t;
}

TEST(Trust, IssuerIdIsTheFirst8BytesOfBlake2bOfThePublicKey) {
  const OperatorKey op = OperatorKey::generate();
  const IssuerId id = op.issuer();
  EXPECT_EQ(to_hex(id).size(), 16u);
  EXPECT_EQ(id, issuer_id(op.public_key()));
  EXPECT_NE(id, OperatorKey::generate().issuer());
  // Fixed seed -> fixed key -> fixed issuer: the id must not change between releases.
  std::array<unsigned char, 32> seed{};
  const OperatorKey fixed = OperatorKey::from_seed(seed);
  EXPECT_EQ(to_hex(fixed.public_key()), "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29");
  EXPECT_EQ(to_hex(fixed.issuer()), "689dae2f77b048dc");  // BLAKE2b-256, computed independently
}

TEST(Trust, ArmorRoundTripsAndWrapsAt64Columns) {
  std::vector<std::byte> payload(200);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 7);
  const std::string text = armor(kLabelCert, payload);
  EXPECT_EQ(text.rfind("-----BEGIN WEFT NODE CERTIFICATE-----\n", 0), 0u);
  std::size_t start = 0;
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    ASSERT_NE(nl, std::string::npos);
    const std::string line = text.substr(start, nl - start);
    if (line.rfind("-----", 0) != 0) {
      EXPECT_LE(line.size(), 64u);
    }
    start = nl + 1;
  }
  auto back = unarmor(text, kLabelCert);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, payload);
  // CRLF and blank lines around it are fine.
  std::string crlf = "\n\n";
  for (char ch : text) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  auto back2 = unarmor(crlf + "\n", kLabelCert);
  ASSERT_TRUE(back2) << back2.error().message;
  EXPECT_EQ(*back2, payload);
}

TEST(Trust, ArmorRefusesGarbageTruncationAndTheWrongLabel) {
  const std::vector<std::byte> payload(100, std::byte{0x5a});
  const std::string text = armor(kLabelCert, payload);
  EXPECT_FALSE(unarmor("", kLabelCert));
  EXPECT_FALSE(unarmor("hello world\n", kLabelCert));
  auto wrong = unarmor(text, kLabelOperatorPublic);
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("holds a WEFT NODE CERTIFICATE block, not a WEFT OPERATOR PUBLIC KEY"),
            std::string::npos)
      << wrong.error().message;
  // Truncated: no END line; and the base64 cut in the middle.
  const auto end_at = text.find("-----END");
  auto no_end = unarmor(text.substr(0, end_at), kLabelCert);
  ASSERT_FALSE(no_end);
  EXPECT_NE(no_end.error().message.find("truncated"), std::string::npos);
  std::string cut = text;
  cut.erase(end_at - 6, 5);  // drop 5 base64 characters from the last line
  EXPECT_FALSE(unarmor(cut, kLabelCert));
  std::string bad = text;
  bad[text.find('\n') + 3] = '*';
  EXPECT_FALSE(unarmor(bad, kLabelCert));
  EXPECT_FALSE(unarmor(text + "trailing junk\n", kLabelCert));
  std::string mismatched_end = text;
  mismatched_end.replace(end_at, std::string("-----END WEFT NODE CERTIFICATE-----").size(),
                         "-----END WEFT OPERATOR PUBLIC KEY-----");
  EXPECT_FALSE(unarmor(mismatched_end, kLabelCert));
  EXPECT_FALSE(unarmor(std::string(kMaxArmoredBytes + 1, 'A'), kLabelCert));
}

TEST(Trust, CertRoundTripsAndVerifies) {
  const OperatorKey op = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  const auto env = signed_sample(op, id);
  const std::string text = armor_cert(env);
  auto back = unarmor_cert(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, env);
  const SignPublicKey trusted[] = {op.public_key()};
  auto v = verify_cert(*back, trusted, kNow, 0s);
  ASSERT_TRUE(v) << v.error().message;
  NodeCert want = sample_cert(id);
  want.issuer = op.issuer();
  EXPECT_EQ(*v, want);
  EXPECT_TRUE(cert_matches(*v, id));
  EXPECT_FALSE(cert_matches(*v, NodeIdentity::generate()));
  NodePublicKeys swapped{id.kx_pk, id.sign_pk};
  EXPECT_FALSE(cert_matches(*v, swapped));
  auto d = decode_cert(env);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->cert, want);
}

TEST(Trust, SignRefusesBadFields) {
  const OperatorKey op = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  NodeCert c = sample_cert(id);
  c.node = "bad name";
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.node = "";
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.services = {"ok", "no/slash"};
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.not_after = c.not_before;
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.services.assign(kMaxCertServices + 1, "s");
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.not_before = UnixTime(std::chrono::seconds(-1));
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.not_after = UnixTime(std::chrono::seconds(kMaxCertUnixSeconds + 1));
  EXPECT_FALSE(sign_cert(c, op));
  c = sample_cert(id);
  c.not_after = UnixTime(std::chrono::seconds(kMaxCertUnixSeconds));
  EXPECT_TRUE(sign_cert(c, op));
  EXPECT_EQ(format_rfc3339(c.not_after), "9999-12-31T23:59:59Z");
  c = sample_cert(id);
  c.services.clear();  // no services is allowed: the node may serve and call nothing
  EXPECT_TRUE(sign_cert(c, op));
}

TEST(Trust, FlippingAnyByteOfTheCertNeverVerifies) {
  const OperatorKey op = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  const auto env = signed_sample(op, id);
  const SignPublicKey trusted[] = {op.public_key()};
  CertStats stats;
  for (std::size_t i = 0; i < env.size(); ++i) {
    for (unsigned bit : {0x01u, 0x80u, 0xffu}) {
      auto bad = env;
      bad[i] ^= static_cast<std::byte>(bit);
      auto text = armor_cert(bad);
      auto bytes = unarmor_cert(text);
      ASSERT_TRUE(bytes);
      auto v = verify_cert(*bytes, trusted, kNow, 0s);
      stats.count(v);
      EXPECT_FALSE(v) << "byte " << i << " ^ " << bit << " still verifies";
    }
  }
  EXPECT_EQ(stats.verified, 0u);
  EXPECT_EQ(stats.malformed + stats.unknown_issuer + stats.bad_signature, 3 * env.size());
  EXPECT_GT(stats.bad_signature, 0u);
  EXPECT_GT(stats.malformed, 0u);
  // Every proper prefix is malformed.
  for (std::size_t n = 0; n < env.size(); ++n) {
    auto v = verify_cert(std::span(env).first(n), trusted, kNow, 0s);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.error().kind, CertError::kMalformed);
  }
}

TEST(Trust, ValidityWindowWithAndWithoutSkew) {
  const OperatorKey op = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  const auto env = signed_sample(op, id);  // valid [kNow - 1h, kNow + 24h)
  const SignPublicKey trusted[] = {op.public_key()};
  auto early = verify_cert(env, trusted, kNow - 1h - 1s, 0s);
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().kind, CertError::kNotYetValid);
  EXPECT_TRUE(verify_cert(env, trusted, kNow - 1h, 0s));
  EXPECT_TRUE(verify_cert(env, trusted, kNow - 1h - 30s, 30s));
  auto too_early = verify_cert(env, trusted, kNow - 1h - 31s, 30s);
  ASSERT_FALSE(too_early);
  EXPECT_EQ(too_early.error().kind, CertError::kNotYetValid);

  EXPECT_TRUE(verify_cert(env, trusted, kNow + 24h - 1s, 0s));
  auto late = verify_cert(env, trusted, kNow + 24h, 0s);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().kind, CertError::kExpired);
  EXPECT_NE(late.error().message.find("expired at "), std::string::npos);
  EXPECT_TRUE(verify_cert(env, trusted, kNow + 24h + 29s, 30s));
  auto too_late = verify_cert(env, trusted, kNow + 24h + 30s, 30s);
  ASSERT_FALSE(too_late);
  EXPECT_EQ(too_late.error().kind, CertError::kExpired);
}

TEST(Trust, UnknownIssuerAndTwoTrustedRoots) {
  const OperatorKey old_root = OperatorKey::generate();
  const OperatorKey new_root = OperatorKey::generate();
  const OperatorKey stranger = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  const auto by_old = signed_sample(old_root, id);
  const auto by_new = signed_sample(new_root, id);
  const auto by_stranger = signed_sample(stranger, id);
  const SignPublicKey both[] = {old_root.public_key(), new_root.public_key()};
  EXPECT_TRUE(verify_cert(by_old, both, kNow, 0s));
  EXPECT_TRUE(verify_cert(by_new, both, kNow, 0s));
  auto v = verify_cert(by_stranger, both, kNow, 0s);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().kind, CertError::kUnknownIssuer);
  EXPECT_NE(v.error().message.find(to_hex(stranger.issuer())), std::string::npos);
  const SignPublicKey only_new[] = {new_root.public_key()};
  auto gone = verify_cert(by_old, only_new, kNow, 0s);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, CertError::kUnknownIssuer);
  EXPECT_FALSE(verify_cert(by_old, std::span<const SignPublicKey>{}, kNow, 0s));
}

TEST(Trust, SignaturesOverOtherBytesFail) {
  const OperatorKey op = OperatorKey::generate();
  const NodeIdentity id = NodeIdentity::generate();
  const auto env = signed_sample(op, id);
  auto d = decode_cert(env);
  ASSERT_TRUE(d);
  const SignPublicKey trusted[] = {op.public_key()};
  // Our own envelope helper rebuilds the original exactly.
  EXPECT_EQ(test::pack_envelope(d->body, d->sig), env);

  // Another key signs a body whose issuer field names the trusted key.
  const OperatorKey stranger = OperatorKey::generate();
  auto forged = verify_cert(test::pack_envelope(d->body, stranger.sign(context_and(d->body))), trusted, kNow, 0s);
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().kind, CertError::kBadSignature);

  // The right key, but without the context string.
  auto bare = verify_cert(test::pack_envelope(d->body, op.sign(d->body)), trusted, kNow, 0s);
  ASSERT_FALSE(bare);
  EXPECT_EQ(bare.error().kind, CertError::kBadSignature);

  // The same certificate re-encoded differently (the serial as a uint64 instead of a fixint):
  // it decodes to the same fields, but the signature covers the exact bytes.
  ASSERT_EQ(d->body[0], std::byte{0x99});  // array of 9
  ASSERT_EQ(d->body[1], std::byte{0x01});  // version
  ASSERT_EQ(d->body[2], std::byte{42});    // serial, fixint
  std::vector<std::byte> re(d->body.begin(), d->body.begin() + 2);
  re.push_back(std::byte{0xcf});
  for (int i = 0; i < 7; ++i) re.push_back(std::byte{0});
  re.push_back(std::byte{42});
  re.insert(re.end(), d->body.begin() + 3, d->body.end());
  const auto reencoded = test::pack_envelope(re, d->sig);
  auto same_fields = decode_cert(reencoded);
  ASSERT_TRUE(same_fields) << same_fields.error().message;
  EXPECT_EQ(same_fields->cert, d->cert);
  auto v = verify_cert(reencoded, trusted, kNow, 0s);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().kind, CertError::kBadSignature);
}

TEST(Trust, MalformedBodiesAreMalformed) {
  const OperatorKey op = OperatorKey::generate();
  const SignPublicKey trusted[] = {op.public_key()};
  auto body_of = [](auto fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    fill(pk);
    const auto* p = reinterpret_cast<const std::byte*>(buf.data());
    return std::vector<std::byte>(p, p + buf.size());
  };
  auto check = [&](const std::vector<std::byte>& body, const std::string& want) {
    auto v = verify_cert(test::pack_envelope(body, op.sign(context_and(body))), trusted, kNow, 0s);
    ASSERT_FALSE(v);
    EXPECT_EQ(v.error().kind, CertError::kMalformed);
    EXPECT_NE(v.error().message.find(want), std::string::npos) << v.error().message;
  };
  check(body_of([](auto& pk) { pk.pack_map(0); }), "not a msgpack array");
  check(body_of([](auto& pk) {
          pk.pack_array(9);
          pk.pack_uint64(2);
          for (int i = 0; i < 8; ++i) pk.pack_nil();
        }),
        "format version 2 is not supported");
  check(body_of([](auto& pk) {
          pk.pack_array(3);
          pk.pack_uint64(1);
          pk.pack_nil();
          pk.pack_nil();
        }),
        "3 fields");
  check(body_of([](auto& pk) {
          pk.pack_array(9);
          pk.pack_uint64(1);
          pk.pack_uint64(1);
          pk.pack_bin(3);
          pk.pack_bin_body("abc", 3);
          for (int i = 0; i < 6; ++i) pk.pack_nil();
        }),
        "issuer is 3 bytes, want 8");
  // Every field well-typed, but a time before 1970 (a negative msgpack integer).
  auto full = [&](std::int64_t not_before, const std::string& node) {
    return body_of([&](auto& pk) {
      const std::string k32(32, 'k');
      const IssuerId issuer = op.issuer();
      pk.pack_array(9);
      pk.pack_uint64(1);
      pk.pack_uint64(9);
      pk.pack_bin(8);
      pk.pack_bin_body(reinterpret_cast<const char*>(issuer.data()), 8);
      pk.pack(node);
      pk.pack_bin(32);
      pk.pack_bin_body(k32.data(), 32);
      pk.pack_bin(32);
      pk.pack_bin_body(k32.data(), 32);
      pk.pack_array(0);
      pk.pack_int64(not_before);
      pk.pack_int64(1'900'000'000);
    });
  };
  {
    const auto good = full(1'700'000'000, "n");
    EXPECT_TRUE(verify_cert(test::pack_envelope(good, op.sign(context_and(good))), trusted, kNow, 0s));
  }
  check(full(-5, "n"), "outside 1970..9999");
  check(full(1'700'000'000, "a b"), "may hold only");
  check(full(1'700'000'000, std::string(129, 'x')), "not valid msgpack within the limits");
}

TEST(Trust, OperatorKeyFilesRoundTrip) {
  const OperatorKey op = OperatorKey::generate();
  auto pub = decode_operator_public(op.encode_public());
  ASSERT_TRUE(pub) << pub.error().message;
  EXPECT_EQ(*pub, op.public_key());

  auto plain = parse_operator_secret(op.encode_secret(std::nullopt));
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_FALSE(plain->passphrase_protected);
  auto k = unlock_operator_secret(*plain, std::nullopt);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->public_key(), op.public_key());
  // The unlocked key signs what the original's public key verifies.
  const NodeIdentity id = NodeIdentity::generate();
  const SignPublicKey trusted[] = {op.public_key()};
  EXPECT_TRUE(verify_cert(signed_sample(*k, id), trusted, kNow, 0s));

  // Each file is refused under another label.
  auto wrong = decode_operator_public(op.encode_secret(std::nullopt));
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("SECRET KEY block, not a WEFT OPERATOR PUBLIC KEY"),
            std::string::npos);
  EXPECT_FALSE(parse_operator_secret(op.encode_public()));
  EXPECT_FALSE(decode_node_public(op.encode_public()));
}

TEST(Trust, PassphraseProtectedKey) {
  const OperatorKey op = OperatorKey::generate();
  const std::string text = op.encode_secret("correct horse", KdfLimits::interactive());
  auto f = parse_operator_secret(text);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_TRUE(f->passphrase_protected);
  EXPECT_EQ(f->pk, op.public_key());
  auto right = unlock_operator_secret(*f, "correct horse");
  ASSERT_TRUE(right) << right.error().message;
  EXPECT_EQ(right->public_key(), op.public_key());
  auto wrong = unlock_operator_secret(*f, "correct horsE");
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("wrong passphrase"), std::string::npos);
  auto none = unlock_operator_secret(*f, std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("--passphrase-file"), std::string::npos);
  // A damaged sealed seed fails like a wrong passphrase, never yields another key.
  OperatorSecretFile damaged = *f;
  damaged.sealed[5] ^= std::byte{1};
  EXPECT_FALSE(unlock_operator_secret(damaged, "correct horse"));
  // Two encodings of one key differ (random salt and nonce).
  EXPECT_NE(text, op.encode_secret("correct horse", KdfLimits::interactive()));
}

TEST(Trust, SecretKeyFileDecoderRefusesBadFields) {
  auto file_of = [](auto fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    fill(pk);
    return armor(kLabelOperatorSecret, std::span(reinterpret_cast<const std::byte*>(buf.data()), buf.size()));
  };
  const std::array<unsigned char, 32> k{};
  auto bin = [](auto& pk, std::size_t n) {
    const std::string z(n, '\0');
    pk.pack_bin(static_cast<std::uint32_t>(n));
    pk.pack_bin_body(z.data(), static_cast<std::uint32_t>(n));
  };
  (void)k;
  // Unknown protection.
  EXPECT_FALSE(parse_operator_secret(file_of([&](auto& pk) {
    pk.pack_array(4);
    pk.pack_uint64(1);
    pk.pack_uint64(7);
    bin(pk, 32);
    bin(pk, 32);
  })));
  // A protected file asking for 4 GiB of memory.
  auto huge = parse_operator_secret(file_of([&](auto& pk) {
    pk.pack_array(8);
    pk.pack_uint64(1);
    pk.pack_uint64(1);
    bin(pk, 32);
    bin(pk, 16);
    pk.pack_uint64(2);
    pk.pack_uint64(std::uint64_t{4} << 30);
    bin(pk, 24);
    bin(pk, 48);
  }));
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().message.find("memlimit"), std::string::npos);
  // A plain key whose seed does not give its public key.
  auto mismatch = parse_operator_secret(file_of([&](auto& pk) {
    pk.pack_array(4);
    pk.pack_uint64(1);
    pk.pack_uint64(0);
    bin(pk, 32);
    bin(pk, 32);
  }));
  ASSERT_TRUE(mismatch);
  auto unlocked = unlock_operator_secret(*mismatch, std::nullopt);
  ASSERT_FALSE(unlocked);
  EXPECT_NE(unlocked.error().message.find("does not match"), std::string::npos);
}

TEST(Trust, NodePublicKeysRoundTripDeterministically) {
  const NodeIdentity id = NodeIdentity::generate();
  const std::string text = encode_node_public(public_keys(id));
  EXPECT_EQ(text, encode_node_public(public_keys(id)));
  auto back = decode_node_public(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->sign_pk, id.sign_pk);
  EXPECT_EQ(back->kx_pk, id.kx_pk);
}

TEST(Trust, FilesSecretKeyIs0600AndNeverOverwritten) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/operator.key";
  const mode_t old = ::umask(0);  // the mode must not depend on the umask
  const OperatorKey op = OperatorKey::generate();
  ASSERT_TRUE(write_new_file(path, op.encode_secret(std::nullopt), 0600));
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto again = write_new_file(path, "other", 0600);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("exists"), std::string::npos);
  auto text = read_text_file(path);
  ASSERT_TRUE(text);
  auto f = parse_operator_secret(*text);
  ASSERT_TRUE(f);
  auto k = unlock_operator_secret(*f, std::nullopt);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->public_key(), op.public_key());

  ASSERT_TRUE(replace_file(dir + "/node.pub", "a", 0644));
  ASSERT_TRUE(replace_file(dir + "/node.pub", "b", 0644));
  auto pub = read_text_file(dir + "/node.pub");
  ASSERT_TRUE(pub);
  EXPECT_EQ(*pub, "b");
  EXPECT_FALSE(read_text_file(dir + "/missing"));
  EXPECT_FALSE(read_text_file(dir));  // a directory
  std::system(("rm -rf '" + dir + "'").c_str());
}

TEST(Trust, FormatsRfc3339) {
  EXPECT_EQ(format_rfc3339(UnixTime{}), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_rfc3339(kNow), "2027-01-15T08:00:00Z");
}

}  // namespace
