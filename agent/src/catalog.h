#pragma once
// The service catalog: which services run on which node, and their health.
//
// Each agent owns the catalog of its own node (what `weft service register` and the config file
// declared, with the health its checks measure) and publishes only a version number of it in its
// gossip metadata. Gossip spreads that number with the member's other metadata; an agent that sees
// a version newer than the one it holds for a node asks that node for its catalog over the
// reliable channel (FrameKind::kCatalogRequest / kCatalogResponse). So a node may declare any
// number of services (the datagram budget holds only the version), and a change costs one
// incarnation of gossip plus one fetch per member, as Consul's anti-entropy does with its servers.
//
// Wire (msgpack maps, inside the sealed reliable frame):
//   request  {"have": u64}                          the version the asker already holds
//   response {"node": str, "version": u64, "services": [{"name": str, "port": u16,
//             "tags": [str...], "health": "passing" | "critical"}...]}
// Gossip metadata (msgpack map; unknown keys ignored): {"tags": {str: str}, "cat": u64,
//   "mesh": u16 (the proxy's mesh port), "kx": bin 32 (the node's key-exchange public key),
//   "pol": u64 (the version of the operator-signed policy the node holds; absent: none),
//   "rev": u64 (the version of the operator-signed revocation list it holds; absent: none)}.
// "pol" and "rev" spread those documents as "cat" spreads catalogs: a node that sees a member holding a newer
// version fetches the signed document from it (doc_sync.h, FrameKind::kSignedDocRequest) and
// verifies it itself; older nodes ignore the key.
//
// Pure logic: no sockets, no clock reads (every call takes `now`).

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/base/time.h"
#include "weft/agent/config.h"

namespace weft::agent {

inline constexpr std::size_t kMaxServicesPerNode = 10'000;
inline constexpr std::size_t kMaxServiceNameBytes = 128;
inline constexpr std::size_t kMaxServiceTags = 64;
inline constexpr std::size_t kMaxTagBytes = 256;


// Name, port, tags and the form of the check (health.h parses it fully). One line naming the
// problem.
[[nodiscard]] Result<void> check_service_spec(const ServiceSpec& s);
// ServiceSpec (config.h) as stored in weft::store: a msgpack map.
[[nodiscard]] std::vector<std::byte> encode_spec(const ServiceSpec& s);
[[nodiscard]] Result<ServiceSpec> decode_spec(std::span<const std::byte> bytes);

// One service as a node publishes it.
struct ServiceEntry {
  std::string name;
  std::uint16_t port = 0;
  std::vector<std::string> tags;
  bool passing = false;
  friend bool operator==(const ServiceEntry&, const ServiceEntry&) = default;
};

struct NodeCatalog {
  std::string node;
  std::uint64_t version = 0;
  std::vector<ServiceEntry> services;  // sorted by name, names unique
  friend bool operator==(const NodeCatalog&, const NodeCatalog&) = default;
};
[[nodiscard]] std::vector<std::byte> encode_catalog(const NodeCatalog& c);
[[nodiscard]] Result<NodeCatalog> decode_catalog(std::span<const std::byte> bytes);
[[nodiscard]] std::vector<std::byte> encode_catalog_request(std::uint64_t have);
[[nodiscard]] Result<std::uint64_t> decode_catalog_request(std::span<const std::byte> bytes);

// Gossip metadata.
struct NodeMeta {
  std::map<std::string, std::string> tags;
  std::uint64_t catalog_version = 0;  // 0: the node publishes no catalog
  std::uint16_t mesh_port = 0;        // its proxy's mesh listener (same IP as gossip); 0: none
  std::vector<std::byte> kx_pk;       // its long-term X25519 key (32 bytes) for the proxy handshake
  std::uint64_t policy_version = 0;   // the signed policy it holds; 0: none
  std::uint64_t revocations_version = 0;  // the signed revocation list it holds; 0: none
  friend bool operator==(const NodeMeta&, const NodeMeta&) = default;
};
[[nodiscard]] std::vector<std::byte> encode_meta(const NodeMeta& m);
// Never fails: metadata that does not decode is treated as empty (and counted by the caller).
[[nodiscard]] std::optional<NodeMeta> decode_meta(std::span<const std::byte> bytes);

struct CatalogStats {
  std::uint64_t fetches_sent = 0;
  std::uint64_t catalogs_accepted = 0;
  std::uint64_t catalogs_stale = 0;     // older than what we hold, or from an unknown node
  std::uint64_t catalogs_rejected = 0;  // did not decode
  std::uint64_t bad_meta = 0;
};

// The catalogs of the other nodes, and which of them need fetching.
class RemoteCatalogs {
 public:
  // What gossip says about a member now (on every member event and at start-up).
  void on_member(TimePoint now, const std::string& node, const Endpoint& addr, bool live,
                 std::uint64_t advertised_version);
  // A member reaped by gossip (gone for good).
  void forget(const std::string& node);
  // A response; `from` is the responder's gossip address (inside the seal), which must be the
  // address gossip knows for that node. Returns true if it replaced what we held.
  bool on_catalog(const Endpoint& from, NodeCatalog c);
  // Nodes to ask now (advertised version above the one held), each at most once per
  // `retry` while it stays behind. Returns (node address, version held).
  std::vector<std::pair<Endpoint, std::uint64_t>> due_fetches(TimePoint now, Duration retry);
  [[nodiscard]] TimePoint next_fetch() const;

  struct Node {
    Endpoint addr;
    bool live = false;
    std::uint64_t advertised = 0;
    NodeCatalog catalog;  // catalog.version: the version held (0 = none)
    TimePoint next_ask{};
  };
  [[nodiscard]] const std::map<std::string, Node>& nodes() const { return nodes_; }
  [[nodiscard]] CatalogStats& stats() { return stats_; }
  [[nodiscard]] const CatalogStats& stats() const { return stats_; }

 private:
  std::map<std::string, Node> nodes_;
  CatalogStats stats_;
  // next_fetch(), cached: the loop asks on every wake-up, and only the calls above change it.
  mutable std::optional<TimePoint> next_fetch_;
};

}  // namespace weft::agent
