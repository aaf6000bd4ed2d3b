#include "doc_sync.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "msgpack_json.h"

namespace weft::agent {

using nlohmann::json;

namespace {

std::vector<std::byte> to_bytes(const json& j) { return to_msgpack_bytes(j); }

// Untrusted bytes to a JSON object; nullopt unless it is a msgpack map.
std::optional<json> object_of(std::span<const std::byte> bytes) {
  return msgpack_object(bytes, kMaxDocEnvelopeBytes + 64);
}

Result<std::uint8_t> get_kind(const json& j) {
  auto it = j.find("kind");
  if (it == j.end() || !it->is_number_unsigned() || it->get<std::uint64_t>() == 0 ||
      it->get<std::uint64_t>() > 255) {
    return fail("'kind' is missing or not 1..255");
  }
  return static_cast<std::uint8_t>(it->get<std::uint64_t>());
}

}  // namespace

std::vector<std::byte> encode_doc_request(const DocRequest& r) {
  return to_bytes(json{{"kind", r.kind}, {"have", r.have}});
}

Result<DocRequest> decode_doc_request(std::span<const std::byte> bytes) {
  auto j = object_of(bytes);
  if (!j) return fail("document request is not a msgpack map");
  auto kind = get_kind(*j);
  if (!kind) return fail("document request: " + kind.error().message);
  auto have = j->find("have");
  if (have == j->end() || !have->is_number_unsigned()) return fail("document request: 'have' is not a u64");
  return DocRequest{*kind, have->get<std::uint64_t>()};
}

std::vector<std::byte> encode_doc_response(const DocResponse& r) {
  json j{{"kind", r.kind}};
  if (!r.envelope.empty()) {
    std::vector<std::uint8_t> b(r.envelope.size());
    std::memcpy(b.data(), r.envelope.data(), b.size());
    j["envelope"] = json::binary(std::move(b));
  }
  return to_bytes(j);
}

Result<DocResponse> decode_doc_response(std::span<const std::byte> bytes) {
  auto j = object_of(bytes);
  if (!j) return fail("document response is not a msgpack map");
  auto kind = get_kind(*j);
  if (!kind) return fail("document response: " + kind.error().message);
  DocResponse r{*kind, {}};
  if (auto it = j->find("envelope"); it != j->end()) {
    // get_ptr, not get_binary(): GCC 12 -O2 sees a null dereference in the latter's inlined check.
    const auto* b = it->get_ptr<const json::binary_t*>();
    if (b == nullptr || b->empty() || b->size() > kMaxDocEnvelopeBytes) {
      return fail("document response: 'envelope' is not 1.." + std::to_string(kMaxDocEnvelopeBytes) +
                  " bytes");
    }
    r.envelope.resize(b->size());
    std::memcpy(r.envelope.data(), b->data(), b->size());
  }
  return r;
}

// ---------------------------------------------------------------------------------------------

void DocSync::on_member(const std::string& node, const Endpoint& addr, bool live, std::uint64_t version) {
  Member& m = members_[node];
  m.addr = addr;
  m.live = live;
  m.version = version;
  changed();
}

void DocSync::forget(const std::string& node) {
  members_.erase(node);
  if (in_flight_ == node) in_flight_.reset();
  changed();
}

void DocSync::held(std::uint64_t version) {
  if (version <= held_) return;
  held_ = version;
  in_flight_.reset();  // a member still ahead of us is asked at the next due()
  changed();
}

void DocSync::on_response(const Endpoint& from, bool useful) {
  for (auto& [name, m] : members_) {
    if (m.addr != from) continue;
    if (!useful) m.useless_version = m.version;
    if (in_flight_ == name) in_flight_.reset();
  }
  changed();
}

bool DocSync::any_wanted() const {
  if (!any_wanted_) {
    any_wanted_ = std::any_of(members_.begin(), members_.end(), [&](const auto& e) { return wanted(e.second); });
  }
  return *any_wanted_;
}

std::optional<DocSync::Fetch> DocSync::due(TimePoint now) {
  if (in_flight_) {
    if (now < deadline_) return std::nullopt;
    ++stats_.fetch_timeouts;
    in_flight_.reset();
  }
  if (!any_wanted()) return std::nullopt;
  // The highest version first; among members advertising it, the one asked least recently, so a
  // member that timed out is asked again only after the others.
  const std::string* best = nullptr;
  const Member* bm = nullptr;
  for (const auto& [name, m] : members_) {
    if (!wanted(m)) continue;
    if (bm == nullptr || m.version > bm->version ||
        (m.version == bm->version && m.last_asked < bm->last_asked)) {
      best = &name;
      bm = &m;
    }
  }
  if (bm == nullptr) return std::nullopt;
  Member& chosen = members_[*best];
  chosen.last_asked = now;
  in_flight_ = *best;
  deadline_ = now + timeout_;
  ++stats_.fetches_sent;
  return Fetch{*best, chosen.addr, chosen.version};
}

TimePoint DocSync::next() const {
  if (!any_wanted()) return TimePoint::max();
  return in_flight_ ? deadline_ : TimePoint{};  // {}: now (never overflows a subtraction)
}

}  // namespace weft::agent
