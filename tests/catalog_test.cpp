// weft::agent service catalog (agent/src/catalog.h): wire encodings and which nodes get fetched.

#include "catalog.h"
#include "doc_sync.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace weft::agent {
namespace {

using namespace std::chrono_literals;

const TimePoint kT0 = TimePoint{} + 1000s;

std::vector<std::byte> bytes_of(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

NodeCatalog sample(const std::string& node, std::uint64_t version) {
  return NodeCatalog{node, version, {{"api", 9000, {}, false}, {"web", 8080, {"v1", "blue"}, true}}};
}

TEST(CatalogWire, CatalogSpecAndMetaRoundTrip) {
  const NodeCatalog c = sample("n1", 7);
  auto d = decode_catalog(encode_catalog(c));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(*d, c);

  ServiceSpec s{"web", 8080, {"a"}, "http://127.0.0.1:8080/health", 2500ms};
  auto ds = decode_spec(encode_spec(s));
  ASSERT_TRUE(ds) << ds.error().message;
  EXPECT_EQ(*ds, s);

  NodeMeta m{{{"dc", "eu"}}, 12, 7947, std::vector<std::byte>(32, std::byte{0xab})};
  EXPECT_EQ(decode_meta(encode_meta(m)), m);
  NodeMeta short_key = m;
  short_key.kx_pk.resize(31);
  EXPECT_FALSE(decode_meta(encode_meta(short_key))) << "a key-exchange key is 32 bytes";
  EXPECT_TRUE(encode_meta(NodeMeta{}).empty()) << "no tags, no catalog: no metadata bytes at all";
  EXPECT_EQ(decode_meta({}), NodeMeta{});

  auto rq = decode_catalog_request(encode_catalog_request(41));
  ASSERT_TRUE(rq);
  EXPECT_EQ(*rq, 41u);
}

TEST(CatalogWire, HostileInputIsAnErrorNeverACrash) {
  EXPECT_FALSE(decode_catalog({}));
  EXPECT_FALSE(decode_catalog(bytes_of({0xc1})));                    // never used msgpack byte
  EXPECT_FALSE(decode_catalog(bytes_of({0x93, 0x01, 0x02, 0x03})));  // an array, not a map
  EXPECT_FALSE(decode_meta(bytes_of({0x81, 0xa4, 't', 'a', 'g', 's', 0x01})));  // tags not a map
  EXPECT_FALSE(decode_catalog_request(bytes_of({0x80})));           // {}: no "have"
  // Every prefix of a valid catalog fails cleanly.
  const auto good = encode_catalog(sample("n1", 3));
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(decode_catalog(std::span(good).first(n))) << n;
  }
  // Bad fields: each one alone.
  auto with = [](NodeCatalog c) { return encode_catalog(c); };
  NodeCatalog dup = sample("n1", 3);
  dup.services.push_back(dup.services.front());
  EXPECT_FALSE(decode_catalog(with(dup))) << "a service twice";
  NodeCatalog bad_name = sample("n1", 3);
  bad_name.services[0].name = "has space";
  EXPECT_FALSE(decode_catalog(with(bad_name)));
  NodeCatalog zero_port = sample("n1", 3);
  zero_port.services[0].port = 0;
  EXPECT_FALSE(decode_catalog(with(zero_port)));
  NodeCatalog many_tags = sample("n1", 3);
  many_tags.services[0].tags.assign(kMaxServiceTags + 1, "t");
  EXPECT_FALSE(decode_catalog(with(many_tags)));
}

// The msgpack reader recurses per nesting level: deep nesting within the size caps is refused
// before it overflows the stack (a 16 KiB frame of 0x91 bytes used to crash the agent).
TEST(CatalogWire, DeepNestingIsAnErrorNeverACrash) {
  for (std::size_t depth : {9u, 16'000u, 1'000'000u}) {
    std::vector<std::byte> deep(depth, std::byte{0x91});  // [[[[...]]]]
    deep.push_back(std::byte{0xc0});
    EXPECT_FALSE(decode_catalog(deep)) << depth;
    std::vector<std::byte> in_map = bytes_of({0x81, 0xa1, 'x'});  // {"x": [[[...]]]}
    in_map.insert(in_map.end(), deep.begin(), deep.end());
    EXPECT_FALSE(decode_catalog(in_map)) << depth;
    EXPECT_FALSE(decode_meta(in_map)) << depth;
    EXPECT_FALSE(decode_doc_request(in_map)) << depth;
  }
  // Eight levels are accepted (unknown keys are ignored): {"x": [[[[[[[nil]]]]]]]} is 8 deep.
  std::vector<std::byte> eight = bytes_of({0x82, 0xa4, 'h', 'a', 'v', 'e', 0x05, 0xa1, 'x'});
  for (int i = 0; i < 7; ++i) eight.push_back(std::byte{0x91});
  eight.push_back(std::byte{0xc0});
  auto r = decode_catalog_request(eight);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, 5u);
  eight.insert(eight.begin() + 9, std::byte{0x91});  // nine
  EXPECT_FALSE(decode_catalog_request(eight));
}

TEST(CatalogSpec, ChecksNameCheckAndInterval) {
  EXPECT_TRUE(check_service_spec({"web", 80, {}, "", 10s}));
  EXPECT_TRUE(check_service_spec({"web", 80, {}, "tcp", 10s}));
  EXPECT_TRUE(check_service_spec({"web", 80, {}, "http://127.0.0.1:80/h", 10s}));
  EXPECT_TRUE(check_service_spec({"web", 80, {}, "exec:true", 10s}));
  EXPECT_FALSE(check_service_spec({"", 80, {}, "", 10s}));
  EXPECT_FALSE(check_service_spec({"a/b", 80, {}, "", 10s}));
  EXPECT_FALSE(check_service_spec({"web", 0, {}, "", 10s}));
  EXPECT_FALSE(check_service_spec({"web", 80, {}, "udp", 10s}));
  EXPECT_FALSE(check_service_spec({"web", 80, {}, "exec:", 10s}));
  EXPECT_FALSE(check_service_spec({"web", 80, {}, "", 10ms}));
  EXPECT_FALSE(check_service_spec({"web", 80, {""}, "", 10s}));
}

TEST(RemoteCatalogs, FetchesWhatIsBehindRetriesAndTakesOnlyNewer) {
  RemoteCatalogs rc;
  const Endpoint a1 = Endpoint::v4(127, 0, 0, 1, 7946);
  const Endpoint a2 = Endpoint::v4(127, 0, 0, 2, 7946);
  rc.on_member(kT0, "n1", a1, true, 3);
  rc.on_member(kT0, "n2", a2, true, 0);  // publishes nothing: never asked
  auto due = rc.due_fetches(kT0, 2s);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].first, a1);
  EXPECT_EQ(due[0].second, 0u);
  EXPECT_TRUE(rc.due_fetches(kT0 + 1s, 2s).empty()) << "asked once per retry interval";
  EXPECT_EQ(rc.next_fetch(), kT0 + 2s);
  EXPECT_EQ(rc.due_fetches(kT0 + 2s, 2s).size(), 1u) << "no answer: asked again";

  EXPECT_FALSE(rc.on_catalog(a2, sample("n1", 3))) << "from another node's address";
  EXPECT_FALSE(rc.on_catalog(a1, sample("n9", 3))) << "an unknown node";
  EXPECT_TRUE(rc.on_catalog(a1, sample("n1", 3)));
  EXPECT_FALSE(rc.on_catalog(a1, sample("n1", 2))) << "older than held";
  EXPECT_FALSE(rc.on_catalog(a1, sample("n1", 3))) << "the same again";
  EXPECT_EQ(rc.nodes().at("n1").catalog.services.size(), 2u);
  EXPECT_TRUE(rc.due_fetches(kT0 + 10s, 2s).empty()) << "up to date";
  EXPECT_EQ(rc.next_fetch(), TimePoint::max());

  // A new version is advertised: asked at once, even inside the retry interval.
  rc.on_member(kT0 + 10s, "n1", a1, true, 4);
  EXPECT_EQ(rc.due_fetches(kT0 + 10s, 2s).size(), 1u);
  // A failed node is not asked; its catalog is kept (shown as critical by the agent).
  rc.on_member(kT0 + 11s, "n1", a1, false, 5);
  EXPECT_TRUE(rc.due_fetches(kT0 + 20s, 2s).empty());
  EXPECT_EQ(rc.nodes().at("n1").catalog.version, 3u);
  // Back with a lower version (it lost its data dir): what we held is dropped and fetched anew.
  rc.on_member(kT0 + 30s, "n1", a1, true, 1);
  EXPECT_EQ(rc.nodes().at("n1").catalog.version, 0u);
  EXPECT_EQ(rc.due_fetches(kT0 + 30s, 2s).size(), 1u);
  // Version 0: it deregistered everything.
  EXPECT_TRUE(rc.on_catalog(a1, sample("n1", 1)));
  rc.on_member(kT0 + 40s, "n1", a1, true, 0);
  EXPECT_TRUE(rc.nodes().at("n1").catalog.services.empty());
  rc.forget("n1");
  EXPECT_FALSE(rc.nodes().contains("n1"));
  // next_fetch() is cached between calls (the loop asks on every wake-up): each change shows.
  rc.on_member(kT0 + 50s, "n3", a2, true, 2);
  EXPECT_EQ(rc.next_fetch(), kT0 + 50s);
  EXPECT_TRUE(rc.due_fetches(kT0 + 49s, 2s).empty()) << "not yet due: nothing is asked";
  EXPECT_EQ(rc.due_fetches(kT0 + 50s, 2s).size(), 1u);
  EXPECT_EQ(rc.next_fetch(), kT0 + 52s);
  rc.forget("n3");
  EXPECT_EQ(rc.next_fetch(), TimePoint::max());
  EXPECT_TRUE(rc.due_fetches(kT0 + 60s, 2s).empty());
}

}  // namespace
}  // namespace weft::agent
