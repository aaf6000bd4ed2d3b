// The proxy under a trust root (issue 5; proxy.h, ProxyTrust): certificates in the handshake,
// the services they grant, policy decisions and rate limits, the policy rule's limits, and the
// re-checks of live sessions and connections. Proxies "a" (an app of service "client") and "b"
// (serving "web") on 127.0.0.1, certified by one operator key made here.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "proxy_harness.h"
#include "proxy_impl.h"  // the payload codecs (transport/src), for the hand-made initiator
#include "weft/transport/mux.h"
#include "weft/transport/noise.h"
#include "weft/transport/policy.h"
#include "weft/transport/proxy.h"
#include "weft/transport/record.h"
#include "weft/transport/trust.h"

namespace weft::transport {
namespace {

UnixTime unix_now() { return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()); }

struct CertSpec {
  std::vector<std::string> services{};
  std::optional<std::string> node{};            // default: the node's own name
  std::optional<KxPublicKey> kx{};              // default: the node's own kx key
  std::chrono::seconds not_before = -1h;        // relative to now
  std::chrono::seconds not_after = 1h;
  std::uint64_t serial = 0;                     // 0: random
};

std::vector<std::byte> cert_for(const Node& n, const OperatorKey& op, const CertSpec& spec) {
  NodeCert c;
  c.serial = spec.serial != 0 ? spec.serial : random_serial();
  c.node = spec.node.value_or(n.name);
  c.sign_pk = NodeIdentity::generate().sign_pk;
  c.kx_pk = spec.kx.value_or(n.kp.public_key);
  c.services = spec.services;
  c.not_before = unix_now() + spec.not_before;
  c.not_after = unix_now() + spec.not_after;
  auto r = sign_cert(c, op);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? *r : std::vector<std::byte>{};
}

std::uint64_t serial_of(std::span<const std::byte> envelope) {
  auto d = decode_cert(envelope);
  return d ? d->cert.serial : 0;
}

struct TrustSpec {
  std::vector<std::byte> own_cert{};
  std::shared_ptr<const Policy> policy{};
  std::set<std::pair<IssuerId, std::uint64_t>> revoked{};
  std::chrono::seconds skew = kDefaultCertSkew;
};

std::shared_ptr<const ProxyTrust> trust_of(const OperatorKey& op, TrustSpec spec) {
  auto t = std::make_shared<ProxyTrust>();
  t->operators = {op.public_key()};
  t->own_cert = std::move(spec.own_cert);
  t->policy = std::move(spec.policy);
  t->revoked = std::move(spec.revoked);
  t->skew = spec.skew;
  return t;
}

PolicyRule rule(std::string from, std::string to, PolicyAction action, std::optional<RateLimit> rate = std::nullopt) {
  PolicyRule r;
  r.from = std::move(from);
  r.to = std::move(to);
  r.action = action;
  r.rate = rate;
  return r;
}

std::shared_ptr<const Policy> policy_of(PolicyAction default_action, std::vector<PolicyRule> rules) {
  auto p = std::make_shared<Policy>();
  p->cluster = "default";
  p->version = 1;
  p->default_action = default_action;
  p->rules = std::move(rules);
  return p;
}

// Adds upstream `service` with source service `as`; returns its port.
std::uint16_t add_upstream_as(Node& a, const std::string& service, const std::string& as) {
  UpstreamConfig u;
  u.name = service;
  u.listen = Endpoint::v4(127, 0, 0, 1, 0);
  u.as = as;
  auto r = a.proxy->add_upstream(u);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return a.proxy->stats().listening[service].port;
}

// One app connection that must be refused: it ends (RST or EOF) without reaching a service.
void expect_refused(std::uint16_t port) {
  const int fd = dial(port);
  if (fd < 0) return;  // refused at connect: fine too
  send_all(fd, "hello", 5);  // may fail: the RST can come first
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
}

// An open connection through the proxies (one echo round trip done); -1 on failure.
int open_echo(std::uint16_t port) {
  const int fd = dial(port);
  if (fd < 0) return -1;
  char buf[4] = {};
  if (!send_all(fd, "ping", 4) || ::recv(fd, buf, 4, MSG_WAITALL) != 4 || std::memcmp(buf, "ping", 4) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// a ("client" app) -> b (serves "web" as an echo), both certified by one operator.
class TrustTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    pair("web", echo_.port());
    ASSERT_TRUE(a_.proxy && b_.proxy);
    a_cert_ = cert_for(a_, op_, {.services = {"client"}});
    b_cert_ = cert_for(b_, op_, {.services = {"web"}});
  }
  void trust(TrustSpec a, TrustSpec b) {
    a_.proxy->set_trust(trust_of(op_, std::move(a)));
    b_.proxy->set_trust(trust_of(op_, std::move(b)));
  }
  // Both sides certified; the policies as given.
  std::uint16_t certified(std::shared_ptr<const Policy> a_policy = nullptr,
                          std::shared_ptr<const Policy> b_policy = nullptr, const std::string& as = "client") {
    trust({.own_cert = a_cert_, .policy = std::move(a_policy)}, {.own_cert = b_cert_, .policy = std::move(b_policy)});
    return add_upstream_as(a_, "web", as);
  }
  // The handshake is refused by `refuser`: counted, the app's connection fails, nothing reaches
  // the service.
  void expect_handshake_refused(std::uint16_t port, Node& refuser) {
    expect_refused(port);
    ASSERT_TRUE(wait_until([&] { return refuser.proxy->stats().handshakes_failed >= 1; }));
    ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["web"].failures == 1; }));
    EXPECT_EQ(echo_.accepted.load(), 0);
    EXPECT_EQ(b_.proxy->stats().services.count("web"), 0u);
    EXPECT_EQ(refuser.proxy->stats().sessions_open, 0u);
  }

  TestService echo_{TestService::Mode::kEcho};
  OperatorKey op_ = OperatorKey::generate();
  std::vector<std::byte> a_cert_;
  std::vector<std::byte> b_cert_;
};

TEST_F(TrustTest, CertifiedPeersCarryTraffic) {
  const std::uint16_t port = certified();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(round_trip(port, "certified" + std::to_string(i)));
  const auto sa = a_.proxy->stats();
  const auto sb = b_.proxy->stats();
  EXPECT_EQ(sa.peer_certs.verified, 1u);  // one pooled session
  EXPECT_EQ(sb.peer_certs.verified, 1u);
  EXPECT_EQ(sa.handshakes_failed, 0u);
  EXPECT_EQ(sb.handshakes_failed, 0u);
  EXPECT_EQ(sb.services.at("web").connections, 3u);
  EXPECT_EQ(sb.policy.allowed, 0u);  // no policy: no decision counted
}

// With certificates the gossiped key no longer decides: b knows no key for "a" at all.
TEST_F(TrustTest, CertificateReplacesTheGossipedKey) {
  b_.proxy->set_routes(table({}, {}, {{"web", echo_.port()}}));
  const std::uint16_t port = certified();
  EXPECT_TRUE(round_trip(port, "no gossip key needed"));
}

TEST_F(TrustTest, ResponderWithoutCertificateIsRefused) {
  trust({.own_cert = a_cert_}, {});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, a_);
  EXPECT_EQ(a_.proxy->stats().certs_missing, 1u);
}

TEST_F(TrustTest, InitiatorWithoutTrustRootIsRefused) {
  b_.proxy->set_trust(trust_of(op_, {.own_cert = b_cert_}));  // a has none: sends no certificate
  const std::uint16_t port = add_upstream(a_, "web");
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().certs_missing == 1; }));
  EXPECT_EQ(b_.proxy->stats().handshakes_failed, 1u);
  EXPECT_EQ(echo_.accepted.load(), 0);
}

TEST_F(TrustTest, CertificateFromUnknownOperatorIsRefused) {
  const OperatorKey other = OperatorKey::generate();
  trust({.own_cert = cert_for(a_, other, {.services = {"client"}})}, {.own_cert = b_cert_});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, b_);
  EXPECT_EQ(b_.proxy->stats().peer_certs.unknown_issuer, 1u);
}

TEST_F(TrustTest, ExpiredCertificateIsRefused) {
  trust({.own_cert = cert_for(a_, op_, {.services = {"client"}, .not_before = -2h, .not_after = -1h})},
        {.own_cert = b_cert_});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, b_);
  EXPECT_EQ(b_.proxy->stats().peer_certs.expired, 1u);
}

// The responder's certificate is checked by the initiator just the same.
TEST_F(TrustTest, NotYetValidCertificateIsRefused) {
  trust({.own_cert = a_cert_}, {.own_cert = cert_for(b_, op_, {.services = {"web"}, .not_before = 1h, .not_after = 2h})});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, a_);
  EXPECT_EQ(a_.proxy->stats().peer_certs.not_yet_valid, 1u);
}

// Within the skew an almost valid certificate passes.
TEST_F(TrustTest, SkewToleratesSmallClockDifferences) {
  trust({.own_cert = cert_for(a_, op_, {.services = {"client"}, .not_before = 60s, .not_after = 2h})},
        {.own_cert = b_cert_, .skew = 120s});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  EXPECT_TRUE(round_trip(port, "within skew"));
}

TEST_F(TrustTest, CertificateForAnotherKeyIsRefused) {
  const NoiseKeyPair other = NoiseKeyPair::generate();
  trust({.own_cert = cert_for(a_, op_, {.services = {"client"}, .kx = other.public_key})}, {.own_cert = b_cert_});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, b_);
  EXPECT_EQ(b_.proxy->stats().certs_mismatched, 1u);
}

// b presents a valid certificate of another node (c): a dialled "b" and refuses it.
TEST_F(TrustTest, CertificateForAnotherNodeIsRefused) {
  trust({.own_cert = a_cert_}, {.own_cert = cert_for(b_, op_, {.services = {"web"}, .node = std::string("c")})});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, a_);
  EXPECT_EQ(a_.proxy->stats().certs_mismatched, 1u);
}

TEST_F(TrustTest, RevokedCertificateIsRefused) {
  trust({.own_cert = a_cert_}, {.own_cert = b_cert_, .revoked = {{op_.issuer(), serial_of(a_cert_)}}});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_handshake_refused(port, b_);
  EXPECT_EQ(b_.proxy->stats().certs_revoked, 1u);
}

// a's app claims a source service a's certificate does not grant: refused at a, no session.
TEST_F(TrustTest, SourceServiceNotGrantedIsRefusedEarly) {
  const std::uint16_t port = certified(nullptr, nullptr, "admin");
  expect_refused(port);
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.policy.not_granted, 1u);
  EXPECT_EQ(s.sessions_initiated, 0u);
  EXPECT_EQ(s.upstreams.at("web").failures, 1u);
}

// b's certificate does not grant "web": a does not open the stream (the instance failed); and
// b, asked anyway (a without trust checks is not possible here), would refuse it too.
TEST_F(TrustTest, DestinationNotGrantedByThePeerIsNotOpened) {
  trust({.own_cert = a_cert_}, {.own_cert = cert_for(b_, op_, {.services = {"api"}})});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["web"].failures == 1; }));
  EXPECT_EQ(a_.proxy->stats().policy.not_granted, 1u);
  EXPECT_EQ(b_.proxy->stats().streams_refused, 0u);
  EXPECT_EQ(echo_.accepted.load(), 0);
}

// Two instances, b's certificate does not grant "web": every connection ends up on c (those
// that tried b first are retried), and b never sees an OPEN.
TEST_F(TrustTest, InstanceNotGrantedIsSkippedForAnother) {
  Three t;
  t.b.proxy->set_routes(table({}, {&t.a}, {{"web", t.sb.port()}}));
  t.c.proxy->set_routes(table({}, {&t.a}, {{"web", t.sc.port()}}));
  t.a.proxy->set_routes(table({{"web", {instance(t.b), instance(t.c)}}}, {&t.b, &t.c}));
  t.a.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.a, op_, {.services = {"client"}})}));
  t.b.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.b, op_, {.services = {"api"}})}));
  t.c.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.c, op_, {.services = {"web"}})}));
  UpstreamConfig u;
  u.name = "web";
  u.listen = Endpoint::v4(127, 0, 0, 1, 0);
  u.balance = Balance::kRoundRobin;
  u.as = "client";
  ASSERT_TRUE(t.a.proxy->add_upstream(u).has_value());
  const std::uint16_t port = t.a.proxy->stats().listening["web"].port;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(round_trip(port, "g" + std::to_string(i)));
  EXPECT_EQ(t.sc.accepted.load(), 4);
  EXPECT_EQ(t.sb.accepted.load(), 0);
  const auto s = t.a.proxy->stats();
  EXPECT_GE(s.policy.not_granted, 1u);
  EXPECT_GE(s.upstreams.at("web").retries, 1u);
  EXPECT_EQ(s.upstreams.at("web").failures, 0u);
  EXPECT_EQ(t.b.proxy->stats().streams_refused, 0u);
}

// The responder's own certificate does not grant the destination: it refuses the OPEN. (a sees
// b's certificate, which grants "web"; b was handed another one for itself.)
TEST_F(TrustTest, ResponderRefusesAServiceItsCertificateDoesNotGrant) {
  auto b_trust = std::make_shared<ProxyTrust>(*trust_of(op_, {.own_cert = b_cert_}));
  trust({.own_cert = a_cert_}, {.own_cert = b_cert_});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  EXPECT_TRUE(round_trip(port, "granted"));
  // Now b's own certificate lists only "api": its next OPEN for "web" is refused.
  b_trust->own_cert = cert_for(b_, op_, {.services = {"api"}});
  b_.proxy->set_trust(b_trust);
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().streams_refused == 1; }));
  EXPECT_EQ(b_.proxy->stats().policy.not_granted, 1u);
  EXPECT_EQ(echo_.accepted.load(), 1);
}

// A hand-made initiator with `self`'s name and keys and `cert`: a real handshake with b (b must
// know nothing but its trust root), then one stream OPEN with `open` and "ping" + FIN on it.
// Returns "data" if bytes came back, "reset:<reason>" if b reset the stream, or what failed.
std::string raw_open(const Node& self, const Node& b, const std::vector<std::byte>& cert, const std::vector<std::byte>& open) {
  const int fd = dial(b.proxy->mesh_endpoint().port);
  if (fd < 0) return "connect";
  set_timeouts(fd, 5s);
  const auto* pro = reinterpret_cast<const std::byte*>(kMeshPrologue.data());
  auto hs = Handshake::initiator(self.kp, b.kp.public_key, std::span(pro, kMeshPrologue.size()));
  std::string result = "handshake";
  [&] {
    auto msg1 = hs.write_message(encode_hello({self.name, {Cipher::kXChaCha20Poly1305}, cert}));
    if (!msg1) return;
    // [u16 big-endian length][message], sized once (GCC 12 at -O2 misreads an insert after a
    // two-element initializer list as out of bounds).
    std::vector<std::byte> out(2 + msg1->size());
    out[0] = static_cast<std::byte>(msg1->size() >> 8);
    out[1] = static_cast<std::byte>(msg1->size() & 0xff);
    std::copy(msg1->begin(), msg1->end(), out.begin() + 2);
    if (!send_all(fd, out.data(), out.size())) return;
    std::array<std::byte, 2> len{};
    if (::recv(fd, len.data(), 2, MSG_WAITALL) != 2) return;
    std::vector<std::byte> msg2((std::to_integer<std::size_t>(len[0]) << 8) | std::to_integer<std::size_t>(len[1]));
    if (::recv(fd, msg2.data(), msg2.size(), MSG_WAITALL) != static_cast<ssize_t>(msg2.size())) return;
    auto accept = hs.read_message(msg2);
    if (!accept || !decode_accept(*accept)) return;
    auto keys = hs.split();
    if (!keys) return;
    RecordSealer sealer(Cipher::kXChaCha20Poly1305, keys->send_key(HandshakeRole::kInitiator));
    RecordOpener opener(Cipher::kXChaCha20Poly1305, keys->receive_key(HandshakeRole::kInitiator));
    MuxSession mux(MuxRole::kInitiator);
    auto id = mux.open_stream(open);
    if (!id) return;
    const char ping[] = "ping";
    (void)mux.write(*id, std::as_bytes(std::span(ping, 4)));
    mux.shutdown_write(*id);
    std::vector<std::byte> plain;
    mux.take_output(plain);
    out.clear();
    if (!sealer.seal_into(out, RecordType::kData, plain) || !send_all(fd, out.data(), out.size())) return;
    result = "no answer";
    std::vector<std::byte> buf(65536);
    for (;;) {
      const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r <= 0) return;
      plain.clear();
      if (!opener.feed(std::span(buf.data(), static_cast<std::size_t>(r)), plain) || !mux.on_bytes(plain)) return;
      for (auto& ev : mux.take_events()) {
        if (auto* rs = std::get_if<StreamReset>(&ev); rs != nullptr && rs->id == *id) {
          result = std::string("reset:") + to_string(rs->reason);
          return;
        }
        if (auto* d = std::get_if<StreamData>(&ev); d != nullptr && d->id == *id) {
          result = "data";
          return;
        }
      }
    }
  }();
  ::close(fd);
  return result;
}

// A malicious initiator claims a source service its certificate does not grant: the responder
// refuses the stream itself (an honest proxy would have refused early).
TEST_F(TrustTest, ResponderRefusesASourceServiceNotGranted) {
  trust({.own_cert = a_cert_}, {.own_cert = b_cert_});
  EXPECT_EQ(raw_open(a_, b_, a_cert_, encode_open("web", "admin")), std::string("reset:") + to_string(ResetReason::kPolicyDenied));
  EXPECT_EQ(b_.proxy->stats().policy.not_granted, 1u);
  EXPECT_EQ(b_.proxy->stats().streams_refused, 1u);
  EXPECT_EQ(echo_.accepted.load(), 0);
  // The same peer with the source its certificate grants, and anonymous, gets through.
  EXPECT_EQ(raw_open(a_, b_, a_cert_, encode_open("web", "client")), "data");
  EXPECT_EQ(raw_open(a_, b_, a_cert_, encode_open("web")), "data");
  EXPECT_EQ(b_.proxy->stats().peer_certs.verified, 3u);
}

// The responder's decision for client -> web under each kind of policy.
struct PolicyCase {
  const char* name = "";
  std::shared_ptr<const Policy> policy{};
  bool works = false;
  std::uint64_t PolicyCounters::*counter = nullptr;  // the one counter that moves on b
  std::string as = "client";
};

TEST_F(TrustTest, ResponderPolicyMatrix) {
  const std::vector<PolicyCase> cases = {
      {"allow rule", policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kAllow)}), true,
       &PolicyCounters::allowed},
      {"deny rule", policy_of(PolicyAction::kAllow, {rule("client", "web", PolicyAction::kDeny)}), false,
       &PolicyCounters::denied},
      {"deny beats allow", policy_of(PolicyAction::kAllow, {rule("*", "web", PolicyAction::kAllow), rule("client", "*", PolicyAction::kDeny)}),
       false, &PolicyCounters::denied},
      {"no rule, default deny", policy_of(PolicyAction::kDeny, {rule("other", "web", PolicyAction::kAllow)}), false,
       &PolicyCounters::denied},
      {"no rule, default allow", policy_of(PolicyAction::kAllow, {rule("other", "web", PolicyAction::kDeny)}), true,
       &PolicyCounters::allowed},
      {"shadow-deny", policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kShadowDeny)}), true,
       &PolicyCounters::shadow_denied},
      {"anonymous, named rule", policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kAllow)}), false,
       &PolicyCounters::denied, ""},
      {"anonymous, wildcard rule", policy_of(PolicyAction::kDeny, {rule("*", "web", PolicyAction::kAllow)}), true,
       &PolicyCounters::allowed, ""},
  };
  int accepted = 0;
  for (const auto& pc : cases) {
    SCOPED_TRACE(pc.name);
    a_ = {};
    b_ = {};
    pair("web", echo_.port());
    // a decides nothing (no policy): b's decision is the one under test.
    trust({.own_cert = a_cert_ = cert_for(a_, op_, {.services = {"client"}})},
          {.own_cert = b_cert_ = cert_for(b_, op_, {.services = {"web"}}), .policy = pc.policy});
    const std::uint16_t port = add_upstream_as(a_, "web", pc.as);
    if (pc.works) {
      EXPECT_TRUE(round_trip(port, "matrix"));
      ++accepted;
    } else {
      expect_refused(port);
      ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().streams_refused == 1; }));
    }
    const auto s = b_.proxy->stats();
    EXPECT_EQ(s.policy.*pc.counter, 1u);
    const std::uint64_t total = s.policy.allowed + s.policy.denied + s.policy.shadow_denied + s.policy.rate_limited + s.policy.not_granted;
    EXPECT_EQ(total, 1u);
    const std::string pair_key = (pc.as.empty() ? std::string("-") : pc.as) + "->web";
    ASSERT_EQ(s.policy_pairs.count(pair_key), 1u);
    EXPECT_EQ(s.policy_pairs.at(pair_key).*pc.counter, 1u);
    EXPECT_EQ(echo_.accepted.load(), accepted);
  }
}

// The initiator decides first: a deny closes the app's connection with RST at once and dials
// nothing.
TEST_F(TrustTest, InitiatorRefusesEarlyOnDeny) {
  const auto deny = policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kDeny)});
  const std::uint16_t port = certified(deny, nullptr);
  EXPECT_EQ(dial_and_wait_end(port), End::kReset);
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.policy.denied, 1u);
  EXPECT_EQ(s.sessions_initiated, 0u);
  EXPECT_EQ(s.upstreams.at("web").failures, 1u);
  EXPECT_EQ(b_.proxy->stats().sessions_accepted, 0u);
}

TEST_F(TrustTest, InitiatorShadowDenyLetsThrough) {
  const auto shadow = policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kShadowDeny)});
  const std::uint16_t port = certified(shadow, shadow);
  EXPECT_TRUE(round_trip(port, "shadow"));
  EXPECT_EQ(a_.proxy->stats().policy.shadow_denied, 1u);
  EXPECT_EQ(b_.proxy->stats().policy.shadow_denied, 1u);
}

// burst 2, one token a minute: the third connection in a row is refused by b.
TEST_F(TrustTest, RateLimitRefusesOverTheBurst) {
  const auto limited = policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kAllow, RateLimit{1, 2})});
  const std::uint16_t port = certified(nullptr, limited);
  EXPECT_TRUE(round_trip(port, "one"));
  EXPECT_TRUE(round_trip(port, "two"));
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().policy.rate_limited == 1; }));
  EXPECT_EQ(b_.proxy->stats().policy.allowed, 2u);
  EXPECT_EQ(echo_.accepted.load(), 2);
}

// A new policy that denies a live connection closes it (RST to the app) within a second or two,
// on the responder...
TEST_F(TrustTest, NewPolicyClosesDeniedLiveConnectionOnResponder) {
  const auto allow = policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kAllow)});
  const std::uint16_t port = certified(nullptr, allow);
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  const auto t0 = std::chrono::steady_clock::now();
  b_.proxy->set_trust(trust_of(op_, {.own_cert = b_cert_, .policy = policy_of(PolicyAction::kDeny, {})}));
  EXPECT_NE(wait_end(fd), End::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ::close(fd);
  EXPECT_EQ(b_.proxy->stats().policy.closed_on_recheck, 1u);
  // and new ones are refused.
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().policy.denied == 1; }));
}

// ... and on the initiator.
TEST_F(TrustTest, NewPolicyClosesDeniedLiveConnectionOnInitiator) {
  const std::uint16_t port = certified();
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  a_.proxy->set_trust(trust_of(op_, {.own_cert = a_cert_, .policy = policy_of(PolicyAction::kDeny, {})}));
  EXPECT_EQ(wait_end(fd), End::kReset);
  ::close(fd);
  EXPECT_EQ(a_.proxy->stats().policy.closed_on_recheck, 1u);
}

// Revoking the initiator's certificate closes its live session on the responder, and its next
// handshake is refused.
TEST_F(TrustTest, RevocationClosesLiveSession) {
  const std::uint16_t port = certified();
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  b_.proxy->set_trust(trust_of(op_, {.own_cert = b_cert_, .revoked = {{op_.issuer(), serial_of(a_cert_)}}}));
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().sessions_closed_on_recheck == 1; }, 3s));
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().sessions_open == 0; }, 3s));
  expect_refused(port);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().certs_revoked == 1; }));
}

// A certificate that expires while its session is up: the session is closed within about a
// second of the expiry (the periodic check), without a new snapshot.
TEST_F(TrustTest, CertificateExpiringWhileUpClosesTheSession) {
  // Valid for 2..3 s from now (whole seconds): room for the handshake on a busy machine.
  trust({.own_cert = cert_for(a_, op_, {.services = {"client"}, .not_after = 3s}), .skew = 0s},
        {.own_cert = b_cert_, .skew = 0s});
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 6s);
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().sessions_closed_on_recheck == 1; }, 3s));
  EXPECT_EQ(b_.proxy->stats().sessions_open, 0u);
}

// A renewed certificate for a (now also granting "admin") is used at once: connections made
// after it go over a new session that carries it, while a live one finishes on the old session.
TEST_F(TrustTest, RenewedOwnCertificateGoesOutOnNewSessions) {
  TestService api(TestService::Mode::kEcho);
  a_.proxy->set_routes(table({{"web", {instance(b_)}}, {"api", {instance(b_)}}}, {&b_}));
  b_.proxy->set_routes(table({}, {&a_}, {{"web", echo_.port()}, {"api", api.port()}}));
  const auto b_cert = cert_for(b_, op_, {.services = {"web", "api"}});
  trust({.own_cert = a_cert_}, {.own_cert = b_cert});
  const std::uint16_t web = add_upstream_as(a_, "web", "client");
  const std::uint16_t admin_api = add_upstream_as(a_, "api", "admin");
  const int live = open_echo(web);
  ASSERT_GE(live, 0);
  expect_refused(admin_api);  // not granted yet: refused early by a
  EXPECT_EQ(a_.proxy->stats().policy.not_granted, 1u);
  a_.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(a_, op_, {.services = {"client", "admin"}})}));
  EXPECT_TRUE(round_trip(admin_api, "renewed"));
  EXPECT_EQ(b_.proxy->stats().policy.not_granted, 0u);
  EXPECT_EQ(a_.proxy->stats().sessions_initiated, 2u);
  char buf[4] = {};  // the live connection still works on the old session
  ASSERT_TRUE(send_all(live, "more", 4));
  EXPECT_EQ(::recv(live, buf, 4, MSG_WAITALL), 4);
  ::close(live);
}

PolicyRule with_limits(PolicyRule r, std::optional<std::chrono::milliseconds> connect, std::optional<std::chrono::milliseconds> idle,
                       std::optional<std::uint32_t> retries) {
  r.connect_timeout = connect;
  r.idle_timeout = idle;
  r.retries = retries;
  return r;
}

// The rule that allowed a connection sets its idle timeout (ProxyConfig's is 5 minutes).
TEST_F(TrustTest, PolicyIdleTimeoutOverridesTheConfig) {
  const auto p = policy_of(PolicyAction::kDeny, {with_limits(rule("client", "web", PolicyAction::kAllow), std::nullopt, 200ms, std::nullopt)});
  const std::uint16_t port = certified(p, nullptr);
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_end(fd), End::kReset);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ::close(fd);
  EXPECT_EQ(a_.proxy->stats().upstreams.at("web").failures, 1u);
}

// retries = 0: a connection whose instance refuses it is not retried on the other one.
TEST_F(TrustTest, PolicyRetriesBoundTheAttempts) {
  Three t;
  std::uint16_t dead_port = 0;
  {
    TestService gone(TestService::Mode::kEcho);
    dead_port = gone.port();
  }
  t.b.proxy->set_routes(table({}, {&t.a}, {{"echo", dead_port}}));
  t.c.proxy->set_routes(table({}, {&t.a}, {{"echo", t.sc.port()}}));
  t.a.proxy->set_routes(table({{"echo", {instance(t.b), instance(t.c)}}}, {&t.b, &t.c}));
  const auto p = policy_of(PolicyAction::kDeny, {with_limits(rule("client", "echo", PolicyAction::kAllow), std::nullopt, std::nullopt, 0u)});
  t.a.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.a, op_, {.services = {"client"}}), .policy = p}));
  t.b.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.b, op_, {.services = {"echo"}})}));
  t.c.proxy->set_trust(trust_of(op_, {.own_cert = cert_for(t.c, op_, {.services = {"echo"}})}));
  UpstreamConfig u;
  u.name = "echo";
  u.listen = Endpoint::v4(127, 0, 0, 1, 0);
  u.balance = Balance::kRoundRobin;
  u.as = "client";
  ASSERT_TRUE(t.a.proxy->add_upstream(u).has_value());
  const std::uint16_t port = t.a.proxy->stats().listening["echo"].port;
  int ok = 0;
  for (int i = 0; i < 6; ++i) ok += round_trip(port, "r" + std::to_string(i)) ? 1 : 0;
  EXPECT_EQ(ok, 3);  // round robin: every other connection tried b first, and only b
  ASSERT_TRUE(wait_until([&] { return t.a.proxy->stats().upstreams["echo"].failures == 3; }));
  EXPECT_EQ(t.a.proxy->stats().upstreams["echo"].retries, 0u);
}

// A rule's connect_timeout shorter than the session's: a connection waiting on a peer whose
// handshake hangs is tried on another instance after it, not after ProxyConfig's 5 s.
TEST_F(TrustTest, PolicyConnectTimeoutTriesAnotherInstance) {
  TestService hole(TestService::Mode::kStall);  // takes the TCP connection, never answers
  Node z;
  z.name = "z";
  z.kp = NoiseKeyPair::generate();
  a_.proxy->set_routes(table({{"web", {{"z", Endpoint::v4(127, 0, 0, 1, hole.port()), true}, instance(b_)}}}, {&b_, &z}));
  const auto p = policy_of(PolicyAction::kDeny, {with_limits(rule("client", "web", PolicyAction::kAllow), 150ms, std::nullopt, std::nullopt)});
  trust({.own_cert = a_cert_, .policy = p}, {.own_cert = b_cert_});
  UpstreamConfig u;
  u.name = "web";
  u.listen = Endpoint::v4(127, 0, 0, 1, 0);
  u.balance = Balance::kRoundRobin;  // z first
  u.as = "client";
  ASSERT_TRUE(a_.proxy->add_upstream(u).has_value());
  const std::uint16_t port = a_.proxy->stats().listening["web"].port;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(round_trip(port, "around the hole"));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(a_.proxy->stats().upstreams["web"].retries, 1u);
  EXPECT_EQ(hole.accepted.load(), 1);
}

// The operators change (a root rotation that drops a's issuer): a's live session on b no longer
// verifies and is closed.
TEST_F(TrustTest, DroppedOperatorClosesItsSessions) {
  const std::uint16_t port = certified();
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  auto rotated = std::make_shared<ProxyTrust>(*trust_of(op_, {.own_cert = b_cert_}));
  rotated->operators = {OperatorKey::generate().public_key()};
  b_.proxy->set_trust(rotated);
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().sessions_closed_on_recheck == 1; }, 3s));
}

// The trust root removed: the gossiped key decides again, so a session that only a certificate
// admitted (b has no key for "a") is closed; one with the right key stays.
TEST_F(TrustTest, TrustRemovedFallsBackToGossipedKeys) {
  b_.proxy->set_routes(table({}, {}, {{"web", echo_.port()}}));
  const std::uint16_t port = certified();
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  a_.proxy->set_trust(nullptr);
  b_.proxy->set_trust(nullptr);
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return b_.proxy->stats().sessions_closed_on_recheck == 1; }, 3s));
  b_.proxy->set_routes(table({}, {&a_}, {{"web", echo_.port()}}));
  EXPECT_TRUE(round_trip(port, "gossiped key again"));
}

// Decision lines are bounded (kMaxPolicyLogsPerSecond); the rest are counted.
TEST_F(TrustTest, DecisionLogIsBounded) {
  const auto deny = policy_of(PolicyAction::kDeny, {});
  const std::uint16_t port = certified(deny, nullptr);
  constexpr int kConns = 80;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kConns; ++i) EXPECT_EQ(dial_and_wait_end(port), End::kReset);
  const auto took = std::chrono::steady_clock::now() - t0;
  const auto s = a_.proxy->stats();
  EXPECT_EQ(s.policy.denied, static_cast<std::uint64_t>(kConns));
  EXPECT_LE(s.policy_logs_suppressed, static_cast<std::uint64_t>(kConns));
  if (took < 900ms) {  // all in the window the first line opened
    EXPECT_EQ(s.policy_logs_suppressed, static_cast<std::uint64_t>(kConns - static_cast<int>(kMaxPolicyLogsPerSecond)));
  }
}

// A trust root configured while uncertified sessions are up: they are closed.
TEST_F(TrustTest, TrustRootClosesUncertifiedSessions) {
  const std::uint16_t port = add_upstream_as(a_, "web", "client");
  const int fd = open_echo(port);
  ASSERT_GE(fd, 0);
  set_timeouts(fd, 3s);
  trust({.own_cert = a_cert_}, {.own_cert = b_cert_});
  EXPECT_NE(wait_end(fd), End::kTimeout);
  ::close(fd);
  ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().sessions_closed_on_recheck == 1; }, 3s));
  EXPECT_TRUE(round_trip(port, "certified now"));
  EXPECT_EQ(b_.proxy->stats().peer_certs.verified, 1u);
}

// ProxyStats::policy_pairs keeps at most kMaxPolicyPairs pairs of its own; the decisions of the
// pairs beyond are summed under "other", and a pair that has its entry keeps counting there.
// (Anonymous apps on a, one upstream per destination, a deny-all policy: every pair is refused
// by a at once, no session.)
TEST_F(TrustTest, PolicyPairsAreCappedTheRestUnderOther) {
  trust({.own_cert = a_cert_, .policy = policy_of(PolicyAction::kDeny, {})}, {.own_cert = b_cert_});
  constexpr std::size_t kPairs = kMaxPolicyPairs + 44;
  std::vector<std::uint16_t> ports;
  for (std::size_t i = 0; i < kPairs; ++i) ports.push_back(add_upstream(a_, "s" + std::to_string(i)));
  const auto refuse = [](std::uint16_t port) { EXPECT_EQ(dial_and_wait_end(port), End::kReset); };
  for (const std::uint16_t port : ports) refuse(port);
  auto s = a_.proxy->stats();
  EXPECT_EQ(s.policy.denied, kPairs);
  ASSERT_EQ(s.policy_pairs.size(), kMaxPolicyPairs + 1);
  ASSERT_EQ(s.policy_pairs.count("other"), 1u);
  EXPECT_EQ(s.policy_pairs.at("other").denied, kPairs - kMaxPolicyPairs);
  for (std::size_t i = 0; i < kMaxPolicyPairs; ++i) {  // the first pairs seen have their own
    const std::string key = "-->s" + std::to_string(i);
    ASSERT_EQ(s.policy_pairs.count(key), 1u) << key;
    EXPECT_EQ(s.policy_pairs.at(key).denied, 1u) << key;
  }
  refuse(ports.front());  // held: its own entry
  refuse(ports.back());   // beyond the cap: "other"
  s = a_.proxy->stats();
  EXPECT_EQ(s.policy.denied, kPairs + 2);
  EXPECT_EQ(s.policy_pairs.size(), kMaxPolicyPairs + 1);
  EXPECT_EQ(s.policy_pairs.at("-->s0").denied, 2u);
  EXPECT_EQ(s.policy_pairs.at("other").denied, kPairs - kMaxPolicyPairs + 1);
  EXPECT_EQ(b_.proxy->stats().sessions_accepted, 0u);
}

// ---- Issue 5's authorization matrix ----
// Every certificate state of one node x every kind of policy: a real app connection a -> b for
// "web" as "client" per row, on fresh proxies, checked against the outcome the row states (the
// table is written out, not derived from the proxy's logic). How to read it:
//  - a bad certificate of the initiator is refused by the responder in the handshake, so the
//    responder never decides; but the initiator decides first, when the app connects: a policy
//    it holds that denies refuses at once (no session dialled), one that allows or shadow-denies
//    counts that decision and then the handshake fails;
//  - a source service the initiator's certificate does not grant is refused by the initiator
//    before any policy (not_granted, no session);
//  - a destination the responder's certificate does not grant: the initiator counts not_granted
//    once the session is up (it reads the peer's certificate) and opens no stream;
//  - shadow-deny lets through, counted as shadow_denied (not allowed).
enum class CertState { kValid, kExpired, kNotYetValid, kUnknownIssuer, kRevoked, kNotGranted, kKeyMismatch };
enum class PolicyKind { kAllow, kDeny, kNoRule, kShadowDeny };
enum class BadSide { kInitiator, kResponder };       // whose certificate is in `cert` state
enum class Holder { kBoth, kResponderOnly };         // which proxies hold the policy
enum class AppSees { kEcho, kRefused };              // the app's connection
enum class Dial { kNotDialled, kUp, kCertRefused };  // the session a -> b

// ProxyStats::policy on one proxy (rate_limited and closed_on_recheck: always 0 here).
struct Decisions {
  std::uint64_t allowed = 0;
  std::uint64_t denied = 0;
  std::uint64_t shadow_denied = 0;
  std::uint64_t not_granted = 0;
};

struct MatrixRow {
  const char* name = "";
  BadSide bad = BadSide::kInitiator;
  CertState cert = CertState::kValid;
  PolicyKind policy = PolicyKind::kAllow;
  Holder holder = Holder::kBoth;
  AppSees app = AppSees::kEcho;
  Dial session = Dial::kUp;
  Decisions a{};  // the initiator's counters
  Decisions b{};  // the responder's
};

std::vector<MatrixRow> authorization_matrix() {
  using enum CertState;
  using enum PolicyKind;
  using enum BadSide;
  using enum Holder;
  using enum AppSees;
  using enum Dial;
  // clang-format off: one row a line
  // name, whose certificate, its state, policy, held by, the app sees, the session a -> b,
  // a's decisions, b's decisions
  return {
      // The initiator's certificate; the same policy on both proxies.
      {"init_valid__allow", kInitiator, kValid, kAllow, kBoth, kEcho, kUp, {.allowed = 1}, {.allowed = 1}},
      {"init_valid__deny", kInitiator, kValid, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_valid__no_rule", kInitiator, kValid, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_valid__shadow_deny", kInitiator, kValid, kShadowDeny, kBoth, kEcho, kUp, {.shadow_denied = 1}, {.shadow_denied = 1}},
      {"init_expired__allow", kInitiator, kExpired, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"init_expired__deny", kInitiator, kExpired, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_expired__no_rule", kInitiator, kExpired, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_expired__shadow_deny", kInitiator, kExpired, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"init_not_yet_valid__allow", kInitiator, kNotYetValid, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"init_not_yet_valid__deny", kInitiator, kNotYetValid, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_not_yet_valid__no_rule", kInitiator, kNotYetValid, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_not_yet_valid__shadow_deny", kInitiator, kNotYetValid, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"init_unknown_issuer__allow", kInitiator, kUnknownIssuer, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"init_unknown_issuer__deny", kInitiator, kUnknownIssuer, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_unknown_issuer__no_rule", kInitiator, kUnknownIssuer, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_unknown_issuer__shadow_deny", kInitiator, kUnknownIssuer, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"init_revoked__allow", kInitiator, kRevoked, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"init_revoked__deny", kInitiator, kRevoked, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_revoked__no_rule", kInitiator, kRevoked, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_revoked__shadow_deny", kInitiator, kRevoked, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"init_not_granted__allow", kInitiator, kNotGranted, kAllow, kBoth, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__deny", kInitiator, kNotGranted, kDeny, kBoth, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__no_rule", kInitiator, kNotGranted, kNoRule, kBoth, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__shadow_deny", kInitiator, kNotGranted, kShadowDeny, kBoth, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_key_mismatch__allow", kInitiator, kKeyMismatch, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"init_key_mismatch__deny", kInitiator, kKeyMismatch, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_key_mismatch__no_rule", kInitiator, kKeyMismatch, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"init_key_mismatch__shadow_deny", kInitiator, kKeyMismatch, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},

      // The initiator's certificate; the policy on the responder only (a decides nothing): a bad
      // certificate fails the handshake before any policy, whatever the policy says.
      {"init_valid__allow__at_b", kInitiator, kValid, kAllow, kResponderOnly, kEcho, kUp, {}, {.allowed = 1}},
      {"init_valid__deny__at_b", kInitiator, kValid, kDeny, kResponderOnly, kRefused, kUp, {}, {.denied = 1}},
      {"init_valid__no_rule__at_b", kInitiator, kValid, kNoRule, kResponderOnly, kRefused, kUp, {}, {.denied = 1}},
      {"init_valid__shadow_deny__at_b", kInitiator, kValid, kShadowDeny, kResponderOnly, kEcho, kUp, {}, {.shadow_denied = 1}},
      {"init_expired__allow__at_b", kInitiator, kExpired, kAllow, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_expired__deny__at_b", kInitiator, kExpired, kDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_expired__no_rule__at_b", kInitiator, kExpired, kNoRule, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_expired__shadow_deny__at_b", kInitiator, kExpired, kShadowDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_not_yet_valid__allow__at_b", kInitiator, kNotYetValid, kAllow, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_not_yet_valid__deny__at_b", kInitiator, kNotYetValid, kDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_not_yet_valid__no_rule__at_b", kInitiator, kNotYetValid, kNoRule, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_not_yet_valid__shadow_deny__at_b", kInitiator, kNotYetValid, kShadowDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_unknown_issuer__allow__at_b", kInitiator, kUnknownIssuer, kAllow, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_unknown_issuer__deny__at_b", kInitiator, kUnknownIssuer, kDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_unknown_issuer__no_rule__at_b", kInitiator, kUnknownIssuer, kNoRule, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_unknown_issuer__shadow_deny__at_b", kInitiator, kUnknownIssuer, kShadowDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_revoked__allow__at_b", kInitiator, kRevoked, kAllow, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_revoked__deny__at_b", kInitiator, kRevoked, kDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_revoked__no_rule__at_b", kInitiator, kRevoked, kNoRule, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_revoked__shadow_deny__at_b", kInitiator, kRevoked, kShadowDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_not_granted__allow__at_b", kInitiator, kNotGranted, kAllow, kResponderOnly, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__deny__at_b", kInitiator, kNotGranted, kDeny, kResponderOnly, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__no_rule__at_b", kInitiator, kNotGranted, kNoRule, kResponderOnly, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_not_granted__shadow_deny__at_b", kInitiator, kNotGranted, kShadowDeny, kResponderOnly, kRefused, kNotDialled, {.not_granted = 1}, {}},
      {"init_key_mismatch__allow__at_b", kInitiator, kKeyMismatch, kAllow, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_key_mismatch__deny__at_b", kInitiator, kKeyMismatch, kDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_key_mismatch__no_rule__at_b", kInitiator, kKeyMismatch, kNoRule, kResponderOnly, kRefused, kCertRefused, {}, {}},
      {"init_key_mismatch__shadow_deny__at_b", kInitiator, kKeyMismatch, kShadowDeny, kResponderOnly, kRefused, kCertRefused, {}, {}},

      // The responder's certificate (valid: the rows above); the same policy on both. The
      // initiator refuses it in the handshake, or (not granting "web") refuses to open the stream.
      {"resp_expired__allow", kResponder, kExpired, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"resp_expired__deny", kResponder, kExpired, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_expired__no_rule", kResponder, kExpired, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_expired__shadow_deny", kResponder, kExpired, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"resp_not_yet_valid__allow", kResponder, kNotYetValid, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"resp_not_yet_valid__deny", kResponder, kNotYetValid, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_not_yet_valid__no_rule", kResponder, kNotYetValid, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_not_yet_valid__shadow_deny", kResponder, kNotYetValid, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"resp_unknown_issuer__allow", kResponder, kUnknownIssuer, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"resp_unknown_issuer__deny", kResponder, kUnknownIssuer, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_unknown_issuer__no_rule", kResponder, kUnknownIssuer, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_unknown_issuer__shadow_deny", kResponder, kUnknownIssuer, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"resp_revoked__allow", kResponder, kRevoked, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"resp_revoked__deny", kResponder, kRevoked, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_revoked__no_rule", kResponder, kRevoked, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_revoked__shadow_deny", kResponder, kRevoked, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
      {"resp_not_granted__allow", kResponder, kNotGranted, kAllow, kBoth, kRefused, kUp, {.allowed = 1, .not_granted = 1}, {}},
      {"resp_not_granted__deny", kResponder, kNotGranted, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_not_granted__no_rule", kResponder, kNotGranted, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_not_granted__shadow_deny", kResponder, kNotGranted, kShadowDeny, kBoth, kRefused, kUp, {.shadow_denied = 1, .not_granted = 1}, {}},
      {"resp_key_mismatch__allow", kResponder, kKeyMismatch, kAllow, kBoth, kRefused, kCertRefused, {.allowed = 1}, {}},
      {"resp_key_mismatch__deny", kResponder, kKeyMismatch, kDeny, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_key_mismatch__no_rule", kResponder, kKeyMismatch, kNoRule, kBoth, kRefused, kNotDialled, {.denied = 1}, {}},
      {"resp_key_mismatch__shadow_deny", kResponder, kKeyMismatch, kShadowDeny, kBoth, kRefused, kCertRefused, {.shadow_denied = 1}, {}},
  };
  // clang-format on
}

void PrintTo(const MatrixRow& row, std::ostream* os) { *os << row.name; }  // failures name the row

class AuthorizationMatrix : public TrustTest, public ::testing::WithParamInterface<MatrixRow> {
 protected:
  // `n`'s certificate serving `service`, in `state` (kRevoked: valid, the verifier revokes it).
  std::vector<std::byte> cert_in(const Node& n, const std::string& service, CertState state) {
    switch (state) {
      case CertState::kValid:
      case CertState::kRevoked:
        return cert_for(n, op_, {.services = {service}});
      case CertState::kExpired:
        return cert_for(n, op_, {.services = {service}, .not_before = -2h, .not_after = -1h});
      case CertState::kNotYetValid:
        return cert_for(n, op_, {.services = {service}, .not_before = 1h, .not_after = 2h});
      case CertState::kUnknownIssuer:
        return cert_for(n, OperatorKey::generate(), {.services = {service}});
      case CertState::kNotGranted:
        return cert_for(n, op_, {.services = {"unrelated"}});
      case CertState::kKeyMismatch:
        return cert_for(n, op_, {.services = {service}, .kx = NoiseKeyPair::generate().public_key});
    }
    return {};
  }
  static std::shared_ptr<const Policy> policy_for(PolicyKind k) {
    switch (k) {
      case PolicyKind::kAllow:
        return policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kAllow)});
      case PolicyKind::kDeny:  // the default would allow: the rule decides
        return policy_of(PolicyAction::kAllow, {rule("client", "web", PolicyAction::kDeny)});
      case PolicyKind::kNoRule:  // a rule for another pair only
        return policy_of(PolicyAction::kDeny, {rule("other", "web", PolicyAction::kAllow)});
      case PolicyKind::kShadowDeny:
        return policy_of(PolicyAction::kDeny, {rule("client", "web", PolicyAction::kShadowDeny)});
    }
    return nullptr;
  }
  // The counter of `verifier` that the refusal of a certificate in `state` moves.
  static std::uint64_t refusal_count(const ProxyStats& verifier, CertState state) {
    switch (state) {
      case CertState::kExpired: return verifier.peer_certs.expired;
      case CertState::kNotYetValid: return verifier.peer_certs.not_yet_valid;
      case CertState::kUnknownIssuer: return verifier.peer_certs.unknown_issuer;
      case CertState::kRevoked: return verifier.certs_revoked;
      case CertState::kKeyMismatch: return verifier.certs_mismatched;
      case CertState::kValid:
      case CertState::kNotGranted: break;
    }
    return 0;
  }
  static void expect_decisions(const ProxyStats& s, const Decisions& want, const char* side) {
    SCOPED_TRACE(side);
    EXPECT_EQ(s.policy.allowed, want.allowed);
    EXPECT_EQ(s.policy.denied, want.denied);
    EXPECT_EQ(s.policy.shadow_denied, want.shadow_denied);
    EXPECT_EQ(s.policy.not_granted, want.not_granted);
    EXPECT_EQ(s.policy.rate_limited, 0u);
    EXPECT_EQ(s.policy.closed_on_recheck, 0u);
    // One pair only: its entry holds the same counts (no entry when nothing was decided).
    const bool any = want.allowed + want.denied + want.shadow_denied + want.not_granted > 0;
    ASSERT_EQ(s.policy_pairs.size(), any ? 1u : 0u);
    if (any) {
      const PolicyCounters& p = s.policy_pairs.at("client->web");
      EXPECT_EQ(p.allowed, want.allowed);
      EXPECT_EQ(p.denied, want.denied);
      EXPECT_EQ(p.shadow_denied, want.shadow_denied);
      EXPECT_EQ(p.not_granted, want.not_granted);
    }
  }
};

TEST_P(AuthorizationMatrix, Decides) {
  const MatrixRow& row = GetParam();
  const bool a_bad = row.bad == BadSide::kInitiator;
  const auto a_cert = a_bad ? cert_in(a_, "client", row.cert) : a_cert_;
  const auto b_cert = a_bad ? b_cert_ : cert_in(b_, "web", row.cert);
  const auto policy = policy_for(row.policy);
  TrustSpec a{.own_cert = a_cert, .policy = row.holder == Holder::kBoth ? policy : nullptr};
  TrustSpec b{.own_cert = b_cert, .policy = policy};
  if (row.cert == CertState::kRevoked) (a_bad ? b : a).revoked = {{op_.issuer(), serial_of(a_bad ? a_cert : b_cert)}};
  trust(std::move(a), std::move(b));
  const std::uint16_t port = add_upstream_as(a_, "web", "client");

  if (row.app == AppSees::kEcho) {
    EXPECT_TRUE(round_trip(port, "matrix"));
    EXPECT_EQ(echo_.accepted.load(), 1);
  } else {
    expect_refused(port);
    ASSERT_TRUE(wait_until([&] { return a_.proxy->stats().upstreams["web"].failures == 1; }, 3s));
  }
  Node& verifier = a_bad ? b_ : a_;
  if (row.session == Dial::kCertRefused) {
    ASSERT_TRUE(wait_until([&] { return verifier.proxy->stats().handshakes_failed >= 1; }, 3s));
    ASSERT_TRUE(wait_until([&] { return verifier.proxy->stats().sessions_open == 0; }, 3s));
  }
  const auto sa = a_.proxy->stats();
  const auto sb = b_.proxy->stats();
  switch (row.session) {
    case Dial::kNotDialled:
      EXPECT_EQ(sa.sessions_initiated, 0u);
      EXPECT_EQ(sb.sessions_accepted, 0u);
      break;
    case Dial::kUp:
      EXPECT_EQ(sa.sessions_initiated, 1u);
      EXPECT_EQ(sa.handshakes_failed, 0u);
      EXPECT_EQ(sb.handshakes_failed, 0u);
      EXPECT_EQ(sa.peer_certs.verified, 1u);
      EXPECT_EQ(sb.peer_certs.verified, 1u);
      break;
    case Dial::kCertRefused: {
      const ProxyStats& v = a_bad ? sb : sa;
      EXPECT_EQ(v.handshakes_failed, 1u);
      EXPECT_EQ(refusal_count(v, row.cert), 1u);
      EXPECT_EQ(sa.sessions_initiated, 1u);
      break;
    }
  }
  if (row.app == AppSees::kRefused) {
    EXPECT_EQ(echo_.accepted.load(), 0);
    EXPECT_EQ(sa.upstreams.at("web").failures, 1u);
  }
  EXPECT_EQ(sb.streams_refused, row.b.denied);  // the only OPEN b refuses here is a policy deny
  expect_decisions(sa, row.a, "initiator a");
  expect_decisions(sb, row.b, "responder b");
}

INSTANTIATE_TEST_SUITE_P(Trust, AuthorizationMatrix, ::testing::ValuesIn(authorization_matrix()),
                         [](const ::testing::TestParamInfo<MatrixRow>& row) { return std::string(row.param.name); });

}  // namespace
}  // namespace weft::transport
