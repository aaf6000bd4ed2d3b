// Operator-signed cluster-key operations (transport/keyop.h): sign/verify, each refusal reason,
// tampering, documents of other kinds, malformed inputs, the replay guard.

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include <algorithm>
#include <cstring>

#include "trust_envelope.h"
#include "weft/transport/keyop.h"
#include "weft/transport/policy.h"
#include "weft/transport/revocation.h"

namespace {

using namespace weft::transport;
using namespace std::chrono_literals;

const UnixTime kNow{std::chrono::seconds(1'800'000'000)};

Key test_key(unsigned char fill) {
  Key k{};
  k.fill(fill);
  return k;
}

KeyOperation sample(KeyOpKind op = KeyOpKind::kInstall, const Key& key = test_key(7)) {
  KeyOperation k;
  k.cluster = "default";
  k.op = op;
  k.key_id = key_id(key);
  k.fingerprint = key_fingerprint(key);
  k.issued = kNow;
  k.expires = kNow + kDefaultKeyOpLifetime;
  k.nonce = random_key_op_nonce();
  return k;
}

KeyOpTarget target_of(KeyOpKind op = KeyOpKind::kInstall, const Key& key = test_key(7)) {
  return KeyOpTarget{op, key_id(key), key_fingerprint(key)};
}

std::vector<SignPublicKey> trusted(const OperatorKey& op) { return {op.public_key()}; }

using weft::transport::test::pack_envelope;

KeyOpError refusal(std::span<const std::byte> env, const OperatorKey& op, const KeyOpTarget& t,
                   UnixTime now = kNow, std::string_view cluster = "default") {
  auto v = verify_key_op(env, trusted(op), cluster, t, now);
  EXPECT_FALSE(v.has_value());
  return v ? KeyOpError::kUnsigned : v.error().kind;
}

TEST(KeyOp, SignVerifyAndArmorRoundTrip) {
  const OperatorKey op = OperatorKey::generate();
  const KeyOperation k = sample();
  auto env = sign_key_op(k, op);
  ASSERT_TRUE(env.has_value()) << env.error().message;
  EXPECT_LE(env->size(), kMaxKeyOpBytes);
  auto v = verify_key_op(*env, trusted(op), "default", target_of(), kNow + 1s);
  ASSERT_TRUE(v.has_value()) << v.error().message;
  KeyOperation want = k;
  want.issuer = op.issuer();
  EXPECT_EQ(*v, want);
  auto un = unarmor_key_op(armor_key_op(*env));
  ASSERT_TRUE(un.has_value());
  EXPECT_EQ(*un, *env);
  EXPECT_FALSE(unarmor_key_op(armor_policy(*env)).has_value());  // another label
  // The key itself appears nowhere in the document.
  const Key key = test_key(7);
  const auto* kb = reinterpret_cast<const std::byte*>(key.data());
  EXPECT_EQ(std::search(env->begin(), env->end(), kb, kb + key.size()), env->end());
}

TEST(KeyOp, UseAndRemoveMayNameTheKeyByIdOnly) {
  const OperatorKey op = OperatorKey::generate();
  KeyOperation k = sample(KeyOpKind::kUse);
  k.fingerprint.reset();
  auto env = sign_key_op(k, op);
  ASSERT_TRUE(env.has_value()) << env.error().message;
  EXPECT_TRUE(verify_key_op(*env, trusted(op), "default", target_of(KeyOpKind::kUse), kNow).has_value());
  // An install must carry the fingerprint.
  KeyOperation inst = sample();
  inst.fingerprint.reset();
  EXPECT_FALSE(sign_key_op(inst, op).has_value());
}

TEST(KeyOp, EachRefusalHasItsKind) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_key_op(sample(), op);
  ASSERT_TRUE(env.has_value());
  const OperatorKey other = OperatorKey::generate();
  EXPECT_EQ(refusal(*env, other, target_of()), KeyOpError::kUnknownIssuer);
  EXPECT_EQ(refusal(*env, op, target_of(), kNow, "prod"), KeyOpError::kWrongCluster);
  EXPECT_EQ(refusal(*env, op, target_of(), kNow - kKeyOpSkew - 1s), KeyOpError::kNotYetValid);
  EXPECT_TRUE(verify_key_op(*env, trusted(op), "default", target_of(), kNow - kKeyOpSkew).has_value());
  EXPECT_EQ(refusal(*env, op, target_of(), kNow + kDefaultKeyOpLifetime), KeyOpError::kExpired);
  EXPECT_TRUE(
      verify_key_op(*env, trusted(op), "default", target_of(), kNow + kDefaultKeyOpLifetime - 1s).has_value());
  EXPECT_EQ(refusal(*env, op, target_of(KeyOpKind::kUse)), KeyOpError::kWrongOperation);
  EXPECT_EQ(refusal(*env, op, target_of(KeyOpKind::kInstall, test_key(8))), KeyOpError::kWrongKey);
  // Same id, another key: the fingerprint tells them apart.
  KeyOpTarget t = target_of();
  t.fingerprint = key_fingerprint(test_key(9));
  EXPECT_EQ(refusal(*env, op, t), KeyOpError::kWrongKey);
  // Garbage.
  const std::vector<std::byte> junk(40, std::byte{0x91});
  EXPECT_EQ(refusal(junk, op, target_of()), KeyOpError::kMalformed);
  EXPECT_EQ(refusal({}, op, target_of()), KeyOpError::kMalformed);
}

TEST(KeyOp, TamperingBreaksTheSignature) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_key_op(sample(), op);
  ASSERT_TRUE(env.has_value());
  auto d = decode_key_op(*env);
  ASSERT_TRUE(d.has_value());
  int refused = 0;
  for (std::size_t i = 0; i < d->body.size(); ++i) {
    std::vector<std::byte> body = d->body;
    body[i] ^= std::byte{0x01};
    auto v = verify_key_op(pack_envelope(body, d->sig), trusted(op), "default", target_of(), kNow);
    EXPECT_FALSE(v.has_value()) << "byte " << i;
    if (!v) ++refused;
  }
  EXPECT_EQ(refused, static_cast<int>(d->body.size()));
  Signature sig = d->sig;
  sig[5] ^= 0x80;
  EXPECT_EQ(refusal(pack_envelope(d->body, sig), op, target_of()), KeyOpError::kBadSignature);
}

TEST(KeyOp, OtherDocumentsSignaturesDoNotPass) {
  // A policy or revocation list signature never passes as a key operation's (different contexts).
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_key_op(sample(), op);
  ASSERT_TRUE(env.has_value());
  auto d = decode_key_op(*env);
  ASSERT_TRUE(d.has_value());
  std::vector<std::byte> msg(kPolicyContext.size() + d->body.size());
  std::memcpy(msg.data(), kPolicyContext.data(), kPolicyContext.size());
  std::memcpy(msg.data() + kPolicyContext.size(), d->body.data(), d->body.size());
  EXPECT_EQ(refusal(pack_envelope(d->body, op.sign(msg)), op, target_of()), KeyOpError::kBadSignature);
  EXPECT_NE(kKeyOpContext, kPolicyContext);
  EXPECT_NE(kKeyOpContext, kRevocationContext);
}

TEST(KeyOp, FieldChecksRefuseBadDocuments) {
  const OperatorKey op = OperatorKey::generate();
  KeyOperation k = sample();
  k.expires = k.issued;
  EXPECT_FALSE(sign_key_op(k, op).has_value());
  k.expires = k.issued + kMaxKeyOpLifetime + 1s;
  EXPECT_FALSE(sign_key_op(k, op).has_value());
  k = sample();
  k.nonce = {};
  EXPECT_FALSE(sign_key_op(k, op).has_value());
  k = sample();
  k.cluster = "";
  EXPECT_FALSE(sign_key_op(k, op).has_value());
  k = sample();
  k.op = static_cast<KeyOpKind>(9);
  EXPECT_FALSE(sign_key_op(k, op).has_value());
}

TEST(KeyOp, EveryPrefixAndRandomBytesFailToDecodeWithoutThrowing) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_key_op(sample(), op);
  ASSERT_TRUE(env.has_value());
  for (std::size_t n = 0; n < env->size(); ++n) {
    EXPECT_FALSE(decode_key_op(std::span<const std::byte>(env->data(), n)).has_value()) << n;
  }
  std::uint32_t x = 12345;
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::byte> b(static_cast<std::size_t>(round % 200));
    for (auto& c : b) {
      x = x * 1664525u + 1013904223u;
      c = static_cast<std::byte>(x >> 24);
    }
    if (!b.empty()) b[0] = std::byte{0x92};  // an array of two, like an envelope
    EXPECT_FALSE(decode_key_op(b).has_value());
  }
  EXPECT_STREQ(to_string(KeyOpError::kReplayed), "replayed");
  EXPECT_EQ(parse_key_op_kind("use"), KeyOpKind::kUse);
  EXPECT_FALSE(parse_key_op_kind("list").has_value());
}

TEST(KeyOpReplayGuard, RemembersNoncesUntilTheyExpire) {
  KeyOpReplayGuard g(2);
  const KeyOpNonce a = random_key_op_nonce();
  const KeyOpNonce b = random_key_op_nonce();
  const KeyOpNonce c = random_key_op_nonce();
  EXPECT_FALSE(g.seen(a, kNow));
  EXPECT_TRUE(g.record(a, kNow + 60s, kNow));
  EXPECT_TRUE(g.seen(a, kNow + 59s));
  EXPECT_FALSE(g.record(a, kNow + 60s, kNow + 1s));  // a replay
  EXPECT_TRUE(g.record(b, kNow + 120s, kNow));
  EXPECT_FALSE(g.record(c, kNow + 60s, kNow + 2s));  // full: refused, nothing forgotten early
  EXPECT_TRUE(g.seen(a, kNow + 2s));
  // At a's expiry it is forgotten (its document no longer verifies anyway): room again.
  EXPECT_FALSE(g.seen(a, kNow + 60s));
  EXPECT_TRUE(g.record(c, kNow + 100s, kNow + 60s));
  EXPECT_EQ(g.size(), 2u);
}

}  // namespace
