#pragma once
// Spreading an operator-signed document (the policy, the revocation list) by gossip and
// anti-entropy, without a control plane (issue 5).
//
// Each agent advertises only the version it holds in its gossip metadata ("pol", "rev": catalog.h). An
// agent that sees a live member advertising a higher version asks that member for the document
// over the reliable channel (FrameKind::kSignedDocRequest / kSignedDocResponse), verifies it
// itself against its trusted operator keys exactly as `weft policy apply` does, stores it
// durably and advertises the new version in turn: the document spreads epidemically, and gossip's
// push-pull anti-entropy carries the metadata, so after a partition heals the newest version wins
// everywhere. Nothing in a response is trusted: a member can advertise any number, and the
// document it sends must still verify.
//
// Bounds: at most one request in flight per agent and kind; a request unanswered within
// `timeout` goes to another member advertising a newer version (the one asked least recently), so
// neither a silent nor a lying member stalls the spread, and a new version does not make every
// agent ask the same member at once more than once. A member whose document for a version did not
// verify is not asked again for that version.
//
// Wire (msgpack maps, inside the sealed reliable frame):
//   request  {"kind": u8 (store::DocKind: 1 policy, 2 revocation list), "have": u64}
//            the version the asker holds
//   response {"kind": u8, "envelope": bin}                            the responder's document, or
//            {"kind": u8}                                             when it holds none
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

namespace weft::agent {

inline constexpr std::uint8_t kDocKindPolicy = 1;       // store::DocKind::kPolicy: the same values
inline constexpr std::uint8_t kDocKindRevocations = 2;  // store::DocKind::kRevocations
inline constexpr std::size_t kMaxDocEnvelopeBytes = 256 * 1024;

struct DocRequest {
  std::uint8_t kind = 0;
  std::uint64_t have = 0;
  friend bool operator==(const DocRequest&, const DocRequest&) = default;
};
struct DocResponse {
  std::uint8_t kind = 0;
  std::vector<std::byte> envelope;  // empty: the responder holds none
  friend bool operator==(const DocResponse&, const DocResponse&) = default;
};
[[nodiscard]] std::vector<std::byte> encode_doc_request(const DocRequest& r);
[[nodiscard]] Result<DocRequest> decode_doc_request(std::span<const std::byte> bytes);
[[nodiscard]] std::vector<std::byte> encode_doc_response(const DocResponse& r);
[[nodiscard]] Result<DocResponse> decode_doc_response(std::span<const std::byte> bytes);

struct DocSyncStats {
  std::uint64_t fetches_sent = 0;
  std::uint64_t fetch_timeouts = 0;   // a request unanswered within the timeout
  std::uint64_t empty_responses = 0;  // the member held nothing newer after all
};

// Which member to fetch one kind of document from.
class DocSync {
 public:
  explicit DocSync(Duration timeout) : timeout_(timeout) {}

  // What gossip says about a member now (on every member event): its address, whether it is
  // alive (or suspect), and the version it advertises.
  void on_member(const std::string& node, const Endpoint& addr, bool live, std::uint64_t version);
  void forget(const std::string& node);
  // This agent now holds `version` (applied, or loaded at start).
  void held(std::uint64_t version);
  [[nodiscard]] std::uint64_t held() const { return held_; }
  // A response from `from` arrived: what it sent did not verify or held nothing newer (the
  // member is not asked again for the version it advertised), or it was accepted (held() follows).
  void on_response(const Endpoint& from, bool useful);

  struct Fetch {
    std::string node;
    Endpoint addr;
    std::uint64_t version = 0;  // what it advertises
  };
  // The request to send now, if any (at most one in flight).
  [[nodiscard]] std::optional<Fetch> due(TimePoint now);
  // When due() may next return a request (TimePoint::max(): nothing to fetch).
  [[nodiscard]] TimePoint next() const;
  [[nodiscard]] const DocSyncStats& stats() const { return stats_; }

 private:
  struct Member {
    Endpoint addr;
    bool live = false;
    std::uint64_t version = 0;
    std::uint64_t useless_version = 0;        // its answer for this version did not help
    TimePoint last_asked = TimePoint::min();  // never
  };
  [[nodiscard]] bool wanted(const Member& m) const {
    return m.live && m.version > held_ && m.version != m.useless_version;
  }

  // Whether any member is wanted(), cached: due() and next() run on every loop wake-up, and the
  // answer changes only with the calls that change members_ or held_.
  [[nodiscard]] bool any_wanted() const;
  void changed() { any_wanted_.reset(); }

  Duration timeout_;
  std::uint64_t held_ = 0;
  std::map<std::string, Member> members_;
  mutable std::optional<bool> any_wanted_;
  std::optional<std::string> in_flight_;  // the member asked
  TimePoint deadline_{};
  DocSyncStats stats_;
};

}  // namespace weft::agent
