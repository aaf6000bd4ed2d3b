#include "member_table.h"

#include <functional>

#include "weft/base/assert.h"

namespace weft::gossip {

std::size_t MemberTable::home(std::string_view name) const {
  return std::hash<std::string_view>{}(name) & (index_.size() - 1);
}

std::uint32_t MemberTable::find(std::string_view name) const {
  if (index_.empty()) return kNone;
  const std::size_t mask = index_.size() - 1;
  for (std::size_t i = home(name);; i = (i + 1) & mask) {
    const std::uint32_t slot = index_[i];
    if (slot == kNone) return kNone;
    if (slots_[slot].name == name) return slot;
  }
}

void MemberTable::insert_index(std::uint32_t slot) {
  const std::size_t mask = index_.size() - 1;
  std::size_t i = home(slots_[slot].name);
  while (index_[i] != kNone) i = (i + 1) & mask;
  index_[i] = slot;
}

void MemberTable::grow() {
  // Load factor stays at or below 1/2 so probes stay short.
  std::size_t cap = index_.empty() ? 16 : index_.size() * 2;
  index_.assign(cap, kNone);
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s].uid != 0) insert_index(s);
  }
}

std::uint32_t MemberTable::add(std::string name, const Endpoint& addr, std::uint64_t incarnation,
                               MemberState state, std::vector<std::byte> meta, TimePoint now) {
  WEFT_ASSERT(find(name) == kNone);
  if ((size_ + 1) * 2 > index_.size()) grow();
  std::uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Member& m = slots_[slot];
  const std::uint32_t gen = m.bcast_gen + 1;  // a reused slot must not revive old broadcasts
  m = Member{};
  m.name = std::move(name);
  m.addr = addr;
  m.incarnation = incarnation;
  m.uid = next_uid_++;
  m.meta = std::move(meta);
  m.state_change = now;
  m.bcast_gen = gen;
  m.state = state;
  insert_index(slot);
  ++size_;
  ++counts_[static_cast<std::size_t>(state)];
  return slot;
}

void MemberTable::remove(std::uint32_t slot) {
  WEFT_CHECK(in_use(slot));
  const std::size_t mask = index_.size() - 1;
  std::size_t i = home(slots_[slot].name);
  while (index_[i] != slot) i = (i + 1) & mask;
  // Backward-shift deletion keeps every remaining entry reachable from its home bucket.
  for (std::size_t j = (i + 1) & mask; index_[j] != kNone; j = (j + 1) & mask) {
    const std::size_t h = home(slots_[index_[j]].name);
    const bool movable = (i <= j) ? (h <= i || h > j) : (h <= i && h > j);
    if (movable) {
      index_[i] = index_[j];
      i = j;
    }
  }
  index_[i] = kNone;
  --counts_[static_cast<std::size_t>(slots_[slot].state)];
  --size_;
  Member& m = slots_[slot];
  m.uid = 0;
  m.bcast_pending = false;
  ++m.bcast_gen;
  m.name.clear();
  m.name.shrink_to_fit();
  m.meta.clear();
  m.meta.shrink_to_fit();
  m.proofs.reset();
  free_.push_back(slot);
}

void MemberTable::set_state(std::uint32_t slot, MemberState s, TimePoint now) {
  Member& m = slots_[slot];
  if (m.state == s) return;
  --counts_[static_cast<std::size_t>(m.state)];
  ++counts_[static_cast<std::size_t>(s)];
  m.state = s;
  m.state_change = now;
}

}  // namespace weft::gossip
