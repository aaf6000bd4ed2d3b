// Certificate revocation lists (transport/revocation.h): sign/verify, the version and cluster
// checks, cross-document signatures, malformed inputs.

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include <cstring>

#include "trust_envelope.h"
#include "weft/transport/revocation.h"

namespace {

using namespace weft::transport;

RevocationList sample(std::uint64_t version) {
  RevocationList l;
  l.cluster = "default";
  l.version = version;
  IssuerId other{};
  other.fill(0x42);
  l.revoked = {RevokedCert{other, 7}, RevokedCert{other, 3}, RevokedCert{other, 7}};
  return l;
}

std::vector<SignPublicKey> trusted(const OperatorKey& op) { return {op.public_key()}; }

using weft::transport::test::pack_envelope;

TEST(Revocation, SignSortsDedupsAndVerifies) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_revocations(sample(5), op);
  ASSERT_TRUE(env.has_value()) << env.error().message;
  auto v = verify_revocations(*env, trusted(op), "default", 4);
  ASSERT_TRUE(v.has_value()) << v.error().message;
  EXPECT_EQ(v->issuer, op.issuer());
  EXPECT_EQ(v->version, 5u);
  ASSERT_EQ(v->revoked.size(), 2u);
  EXPECT_EQ(v->revoked[0].serial, 3u);
  EXPECT_EQ(v->revoked[1].serial, 7u);
  IssuerId other{};
  other.fill(0x42);
  EXPECT_TRUE(v->contains(other, 7));
  EXPECT_FALSE(v->contains(other, 5));
  EXPECT_FALSE(v->contains(op.issuer(), 7));
  // The armor round-trips the exact bytes.
  auto un = unarmor_revocations(armor_revocations(*env));
  ASSERT_TRUE(un.has_value());
  EXPECT_EQ(*un, *env);
  // A policy armor is not a revocation list.
  EXPECT_FALSE(unarmor_revocations(armor_policy(*env)).has_value());
}

TEST(Revocation, RefusalsInOrder) {
  const OperatorKey op = OperatorKey::generate();
  const OperatorKey stranger = OperatorKey::generate();
  auto env = sign_revocations(sample(5), op);
  ASSERT_TRUE(env.has_value());
  auto kind = [](const weft::Result<RevocationList, PolicyFailure>& r) { return r ? PolicyError{} : r.error().kind; };
  EXPECT_EQ(kind(verify_revocations(*env, trusted(stranger), "default", std::nullopt)), PolicyError::kUnknownIssuer);
  EXPECT_EQ(kind(verify_revocations(*env, trusted(op), "prod", std::nullopt)), PolicyError::kWrongCluster);
  EXPECT_EQ(kind(verify_revocations(*env, trusted(op), "default", 5)), PolicyError::kNotNewer);
  EXPECT_EQ(kind(verify_revocations(*env, trusted(op), "default", 9)), PolicyError::kNotNewer);
  EXPECT_TRUE(verify_revocations(*env, trusted(op), "default", std::nullopt).has_value());
  // Two trusted roots (a rotation): either may sign.
  const std::vector<SignPublicKey> both{stranger.public_key(), op.public_key()};
  EXPECT_TRUE(verify_revocations(*env, both, "default", 1).has_value());
  PolicyStats st;
  st.count_error(PolicyError::kNotNewer);
  EXPECT_EQ(st.not_newer, 1u);
}

TEST(Revocation, EveryFlippedByteFails) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_revocations(sample(2), op);
  ASSERT_TRUE(env.has_value());
  for (std::size_t i = 0; i < env->size(); ++i) {
    auto bad = *env;
    bad[i] ^= std::byte{0x01};
    EXPECT_FALSE(verify_revocations(bad, trusted(op), "default", std::nullopt).has_value()) << "byte " << i;
  }
}

TEST(Revocation, OtherDocumentsSignaturesDoNotPass) {
  const OperatorKey op = OperatorKey::generate();
  auto env = sign_revocations(sample(2), op);
  ASSERT_TRUE(env.has_value());
  auto d = decode_revocations(*env);
  ASSERT_TRUE(d.has_value());
  // The same body signed under the policy and certificate contexts, or with no context.
  for (std::string_view ctx : {kPolicyContext, kCertContext, std::string_view{}}) {
    std::vector<std::byte> msg(ctx.size() + d->body.size());
    if (!ctx.empty()) std::memcpy(msg.data(), ctx.data(), ctx.size());  // an empty view may be null
    std::memcpy(msg.data() + ctx.size(), d->body.data(), d->body.size());
    const auto forged = pack_envelope(d->body, op.sign(msg));
    auto v = verify_revocations(forged, trusted(op), "default", std::nullopt);
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().kind, PolicyError::kBadSignature);
  }
}

TEST(Revocation, BadFieldsAreRefused) {
  const OperatorKey op = OperatorKey::generate();
  RevocationList l = sample(1);
  l.revoked.push_back(RevokedCert{op.issuer(), 0});
  EXPECT_FALSE(sign_revocations(l, op).has_value());  // serial 0
  l = sample(1);
  l.cluster = "bad name";
  EXPECT_FALSE(sign_revocations(l, op).has_value());
  l = sample(1);
  l.revoked.assign(kMaxRevokedCerts + 1, RevokedCert{});
  for (std::size_t i = 0; i < l.revoked.size(); ++i) l.revoked[i].serial = i + 1;
  EXPECT_FALSE(sign_revocations(l, op).has_value());
  // Unsorted entries on the wire are malformed (sign would have sorted them).
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(5);
  pk.pack_uint64(1);
  pk.pack_bin(8);
  pk.pack_bin_body(reinterpret_cast<const char*>(op.issuer().data()), 8);
  pk.pack(std::string("default"));
  pk.pack_uint64(3);
  pk.pack_array(2);
  for (std::uint64_t s : {9u, 4u}) {
    pk.pack_array(2);
    pk.pack_bin(8);
    pk.pack_bin_body(reinterpret_cast<const char*>(op.issuer().data()), 8);
    pk.pack_uint64(s);
  }
  const std::span<const std::byte> body(reinterpret_cast<const std::byte*>(b.data()), b.size());
  std::vector<std::byte> msg(kRevocationContext.size() + body.size());
  std::memcpy(msg.data(), kRevocationContext.data(), kRevocationContext.size());
  std::memcpy(msg.data() + kRevocationContext.size(), body.data(), body.size());
  auto v = verify_revocations(pack_envelope(body, op.sign(msg)), trusted(op), "default", std::nullopt);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().kind, PolicyError::kMalformed);
  EXPECT_NE(v.error().message.find("sorted"), std::string::npos) << v.error().message;
  // Garbage and truncations never verify and never crash.
  auto env = sign_revocations(sample(1), op);
  ASSERT_TRUE(env.has_value());
  for (std::size_t n = 0; n < env->size(); ++n) {
    EXPECT_FALSE(decode_revocations(std::span<const std::byte>(env->data(), n)).has_value()) << n;
  }
}

}  // namespace
