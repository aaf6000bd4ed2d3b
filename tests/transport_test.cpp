// weft::transport: the seal and keyring, node identity keys, UDP with the ICMP error queue, and
// the ZeroMQ reliable channel (real sockets on 127.0.0.1, port 0; waits are bounded polls).

#include <gtest/gtest.h>
#include <poll.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "weft/transport/identity.h"
#include "weft/transport/keyring.h"
#include "weft/transport/reliable.h"
#include "weft/transport/udp.h"

namespace weft::transport {
namespace {

using Bytes = std::vector<std::byte>;
using std::chrono::milliseconds;

Bytes bytes_of(std::string_view s) {
  Bytes out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

Bytes pattern(std::size_t n, std::uint8_t seed = 7) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return out;
}

Key counting_key(std::uint8_t first = 0) {
  Key k{};
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<unsigned char>(first + i);
  return k;
}

Keyring ring_with(const Key& k) {
  Keyring r;
  r.install(k);
  return r;
}

Bytes seal(const Keyring& r, Purpose p, std::span<const std::byte> plain) {
  Bytes out;
  r.seal(p, plain, out);
  return out;
}

// ---- keys ----

TEST(KeyTest, KeyIdIsBlake2bOfLabelAndKey) {
  // Golden values from Python: hashlib.blake2b(b"weft cluster key id" + key, digest_size=32)[:4].
  EXPECT_EQ(key_id(Key{}), KeyId{0x3a12cbb8});
  EXPECT_EQ(key_id(counting_key()), KeyId{0x99c0a22c});
  EXPECT_EQ(format_key_id(0x0000abcd), "0000abcd");
  EXPECT_EQ(format_key_id(key_id(counting_key())), "99c0a22c");
}

TEST(KeyTest, FormatAndParseRoundTrip) {
  EXPECT_EQ(format_key(counting_key()), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
  for (int i = 0; i < 20; ++i) {
    const Key k = generate_key();
    const std::string text = format_key(k);
    EXPECT_EQ(text.size(), std::size_t{44});
    auto back = parse_key(text);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, k);
  }
}

TEST(KeyTest, ParseRejectsBadInput) {
  const std::string good = format_key(counting_key());
  EXPECT_FALSE(parse_key(""));
  EXPECT_FALSE(parse_key(good.substr(0, 43)));  // wrong length
  EXPECT_FALSE(parse_key(good + "AAAA"));
  EXPECT_FALSE(parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));  // 44 characters, 33 bytes
  EXPECT_FALSE(parse_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="));  // 44 characters, 31 bytes
  std::string bad = good;
  bad[5] = '!';
  EXPECT_FALSE(parse_key(bad));
  std::string url = good;
  url[3] = '-';  // URL-safe alphabet is not the standard one
  EXPECT_FALSE(parse_key(url));
  std::string spaced = " " + good.substr(1);
  EXPECT_FALSE(parse_key(spaced));
  // Non-zero padding bits: not the canonical encoding of any key.
  std::string noncanon = good;
  noncanon[42] = '9';  // '8' (111100) becomes 111101: the two spare bits are not zero
  EXPECT_FALSE(parse_key(noncanon));
  auto e = parse_key("abc");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("44"), std::string::npos) << e.error().message;
}

TEST(KeyTest, GeneratedKeysDiffer) { EXPECT_NE(generate_key(), generate_key()); }

// ---- seal ----

TEST(SealTest, RoundTripBothPurposes) {
  const Keyring r = ring_with(counting_key());
  for (Purpose p : {Purpose::kDatagram, Purpose::kStream}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{100}, std::size_t{1400}}) {
      const Bytes plain = pattern(n);
      const Bytes sealed = seal(r, p, plain);
      ASSERT_EQ(sealed.size(), n + kSealOverhead);
      EXPECT_EQ(sealed[0], std::byte{kSealVersion});
      EXPECT_EQ(sealed[1], std::byte{0x99});  // key id, big-endian
      EXPECT_EQ(sealed[4], std::byte{0x2c});
      Bytes out = bytes_of("stale");
      auto ok = r.open(p, sealed, out);
      ASSERT_TRUE(ok) << to_string(ok.error());
      EXPECT_EQ(out, plain);
    }
  }
  EXPECT_EQ(r.overhead(), kSealOverhead);
}

TEST(SealTest, SealAppends) {
  const Keyring r = ring_with(counting_key());
  Bytes out = bytes_of("prefix");
  r.seal(Purpose::kDatagram, bytes_of("x"), out);
  ASSERT_EQ(out.size(), 6 + 1 + kSealOverhead);
  Bytes plain;
  ASSERT_TRUE(r.open(Purpose::kDatagram, std::span<const std::byte>(out).subspan(6), plain));
  EXPECT_EQ(plain, bytes_of("x"));
}

TEST(SealTest, WrongPurposeFails) {
  const Keyring r = ring_with(counting_key());
  const Bytes sealed = seal(r, Purpose::kDatagram, bytes_of("ping"));
  Bytes out;
  auto res = r.open(Purpose::kStream, sealed, out);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error(), OpenError::kAuthFailed);
  EXPECT_TRUE(out.empty());
  const Bytes stream = seal(r, Purpose::kStream, bytes_of("push-pull"));
  auto res2 = r.open(Purpose::kDatagram, stream, out);
  ASSERT_FALSE(res2);
  EXPECT_EQ(res2.error(), OpenError::kAuthFailed);
}

TEST(SealTest, EverySingleBitFlipFails) {
  const Keyring r = ring_with(counting_key());
  const Bytes sealed = seal(r, Purpose::kDatagram, pattern(40));
  std::array<int, kOpenErrorCount> seen{};
  Bytes out;
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      Bytes bad = sealed;
      bad[i] ^= static_cast<std::byte>(1u << bit);
      auto res = r.open(Purpose::kDatagram, bad, out);
      ASSERT_FALSE(res) << "byte " << i << " bit " << bit;
      EXPECT_TRUE(out.empty());
      ++seen[static_cast<std::size_t>(res.error())];
      if (i >= 5) {
        EXPECT_EQ(res.error(), OpenError::kAuthFailed) << "byte " << i << " bit " << bit;
      }
    }
  }
  EXPECT_EQ(seen[static_cast<std::size_t>(OpenError::kPlaintext)], 1);  // 0x01 -> 0x00
  EXPECT_EQ(seen[static_cast<std::size_t>(OpenError::kBadVersion)], 7);
  EXPECT_EQ(seen[static_cast<std::size_t>(OpenError::kUnknownKey)], 32);  // key id bits
  EXPECT_EQ(seen[static_cast<std::size_t>(OpenError::kAuthFailed)],
            static_cast<int>((sealed.size() - 5) * 8));
}

TEST(SealTest, TruncationsFailWithoutCrash) {
  const Keyring r = ring_with(counting_key());
  const Bytes sealed = seal(r, Purpose::kStream, pattern(64));
  Bytes out;
  for (std::size_t n = 0; n < sealed.size(); ++n) {
    auto res = r.open(Purpose::kStream, std::span<const std::byte>(sealed).first(n), out);
    ASSERT_FALSE(res) << n;
    if (n < kSealOverhead) {
      EXPECT_EQ(res.error(), OpenError::kTooShort) << n;
    } else {
      EXPECT_EQ(res.error(), OpenError::kAuthFailed) << n;
    }
  }
  // An extra byte is tampering too.
  Bytes longer = sealed;
  longer.push_back(std::byte{0});
  auto res = r.open(Purpose::kStream, longer, out);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error(), OpenError::kAuthFailed);
}

TEST(SealTest, UnknownKeyId) {
  const Bytes sealed = seal(ring_with(counting_key(0)), Purpose::kDatagram, bytes_of("hi"));
  const Keyring other = ring_with(counting_key(100));
  Bytes out;
  auto res = other.open(Purpose::kDatagram, sealed, out);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error(), OpenError::kUnknownKey);
}

TEST(SealTest, PlaintextModeAndMismatches) {
  const Keyring plain;
  EXPECT_TRUE(plain.plaintext());
  EXPECT_EQ(plain.overhead(), std::size_t{1});
  EXPECT_FALSE(plain.primary());
  const Bytes wrapped = seal(plain, Purpose::kDatagram, bytes_of("abc"));
  EXPECT_EQ(wrapped, (Bytes{std::byte{0}, std::byte{'a'}, std::byte{'b'}, std::byte{'c'}}));
  Bytes out;
  ASSERT_TRUE(plain.open(Purpose::kDatagram, wrapped, out));
  EXPECT_EQ(out, bytes_of("abc"));
  ASSERT_TRUE(plain.open(Purpose::kStream, Bytes{std::byte{0}}, out));
  EXPECT_TRUE(out.empty());

  const Keyring keyed = ring_with(counting_key());
  auto r1 = keyed.open(Purpose::kDatagram, wrapped, out);
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error(), OpenError::kPlaintext);

  const Bytes sealed = seal(keyed, Purpose::kDatagram, bytes_of("abc"));
  auto r2 = plain.open(Purpose::kDatagram, sealed, out);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error(), OpenError::kSealedNoKey);

  for (const Keyring* r : {&plain, &keyed}) {
    auto r3 = r->open(Purpose::kDatagram, Bytes{std::byte{2}, std::byte{0}}, out);
    ASSERT_FALSE(r3);
    EXPECT_EQ(r3.error(), OpenError::kBadVersion);
    auto r4 = r->open(Purpose::kDatagram, Bytes{}, out);
    ASSERT_FALSE(r4);
    EXPECT_EQ(r4.error(), OpenError::kTooShort);
  }
  EXPECT_STREQ(to_string(OpenError::kSealedNoKey), "sealed_no_key");
  EXPECT_STREQ(to_string(OpenError::kAuthFailed), "auth_failed");
}

TEST(SealTest, NoncesDiffer) {
  const Keyring r = ring_with(counting_key());
  const Bytes plain = bytes_of("same every time");
  std::set<Bytes> nonces;
  std::set<Bytes> sealed_set;
  for (int i = 0; i < 64; ++i) {
    const Bytes s = seal(r, Purpose::kDatagram, plain);
    nonces.insert(Bytes(s.begin() + 5, s.begin() + 29));
    sealed_set.insert(s);
  }
  EXPECT_EQ(nonces.size(), std::size_t{64});
  EXPECT_EQ(sealed_set.size(), std::size_t{64});
}

// ---- keyring ----

TEST(KeyringTest, RotationWithTwoKeys) {
  const Key a = counting_key(0);
  const Key b = counting_key(50);
  Keyring ab;
  ab.install(a);
  ab.install(b);
  EXPECT_EQ(ab.primary(), key_id(a));  // first installed is primary
  const Bytes by_a = seal(ab, Purpose::kDatagram, bytes_of("from a"));
  Bytes out;

  const Keyring only_b = ring_with(b);
  auto res = only_b.open(Purpose::kDatagram, by_a, out);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error(), OpenError::kUnknownKey);

  const Bytes by_b = seal(only_b, Purpose::kDatagram, bytes_of("from b"));
  Keyring ba;
  ba.install(a);
  ba.install(b);
  ASSERT_TRUE(ba.use(key_id(b)));
  EXPECT_EQ(ba.primary(), key_id(b));
  ASSERT_TRUE(ba.open(Purpose::kDatagram, by_a, out));
  EXPECT_EQ(out, bytes_of("from a"));
  ASSERT_TRUE(ba.open(Purpose::kDatagram, by_b, out));
  EXPECT_EQ(out, bytes_of("from b"));
  // After use(), ba seals with b: a ring with only b opens it.
  const Bytes by_ba = seal(ba, Purpose::kStream, bytes_of("rotated"));
  ASSERT_TRUE(only_b.open(Purpose::kStream, by_ba, out));
  EXPECT_EQ(out, bytes_of("rotated"));
}

TEST(KeyringTest, UseRemoveAndOrder) {
  const Key a = counting_key(0);
  const Key b = counting_key(50);
  const Key c = counting_key(150);
  Keyring r;
  r.install(a);
  r.install(b);
  r.install(c);
  r.install(b);  // no-op
  EXPECT_EQ(r.ids(), (std::vector<KeyId>{key_id(a), key_id(b), key_id(c)}));
  EXPECT_FALSE(r.use(key_id(counting_key(99))));
  EXPECT_EQ(r.primary(), key_id(a));

  ASSERT_TRUE(r.use(key_id(c)));
  EXPECT_EQ(r.ids(), (std::vector<KeyId>{key_id(c), key_id(a), key_id(b)}));
  EXPECT_EQ(r.keys(), (std::vector<Key>{c, a, b}));

  auto rm_primary = r.remove(key_id(c));
  ASSERT_FALSE(rm_primary);
  EXPECT_NE(rm_primary.error().message.find("primary"), std::string::npos);
  EXPECT_FALSE(r.remove(key_id(counting_key(99))));

  ASSERT_TRUE(r.remove(key_id(a)));  // before the primary: the primary index moves down
  EXPECT_EQ(r.primary(), key_id(c));
  EXPECT_EQ(r.ids(), (std::vector<KeyId>{key_id(c), key_id(b)}));
  EXPECT_EQ(r.find(key_id(a)), nullptr);
  ASSERT_NE(r.find(key_id(b)), nullptr);
  EXPECT_EQ(*r.find(key_id(b)), b);

  Bytes out;
  const Bytes sealed = seal(r, Purpose::kDatagram, bytes_of("c seals"));
  auto opened = ring_with(c).open(Purpose::kDatagram, sealed, out);
  ASSERT_TRUE(opened);

  ASSERT_TRUE(r.remove(key_id(b)));
  EXPECT_EQ(r.ids(), (std::vector<KeyId>{key_id(c)}));
  EXPECT_FALSE(r.remove(key_id(c)));  // the last key is the primary
  EXPECT_FALSE(r.plaintext());
}

TEST(KeyringTest, CopiesAndMovesKeepWorking) {
  Keyring r;
  for (std::uint8_t i = 0; i < 10; ++i) r.install(counting_key(static_cast<std::uint8_t>(i * 20)));
  ASSERT_TRUE(r.use(key_id(counting_key(60))));
  const Bytes sealed = seal(r, Purpose::kDatagram, bytes_of("x"));
  Keyring copy = r;
  Keyring assigned = ring_with(counting_key(1));
  assigned = copy;
  Keyring moved = std::move(copy);
  Keyring move_assigned;
  move_assigned = std::move(moved);
  for (const Keyring* k : {&r, &assigned, &move_assigned}) {
    Bytes out;
    ASSERT_TRUE(k->open(Purpose::kDatagram, sealed, out));
    EXPECT_EQ(k->ids(), r.ids());
  }
}

// ---- identity ----

TEST(IdentityTest, GenerateAndCheck) {
  const NodeIdentity a = NodeIdentity::generate();
  const NodeIdentity b = NodeIdentity::generate();
  EXPECT_TRUE(a.check());
  EXPECT_TRUE(b.check());
  EXPECT_NE(a.sign_pk, b.sign_pk);
  EXPECT_NE(a.kx_pk, b.kx_pk);
  EXPECT_NE(a.sign_pk, a.kx_pk);
  const std::string fp = fingerprint(a);
  EXPECT_EQ(fp.size(), std::size_t{16});
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(fp, fingerprint(b));
}

TEST(IdentityTest, TamperedKeysFailCheck) {
  const NodeIdentity good = NodeIdentity::generate();
  for (std::size_t i : {std::size_t{0}, std::size_t{31}, std::size_t{32}, std::size_t{63}}) {
    NodeIdentity bad = good;
    bad.sign_sk[i] ^= 0x01;
    EXPECT_FALSE(bad.check()) << "sign_sk byte " << i;
  }
  NodeIdentity bad_pk = good;
  bad_pk.sign_pk[3] ^= 0x80;
  EXPECT_FALSE(bad_pk.check());
  NodeIdentity bad_kx = good;
  bad_kx.kx_sk[10] ^= 0x04;
  EXPECT_FALSE(bad_kx.check());
  NodeIdentity bad_kx_pk = good;
  bad_kx_pk.kx_pk[0] ^= 0x01;
  auto res = bad_kx_pk.check();
  ASSERT_FALSE(res);
  EXPECT_NE(res.error().message.find("key-exchange"), std::string::npos);
  EXPECT_FALSE(NodeIdentity{}.check());
}

// ---- UDP ----

const Endpoint kLoopback = Endpoint::v4(127, 0, 0, 1, 0);

// Waits (bounded) for `events` or POLLERR on fd; returns the revents.
short wait_fd(int fd, short events, milliseconds timeout = milliseconds(2000)) {
  pollfd p{fd, events, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return 0;
  return p.revents;
}

UdpSocket must_bind(const Endpoint& e) {
  auto s = UdpSocket::bind(e);
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : UdpSocket{};
}

TEST(UdpTest, SendAndReceive) {
  UdpSocket a = must_bind(kLoopback);
  UdpSocket b = must_bind(kLoopback);
  ASSERT_GE(a.fd(), 0);
  ASSERT_NE(a.local().port, 0);
  ASSERT_NE(a.local().port, b.local().port);
  Bytes buf;
  EXPECT_FALSE(b.recv_from(buf, 1500));  // non-blocking, nothing waiting

  ASSERT_TRUE(a.send_to(b.local(), bytes_of("ping")));
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  auto from = b.recv_from(buf, 1500);
  ASSERT_TRUE(from);
  EXPECT_EQ(*from, a.local());
  EXPECT_EQ(buf, bytes_of("ping"));
  EXPECT_FALSE(b.recv_from(buf, 1500));
  EXPECT_EQ(a.stats().sent, 1u);
  EXPECT_EQ(b.stats().received, 1u);

  const Bytes big = pattern(1400);
  ASSERT_TRUE(b.send_to(a.local(), big));
  ASSERT_TRUE(wait_fd(a.fd(), POLLIN) & POLLIN);
  ASSERT_TRUE(a.recv_from(buf, 1400));  // exactly the buffer size is not truncation
  EXPECT_EQ(buf, big);
}

// recv_into reads into caller-owned room without resizing it (the agent's loop keeps one 64 KiB
// buffer instead of zero-filling it per datagram): the length comes back separately, and a
// datagram longer than the room is dropped like recv_from's.
TEST(UdpTest, RecvIntoFillsTheRoomAndReportsTheLength) {
  UdpSocket a = must_bind(kLoopback);
  UdpSocket b = must_bind(kLoopback);
  Bytes room(64, std::byte{0xee});
  std::size_t n = 99;
  EXPECT_FALSE(b.recv_into(room, n));  // nothing waiting
  ASSERT_TRUE(a.send_to(b.local(), pattern(100)));  // longer than the room: dropped
  ASSERT_TRUE(a.send_to(b.local(), bytes_of("ping")));
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  auto from = b.recv_into(room, n);
  ASSERT_TRUE(from);
  EXPECT_EQ(*from, a.local());
  ASSERT_EQ(n, 4u);
  EXPECT_EQ(Bytes(room.begin(), room.begin() + 4), bytes_of("ping"));
  EXPECT_EQ(room.size(), 64u);
  EXPECT_EQ(b.stats().truncated, 1u);
  ASSERT_TRUE(a.send_to(b.local(), pattern(64)));  // exactly the room
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  ASSERT_TRUE(b.recv_into(room, n));
  EXPECT_EQ(n, 64u);
  EXPECT_EQ(room, pattern(64));
  EXPECT_FALSE(b.recv_into(room, n));
}

TEST(UdpTest, TruncatedDatagramsAreDroppedAndCounted) {
  UdpSocket a = must_bind(kLoopback);
  UdpSocket b = must_bind(kLoopback);
  ASSERT_TRUE(a.send_to(b.local(), pattern(100)));
  ASSERT_TRUE(a.send_to(b.local(), bytes_of("small")));
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  Bytes buf;
  auto from = b.recv_from(buf, 10);  // skips the 100-byte datagram, returns the next
  ASSERT_TRUE(from);
  EXPECT_EQ(buf, bytes_of("small"));
  EXPECT_EQ(b.stats().truncated, 1u);
  EXPECT_EQ(b.stats().received, 1u);

  ASSERT_TRUE(a.send_to(b.local(), pattern(11)));
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  EXPECT_FALSE(b.recv_from(buf, 10));
  EXPECT_EQ(b.stats().truncated, 2u);
}

// A port nobody listens on: bound, noted, closed.
Endpoint dead_udp_endpoint(const Endpoint& where) {
  UdpSocket s = must_bind(where);
  return s.local();
}

TEST(UdpTest, PortUnreachableReachesTheErrorQueue) {
  UdpSocket a = must_bind(kLoopback);
  const Endpoint dead = dead_udp_endpoint(kLoopback);
  EXPECT_FALSE(a.recv_error());
  ASSERT_TRUE(a.send_to(dead, bytes_of("anyone?")));
  ASSERT_TRUE(wait_fd(a.fd(), 0) & POLLERR) << "no ICMP error within 2 s";
  auto err = a.recv_error();
  ASSERT_TRUE(err);
  EXPECT_EQ(err->to, dead);
  EXPECT_TRUE(err->port);
  EXPECT_EQ(a.stats().unreachable, 1u);
  EXPECT_FALSE(a.recv_error());
}

TEST(UdpTest, PendingIcmpErrorDoesNotEatTheNextDatagram) {
  UdpSocket a = must_bind(kLoopback);
  UdpSocket b = must_bind(kLoopback);
  const Endpoint dead = dead_udp_endpoint(kLoopback);
  ASSERT_TRUE(a.send_to(dead, bytes_of("anyone?")));
  ASSERT_TRUE(wait_fd(a.fd(), 0) & POLLERR);
  // The socket's error slot now holds ECONNREFUSED: the next send fails once and is retried.
  ASSERT_TRUE(a.send_to(b.local(), bytes_of("alive")));
  EXPECT_EQ(a.stats().send_retried, 1u);
  EXPECT_EQ(a.stats().send_errors, 0u);
  EXPECT_EQ(a.stats().sent, 2u);
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  Bytes buf;
  ASSERT_TRUE(b.recv_from(buf, 100));
  EXPECT_EQ(buf, bytes_of("alive"));
  // The report itself is still in the error queue.
  auto err = a.recv_error();
  ASSERT_TRUE(err);
  EXPECT_EQ(err->to, dead);
}

TEST(UdpTest, PendingIcmpErrorDoesNotHideReceivedDatagrams) {
  UdpSocket a = must_bind(kLoopback);
  UdpSocket b = must_bind(kLoopback);
  const Endpoint dead = dead_udp_endpoint(kLoopback);
  ASSERT_TRUE(a.send_to(dead, bytes_of("anyone?")));
  ASSERT_TRUE(wait_fd(a.fd(), 0) & POLLERR);
  ASSERT_TRUE(b.send_to(a.local(), bytes_of("hello")));
  ASSERT_TRUE(wait_fd(a.fd(), POLLIN) & POLLIN);
  Bytes buf;
  auto from = a.recv_from(buf, 100);
  ASSERT_TRUE(from);
  EXPECT_EQ(buf, bytes_of("hello"));
}

TEST(UdpTest, BindErrors) {
  UdpSocket a = must_bind(kLoopback);
  auto again = UdpSocket::bind(a.local());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message, "cannot bind udp " + a.local().to_string() + ": Address already in use");
  auto v6 = Endpoint::parse("[::1]:9");
  ASSERT_TRUE(v6);
  EXPECT_FALSE(a.send_to(*v6, bytes_of("x")));  // a v6 peer from a v4 socket
  EXPECT_EQ(a.stats().send_errors, 1u);
}

TEST(UdpTest, MoveKeepsTheSocket) {
  UdpSocket a = must_bind(kLoopback);
  const int fd = a.fd();
  UdpSocket b = std::move(a);
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(a.fd(), -1);  // NOLINT(bugprone-use-after-move)
  UdpSocket c = must_bind(kLoopback);
  c = std::move(b);
  EXPECT_EQ(c.fd(), fd);
}

TEST(UdpTest, Ipv6LoopbackAndPortUnreachable) {
  auto lo6 = Endpoint::parse("[::1]:0");
  ASSERT_TRUE(lo6);
  auto a = UdpSocket::bind(*lo6);
  if (!a) GTEST_SKIP() << "no IPv6 loopback: " << a.error().message;
  UdpSocket b = must_bind(*lo6);
  ASSERT_TRUE(a->send_to(b.local(), bytes_of("v6")));
  ASSERT_TRUE(wait_fd(b.fd(), POLLIN) & POLLIN);
  Bytes buf;
  auto from = b.recv_from(buf, 100);
  ASSERT_TRUE(from);
  EXPECT_EQ(*from, a->local());
  EXPECT_EQ(from->family, Endpoint::Family::kV6);
  EXPECT_EQ(buf, bytes_of("v6"));

  const Endpoint dead = dead_udp_endpoint(*lo6);
  ASSERT_TRUE(a->send_to(dead, bytes_of("anyone?")));
  ASSERT_TRUE(wait_fd(a->fd(), 0) & POLLERR);
  auto err = a->recv_error();
  ASSERT_TRUE(err);
  EXPECT_EQ(err->to, dead);
  EXPECT_TRUE(err->port);
}

// ---- reliable channel ----

TimePoint at(milliseconds t) { return TimePoint{} + t; }

ReliableChannel must_bind(zmq::context_t& ctx, const Endpoint& e, ReliableOptions opts = {}) {
  auto ch = ReliableChannel::bind(ctx, e, opts);
  EXPECT_TRUE(ch) << ch.error().message;
  return ch ? std::move(*ch) : ReliableChannel{};
}

// Polls the ROUTER up to `tries` times 100 ms apart; the first message received, if any.
std::optional<Bytes> recv_within(ReliableChannel& ch, int tries = 20) {
  for (int i = 0; i < tries; ++i) {
    if (auto m = ch.recv()) return m;
    zmq::pollitem_t item{ch.socket().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, milliseconds(100));
  }
  return ch.recv();
}

TEST(ReliableTest, SendsBytesIntact) {
  zmq::context_t ctx;
  ReliableChannel a = must_bind(ctx, kLoopback);
  ReliableChannel b = must_bind(ctx, kLoopback);
  ASSERT_NE(a.local().port, 0);
  ASSERT_NE(a.local().port, b.local().port);
  EXPECT_EQ(a.local().ip, kLoopback.ip);
  EXPECT_FALSE(b.recv());

  const Bytes payload = pattern(100000, 3);
  ASSERT_TRUE(a.send(at(milliseconds(0)), b.local(), payload));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(a.send(at(milliseconds(1)), b.local(), pattern(10, static_cast<std::uint8_t>(i))));
  }
  auto m = recv_within(b);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, payload);
  for (int i = 0; i < 5; ++i) {  // in order
    auto next = recv_within(b);
    ASSERT_TRUE(next);
    EXPECT_EQ(*next, pattern(10, static_cast<std::uint8_t>(i)));
  }
  EXPECT_FALSE(b.recv());
  EXPECT_EQ(a.stats().sent, 6u);
  EXPECT_EQ(a.stats().connects, 1u);
  EXPECT_EQ(a.peers(), std::size_t{1});
  EXPECT_EQ(b.stats().received, 6u);
  EXPECT_EQ(b.stats().recv_skipped, 0u);
}

TEST(ReliableTest, OversizedMessageIsNotDeliveredAndTheReceiverKeepsWorking) {
  zmq::context_t ctx;
  ReliableOptions small{};
  small.max_message_bytes = 1024;
  small.reconnect_interval = milliseconds(50);
  ReliableChannel a = must_bind(ctx, kLoopback, small);
  ReliableChannel b = must_bind(ctx, kLoopback, small);
  ASSERT_TRUE(a.send(at(milliseconds(0)), b.local(), pattern(4096)));
  EXPECT_FALSE(recv_within(b, 3));
  // The ROUTER dropped that connection; the DEALER reconnects and later messages arrive. Messages
  // written into the dropped connection are lost, so the sender retries as the protocol would.
  std::optional<Bytes> got;
  for (int i = 0; i < 30 && !got; ++i) {
    ASSERT_TRUE(a.send(at(milliseconds(i)), b.local(), pattern(1000)));
    got = recv_within(b, 1);
  }
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, pattern(1000));
  while (auto extra = b.recv()) EXPECT_EQ(*extra, pattern(1000));
}

TEST(ReliableTest, IdleDealersAreClosed) {
  zmq::context_t ctx;
  ReliableOptions opts{};
  opts.idle_close = std::chrono::seconds(15);
  ReliableChannel a = must_bind(ctx, kLoopback, opts);
  ReliableChannel b = must_bind(ctx, kLoopback);
  ReliableChannel c = must_bind(ctx, kLoopback);
  const TimePoint t0 = at(milliseconds(1000));
  EXPECT_EQ(a.close_idle(t0), t0 + std::chrono::seconds(15));  // nothing open
  ASSERT_TRUE(a.send(t0, b.local(), bytes_of("b")));
  ASSERT_TRUE(a.send(t0 + std::chrono::seconds(5), c.local(), bytes_of("c")));
  EXPECT_EQ(a.peers(), std::size_t{2});

  EXPECT_EQ(a.close_idle(t0 + std::chrono::seconds(14)), t0 + std::chrono::seconds(15));
  EXPECT_EQ(a.peers(), std::size_t{2});
  EXPECT_EQ(a.close_idle(t0 + std::chrono::seconds(15)), t0 + std::chrono::seconds(20));
  EXPECT_EQ(a.peers(), std::size_t{1});
  EXPECT_EQ(a.stats().idle_closed, 1u);
  EXPECT_EQ(a.close_idle(t0 + std::chrono::seconds(20)), t0 + std::chrono::seconds(35));
  EXPECT_EQ(a.peers(), std::size_t{0});
  EXPECT_EQ(a.stats().idle_closed, 2u);

  // A closed peer is connected again on the next send.
  ASSERT_TRUE(a.send(t0 + std::chrono::seconds(30), b.local(), bytes_of("again")));
  EXPECT_EQ(a.stats().connects, 3u);
  auto m = recv_within(b);
  ASSERT_TRUE(m);
  if (*m == bytes_of("b")) m = recv_within(b);  // the first may or may not have made it
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, bytes_of("again"));
}

TEST(ReliableTest, SendToADeadPortNeitherBlocksNorThrows) {
  zmq::context_t ctx;
  Endpoint dead;
  {
    ReliableChannel gone = must_bind(ctx, kLoopback);
    dead = gone.local();
  }
  ReliableOptions opts{};
  opts.send_hwm = 16;
  ReliableChannel a = must_bind(ctx, kLoopback, opts);
  int accepted = 0;
  for (int i = 0; i < 200; ++i) accepted += a.send(at(milliseconds(i)), dead, pattern(100)) ? 1 : 0;
  EXPECT_EQ(a.stats().sent, static_cast<std::uint64_t>(accepted));
  EXPECT_EQ(a.stats().sent + a.stats().send_dropped, 200u);
  EXPECT_GT(a.stats().send_dropped, 0u);
  EXPECT_LE(a.stats().sent, 64u);  // bounded by the high-water mark, not by the loop
  EXPECT_EQ(a.stats().connects, 1u);
  EXPECT_EQ(a.stats().errors, 0u);
}

TEST(ReliableTest, BindConflictIsAClearError) {
  zmq::context_t ctx;
  ReliableChannel a = must_bind(ctx, kLoopback);
  auto again = ReliableChannel::bind(ctx, a.local());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message,
            "cannot bind tcp://127.0.0.1:" + std::to_string(a.local().port) + ": Address already in use");
}

TEST(ReliableTest, MalformedMessagesAreSkipped) {
  zmq::context_t ctx;
  ReliableChannel b = must_bind(ctx, kLoopback);
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect("tcp://127.0.0.1:" + std::to_string(b.local().port));
  ASSERT_TRUE(raw.send(zmq::str_buffer("part1"), zmq::send_flags::sndmore));
  ASSERT_TRUE(raw.send(zmq::str_buffer("part2"), zmq::send_flags::none));
  ASSERT_TRUE(raw.send(zmq::message_t(), zmq::send_flags::none));  // empty
  ASSERT_TRUE(raw.send(zmq::str_buffer("good"), zmq::send_flags::none));
  auto m = recv_within(b);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, bytes_of("good"));
  EXPECT_EQ(b.stats().recv_skipped, 2u);
  EXPECT_EQ(b.stats().received, 1u);
}

TEST(ReliableTest, EmptyAndDefaultChannels) {
  zmq::context_t ctx;
  ReliableChannel a = must_bind(ctx, kLoopback);
  EXPECT_FALSE(a.send(at(milliseconds(0)), a.local(), Bytes{}));
  EXPECT_EQ(a.stats().send_dropped, 1u);
  EXPECT_EQ(a.peers(), std::size_t{0});

  ReliableChannel none;
  EXPECT_FALSE(none.send(at(milliseconds(0)), a.local(), bytes_of("x")));
  EXPECT_FALSE(none.recv());
  EXPECT_EQ(none.peers(), std::size_t{0});
  EXPECT_EQ(none.stats().sent, 0u);
}

TEST(ReliableTest, Ipv6Loopback) {
  zmq::context_t ctx;
  auto lo6 = Endpoint::parse("[::1]:0");
  ASSERT_TRUE(lo6);
  auto b = ReliableChannel::bind(ctx, *lo6);
  if (!b) GTEST_SKIP() << "no IPv6 loopback: " << b.error().message;
  ReliableChannel a = must_bind(ctx, *lo6);
  ASSERT_NE(b->local().port, 0);
  ASSERT_TRUE(a.send(at(milliseconds(0)), b->local(), bytes_of("over v6")));
  auto m = recv_within(*b);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, bytes_of("over v6"));
}

}  // namespace
}  // namespace weft::transport
