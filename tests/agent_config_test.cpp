// weft::agent settings and the reliable-message frame: TOML + flags, errors that name the problem;
// the signed-document sync (doc_sync.h): its wire maps and which member it asks, when.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "catalog.h"
#include "doc_sync.h"
#include "frame.h"
#include "weft/agent/config.h"

namespace weft::agent {
namespace {

using namespace std::chrono_literals;

struct TomlFile {
  explicit TomlFile(const std::string& text) {
    path = (std::filesystem::temp_directory_path() / ("weft-cfg-" + std::to_string(::getpid()) + "-" +
                                                       std::to_string(counter++) + ".toml"))
               .string();
    std::ofstream(path) << text;
  }
  ~TomlFile() { std::filesystem::remove(path); }
  std::string path;
  static inline int counter = 0;
};

AgentFlags minimal() {
  AgentFlags f;
  f.node = "a";
  f.bind = "127.0.0.1:7946";
  f.data_dir = "/tmp/x";
  return f;
}

TEST(AgentConfig, Durations) {
  EXPECT_EQ(*parse_duration("500ms"), Duration(500ms));
  EXPECT_EQ(*parse_duration("2s"), Duration(2s));
  EXPECT_EQ(*parse_duration("1.5s"), Duration(1500ms));
  EXPECT_EQ(*parse_duration("2m"), Duration(120s));
  EXPECT_EQ(*parse_duration("24h"), Duration(24h));
  for (const char* bad : {"", "5", "ms", "-1s", "1 s", "1d", "nan s", "1e300h"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
}

TEST(AgentConfig, NodeNames) {
  EXPECT_TRUE(check_node_name("web-1.example_a"));
  EXPECT_FALSE(check_node_name(""));
  EXPECT_FALSE(check_node_name("has space"));
  EXPECT_FALSE(check_node_name("quote\""));
  EXPECT_FALSE(check_node_name(std::string(129, 'a')));
}

TEST(AgentConfig, FlagsAloneAndDefaults) {
  auto c = resolve_config(minimal());
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->node, "a");
  EXPECT_EQ(c->bind.to_string(), "127.0.0.1:7946");
  EXPECT_EQ(c->advertised(), c->bind);
  EXPECT_EQ(c->rpc, "/tmp/x/rpc.sock");
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->gossip.probe_interval, Duration(1s));
  AgentFlags f = minimal();
  f.bind = "127.0.0.1";  // the port defaults to 7946
  EXPECT_EQ(resolve_config(f)->bind.port, 7946);
}

TEST(AgentConfig, FileThenFlagsWin) {
  TomlFile t(R"(
node = "from-file"
bind = "127.0.0.2:8000"
join = ["127.0.0.3:8000", "127.0.0.4"]
data_dir = "/tmp/file-dir"
log_level = "debug"
tags = { role = "web", zone = "a" }
[gossip]
probe_interval = "2s"
probe_timeout = "800ms"
suspicion_mult = 3
reconnect_interval = "5s"
reclaim_after = "1m"
)");
  AgentFlags f;
  f.config = t.path;
  auto c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->node, "from-file");
  EXPECT_EQ(c->bind.to_string(), "127.0.0.2:8000");
  ASSERT_EQ(c->join.size(), 2u);
  EXPECT_EQ(c->join[1].to_string(), "127.0.0.4:7946");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->tags.at("role"), "web");
  EXPECT_EQ(c->gossip.probe_interval, Duration(2s));
  EXPECT_EQ(c->gossip.probe_timeout, Duration(800ms));
  EXPECT_EQ(c->gossip.suspicion_mult, 3u);
  EXPECT_EQ(c->gossip.reconnect_interval, Duration(5s));
  EXPECT_EQ(c->gossip.reclaim_after, Duration(60s));

  f.node = "from-flag";
  f.join = {"127.0.0.9:1"};
  f.tags = {"zone=b"};
  c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->node, "from-flag");
  ASSERT_EQ(c->join.size(), 1u);
  EXPECT_EQ(c->tags.at("zone"), "b");
  EXPECT_EQ(c->tags.at("role"), "web");
}

// Every bad input is one error naming the setting.
TEST(AgentConfig, ServicesFromTheFile) {
  TomlFile t(R"(
[[service]]
name = "web"
port = 8080
tags = ["v1", "blue"]
check = "http://127.0.0.1:8080/health"
interval = "2s"

[[service]]
name = "cache"
port = 6379
)");
  AgentFlags f = minimal();
  f.config = t.path;
  auto c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->services.size(), 2u);
  EXPECT_EQ(c->services[0], (ServiceSpec{"web", 8080, {"v1", "blue"}, "http://127.0.0.1:8080/health", 2s}));
  EXPECT_EQ(c->services[1], (ServiceSpec{"cache", 6379, {}, "", 10s}));
}

TEST(AgentConfig, UpstreamsAndMeshBind) {
  TomlFile t(R"(
mesh_bind = "127.0.0.1:17947"
[[upstream]]
name = "web"
listen = "127.0.0.1:9000"

[[upstream]]
name = "db"
listen = "127.0.0.1:9001"
balance = "round-robin"
)");
  AgentFlags f = minimal();
  f.config = t.path;
  auto c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->mesh_bind.to_string(), "127.0.0.1:17947");
  ASSERT_EQ(c->upstreams.size(), 2u);
  EXPECT_EQ(c->upstreams[0].name, "web");
  EXPECT_EQ(c->upstreams[0].listen.to_string(), "127.0.0.1:9000");
  EXPECT_EQ(c->upstreams[0].balance, "peak-ewma");
  EXPECT_EQ(c->upstreams[1].balance, "round-robin");
  // Without mesh_bind: --bind's IP, port + 1.
  auto d = resolve_config(minimal());
  ASSERT_TRUE(d) << d.error().message;
  Endpoint expect = d->bind;
  expect.port = static_cast<std::uint16_t>(d->bind.port + 1);
  EXPECT_EQ(d->mesh_bind, expect);
}

// The trust root: operator_pub as one file or a list, cert; flags win; both or neither.
TEST(AgentConfig, TrustRootFilesComeTogether) {
  TomlFile one(R"(
operator_pub = "/etc/weft/op.pub"
cert = "/etc/weft/n.cert"
)");
  AgentFlags f = minimal();
  f.config = one.path;
  auto c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->operator_pubs, std::vector<std::string>{"/etc/weft/op.pub"});
  EXPECT_EQ(c->cert_file, "/etc/weft/n.cert");
  TomlFile two(R"(
operator_pub = ["/a.pub", "/b.pub"]
cert = "/n.cert"
)");
  f.config = two.path;
  c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->operator_pubs, (std::vector<std::string>{"/a.pub", "/b.pub"}));
  f.operator_pubs = {"/flag.pub"};
  f.cert = "/flag.cert";
  c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->operator_pubs, std::vector<std::string>{"/flag.pub"});
  EXPECT_EQ(c->cert_file, "/flag.cert");

  AgentFlags only_cert = minimal();
  only_cert.cert = "/n.cert";
  ASSERT_FALSE(resolve_config(only_cert));
  EXPECT_NE(resolve_config(only_cert).error().message.find("--cert needs --operator-pub"), std::string::npos);
  AgentFlags only_pub = minimal();
  only_pub.operator_pubs = {"/op.pub"};
  ASSERT_FALSE(resolve_config(only_pub));
  EXPECT_NE(resolve_config(only_pub).error().message.find("--operator-pub needs --cert"), std::string::npos);
  EXPECT_TRUE(resolve_config(minimal())->operator_pubs.empty());
  TomlFile bad("operator_pub = 3\ncert = \"/n.cert\"\n");
  AgentFlags fb = minimal();
  fb.config = bad.path;
  ASSERT_FALSE(resolve_config(fb));
  EXPECT_NE(resolve_config(fb).error().message.find("'operator_pub'"), std::string::npos);
}

TEST(AgentConfig, BadInputNamesTheProblem) {
  struct Case {
    const char* toml;
    const char* mentions;
  } cases[] = {
      {"bind = 7", "bind"},
      {"node = \"a\"\nnode = \"b\"", ".toml:2: "},
      {"colour = \"red\"", "colour"},
      {"join = \"127.0.0.1:1\"", "join"},
      {"join = [1]", "join"},
      {"tags = { a = 1 }", "tags.a"},
      {"[gossip]\nprobe_interval = 5", "probe_interval"},
      {"[gossip]\nprobe_interval = \"soon\"", "probe_interval"},
      {"[gossip]\nmystery = 1", "mystery"},
      {"[gossip]\nindirect_checks = -1", "indirect_checks"},
      {"[gossip]\nprobe_timeout = \"5s\"", "probe_timeout"},
      {"[gossip]\nreclaim_after = 60", "reclaim_after"},
      {"log_level = \"loud\"", "log-level"},
      {"insecure_plaintext = \"yes\"", "insecure_plaintext"},
      {"\x01\x02 not toml", ".toml:1: "},
      {"service = 1", "[[service]]"},
      {"[[service]]\nport = 80", "needs a name"},
      {"[[service]]\nname = \"web\"", "port 1..65535"},
      {"[[service]]\nname = \"web\"\nport = 70000", "port 1..65535"},
      {"[[service]]\nname = \"w b\"\nport = 80", "letters"},
      {"[[service]]\nname = \"web\"\nport = 80\ncheck = \"udp\"", "\"udp\""},
      {"[[service]]\nname = \"web\"\nport = 80\ninterval = \"soon\"", "interval"},
      {"[[service]]\nname = \"web\"\nport = 80\ncolour = 1", "colour"},
      {"[[service]]\nname = \"web\"\nport = 80\n[[service]]\nname = \"web\"\nport = 81", "twice"},
      {"[[upstream]]\nlisten = \"127.0.0.1:9000\"", "needs a name"},
      {"[[upstream]]\nname = \"web\"", "listen"},
      {"[[upstream]]\nname = \"web\"\nlisten = \"nowhere\"", "nowhere"},
      {"[[upstream]]\nname = \"web\"\nlisten = \"127.0.0.1:9000\"\nbalance = \"random\"", "random"},
      {"[[upstream]]\nname = \"a\"\nlisten = \"127.0.0.1:9000\"\n[[upstream]]\nname = \"b\"\nlisten = "
       "\"127.0.0.1:9000\"",
       "same address"},
      {"mesh_bind = \"127.0.0.1\"", "mesh-bind"},
  };
  for (const Case& k : cases) {
    TomlFile t(k.toml);
    AgentFlags f = minimal();
    f.config = t.path;
    auto c = resolve_config(f);
    ASSERT_FALSE(c) << k.toml;
    EXPECT_NE(c.error().message.find(k.mentions), std::string::npos) << k.toml << " -> " << c.error().message;
    EXPECT_EQ(c.error().message.find('\n'), std::string::npos) << c.error().message;
  }
  AgentFlags f = minimal();
  f.config = "/nonexistent/weft.toml";
  EXPECT_FALSE(resolve_config(f));
  f = minimal();
  f.bind = "0.0.0.0:7946";
  EXPECT_NE(resolve_config(f).error().message.find("--advertise"), std::string::npos);
  f = minimal();
  f.data_dir.reset();
  EXPECT_NE(resolve_config(f).error().message.find("--data-dir"), std::string::npos);
  f = minimal();
  f.tags = {"novalue"};
  EXPECT_NE(resolve_config(f).error().message.find("--tag"), std::string::npos);
  f = minimal();
  f.join = {"not an address"};
  EXPECT_NE(resolve_config(f).error().message.find("--join"), std::string::npos);
}

// The cluster name a signed policy must name: "default" unless set; flags win; checked.
// Upstreams take `as` (the local app's service) from the file.
TEST(AgentConfig, ClusterNameAndUpstreamAs) {
  EXPECT_EQ(resolve_config(minimal())->cluster, "default");
  TomlFile t(R"(
cluster = "prod-eu"
[[upstream]]
name = "web"
listen = "127.0.0.1:9000"
as = "client"
)");
  AgentFlags f = minimal();
  f.config = t.path;
  auto c = resolve_config(f);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->cluster, "prod-eu");
  ASSERT_EQ(c->upstreams.size(), 1u);
  EXPECT_EQ(c->upstreams[0].as, "client");
  f.cluster = "staging";
  EXPECT_EQ(resolve_config(f)->cluster, "staging");
  f.cluster = "bad name";
  ASSERT_FALSE(resolve_config(f));
  EXPECT_NE(resolve_config(f).error().message.find("--cluster"), std::string::npos);
  TomlFile bad_as("[[upstream]]\nname = \"web\"\nlisten = \"127.0.0.1:9000\"\nas = \"a b\"\n");
  AgentFlags g = minimal();
  g.config = bad_as.path;
  ASSERT_FALSE(resolve_config(g));
  EXPECT_NE(resolve_config(g).error().message.find("as: "), std::string::npos) << resolve_config(g).error().message;
  UpstreamSpec u{"web", *Endpoint::parse("127.0.0.1:9000"), "peak-ewma", ""};
  EXPECT_TRUE(check_upstream(u));
  u.as = "client";
  EXPECT_TRUE(check_upstream(u));
  u.as = "no/slash";
  EXPECT_FALSE(check_upstream(u));
}

TEST(AgentFrame, SignedDocKindsRoundTrip) {
  const Endpoint from = *Endpoint::parse("127.0.0.7:7946");
  for (FrameKind k : {FrameKind::kSignedDocRequest, FrameKind::kSignedDocResponse}) {
    std::vector<std::byte> wire;
    encode_frame(k, from, {}, wire);
    auto f = decode_frame(wire);
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(f->kind, k);
  }
  EXPECT_EQ(static_cast<int>(FrameKind::kSignedDocRequest), 5);  // on the wire
  EXPECT_EQ(static_cast<int>(FrameKind::kSignedDocResponse), 6);
  std::vector<std::byte> wire;
  encode_frame(FrameKind::kSignedDocResponse, from, {}, wire);
  wire[1] = std::byte{7};
  EXPECT_FALSE(decode_frame(wire));
}

// "pol" in gossip metadata: round trip, absent = 0, and a wrong type makes the metadata bad.
TEST(SignedDocSync, PolicyVersionInMeta) {
  NodeMeta m;
  m.mesh_port = 7947;
  m.policy_version = 42;
  auto back = decode_meta(encode_meta(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, m);
  m.revocations_version = 7;  // "rev": the revocation list, the same way
  back = decode_meta(encode_meta(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->revocations_version, 7u);
  NodeMeta only;
  only.policy_version = 1;
  EXPECT_FALSE(encode_meta(only).empty());
  EXPECT_EQ(decode_meta(encode_meta(only))->policy_version, 1u);
  EXPECT_EQ(decode_meta(encode_meta(NodeMeta{}))->policy_version, 0u);
  const std::vector<std::uint8_t> bad = nlohmann::json::to_msgpack(nlohmann::json{{"pol", "seven"}});
  std::vector<std::byte> b(bad.size());
  std::memcpy(b.data(), bad.data(), b.size());
  EXPECT_FALSE(decode_meta(b));
}

TEST(SignedDocSync, WireRoundTripAndRejects) {
  const DocRequest req{kDocKindPolicy, 17};
  EXPECT_EQ(*decode_doc_request(encode_doc_request(req)), req);
  const DocResponse resp{kDocKindPolicy, {std::byte{1}, std::byte{2}}};
  EXPECT_EQ(*decode_doc_response(encode_doc_response(resp)), resp);
  const DocResponse empty{kDocKindPolicy, {}};
  EXPECT_EQ(*decode_doc_response(encode_doc_response(empty)), empty);
  auto pack = [](const nlohmann::json& j) {
    const std::vector<std::uint8_t> m = nlohmann::json::to_msgpack(j);
    std::vector<std::byte> out(m.size());
    std::memcpy(out.data(), m.data(), m.size());
    return out;
  };
  EXPECT_FALSE(decode_doc_request(pack({{"kind", 1}})));
  EXPECT_FALSE(decode_doc_request(pack({{"kind", 0}, {"have", 1}})));
  EXPECT_FALSE(decode_doc_request(pack({{"kind", 1}, {"have", -1}})));
  EXPECT_FALSE(decode_doc_response(pack({{"envelope", nlohmann::json::binary({1})}})));
  EXPECT_FALSE(decode_doc_response(pack({{"kind", 1}, {"envelope", "text"}})));
  EXPECT_FALSE(decode_doc_response(pack({{"kind", 1}, {"envelope", nlohmann::json::binary({})}})));
  EXPECT_FALSE(decode_doc_response(pack(nlohmann::json::array({1, 2}))));
  // Every prefix of a valid message and random bytes fail without throwing.
  const auto wire = encode_doc_response(resp);
  for (std::size_t n = 0; n < wire.size(); ++n) EXPECT_FALSE(decode_doc_response(std::span(wire).first(n))) << n;
  std::vector<std::byte> junk(64);
  for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = std::byte(static_cast<std::uint8_t>(i * 37 + 11));
  EXPECT_FALSE(decode_doc_request(junk));
}

TEST(SignedDocSync, AsksOneMemberAtATimeAndMovesOnAfterATimeout) {
  DocSync s(1s);
  const TimePoint t0{};
  const Endpoint a = *Endpoint::parse("10.0.0.1:7946");
  const Endpoint b = *Endpoint::parse("10.0.0.2:7946");
  const Endpoint c = *Endpoint::parse("10.0.0.3:7946");
  EXPECT_FALSE(s.due(t0));
  EXPECT_EQ(s.next(), TimePoint::max());
  s.on_member("a", a, true, 3);
  s.on_member("b", b, true, 3);
  s.on_member("c", c, true, 2);
  auto f = s.due(t0);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->version, 3u);
  const std::string first = f->node;
  EXPECT_TRUE(first == "a" || first == "b");
  EXPECT_FALSE(s.due(t0 + 500ms)) << "one request in flight";
  EXPECT_EQ(s.next(), t0 + 1s);
  // No answer within the timeout: the other member advertising 3 is asked.
  f = s.due(t0 + 1s);
  ASSERT_TRUE(f);
  EXPECT_NE(f->node, first);
  EXPECT_EQ(s.stats().fetch_timeouts, 1u);
  // Its document did not verify: not asked again for 3; the first member is.
  s.on_response(f->addr, false);
  f = s.due(t0 + 1s);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->node, first);
  // Accepted: we hold 3; c (2) is behind us, nothing left to fetch.
  s.on_response(f->addr, true);
  s.held(3);
  EXPECT_FALSE(s.due(t0 + 2s));
  EXPECT_EQ(s.next(), TimePoint::max());
  // A member advertising a newer version is asked at once; a dead one never.
  s.on_member("c", c, false, 9);
  EXPECT_FALSE(s.due(t0 + 3s));
  s.on_member("c", c, true, 9);
  EXPECT_EQ(s.next(), TimePoint{});
  f = s.due(t0 + 3s);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->node, "c");
  // A member that leaves while asked frees the slot.
  s.forget("c");
  EXPECT_FALSE(s.due(t0 + 3s));
  EXPECT_EQ(s.stats().fetches_sent, 4u);
}

// The highest advertised version is fetched first, whoever advertises lower ones.
TEST(SignedDocSync, PrefersTheHighestVersion) {
  DocSync s(1s);
  s.on_member("old", *Endpoint::parse("10.0.0.1:7946"), true, 4);
  s.on_member("new", *Endpoint::parse("10.0.0.2:7946"), true, 8);
  auto f = s.due(TimePoint{});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->node, "new");
  EXPECT_EQ(f->version, 8u);
}

TEST(AgentFrame, RoundTripAndRejects) {
  const Endpoint from = *Endpoint::parse("127.0.0.7:7946");
  const std::vector<std::byte> body = {std::byte{1}, std::byte{2}, std::byte{3}};
  std::vector<std::byte> wire;
  encode_frame(FrameKind::kKeyRequest, from, body, wire);
  auto f = decode_frame(wire);
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->kind, FrameKind::kKeyRequest);
  EXPECT_EQ(f->from, from);
  EXPECT_TRUE(std::equal(f->body.begin(), f->body.end(), body.begin(), body.end()));
  // Every truncation that cuts into the header fails; a cut body is the body's problem.
  const std::size_t header = 3 + from.to_string().size();
  for (std::size_t n = 0; n < header; ++n) {
    EXPECT_FALSE(decode_frame(std::span(wire).first(n))) << n;
  }
  auto bad = wire;
  bad[0] = std::byte{2};
  EXPECT_FALSE(decode_frame(bad));
  bad = wire;
  bad[1] = std::byte{9};
  EXPECT_FALSE(decode_frame(bad));
  bad = wire;
  bad[4] = std::byte{'x'};
  EXPECT_FALSE(decode_frame(bad));
}

}  // namespace
}  // namespace weft::agent
