#pragma once
// MemberTable: every member this node knows (itself included), in stable slots.
//
// Slots never move, so other structures (probe order, broadcast queue, timers) refer to members
// by slot index; a reaped slot is reused, and `uid` tells a reused slot from its old occupant.
// The name index is open addressing with linear probing and backward-shift deletion: 4 bytes
// per entry, because a 10 000-node simulation holds 10^8 entries.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/time.h"
#include "weft/gossip/types.h"

namespace weft::gossip {

// Signatures behind what we believe of a member (signed claims only; see claims.h): forwarded
// with our broadcasts and push-pull entries so that every receiver can check them itself.
struct Proofs {
  std::vector<std::byte> alive_sig;   // the member's signature over its current alive claim
  std::vector<std::byte> cred;        // the credential that alive came with
  std::string accuser;                // suspect / failed / left: who said so (left: the member)
  std::vector<std::byte> accuse_sig;  // ... signed over accuse_dead ? dead : suspect
  bool accuse_dead = false;
};

struct Member {
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;
  std::uint64_t uid = 0;           // unique per table for the life of the node; 0 = free slot
  std::vector<std::byte> meta;
  TimePoint state_change{};
  std::uint32_t bcast_gen = 0;     // generation of the newest queued broadcast about this member
  MemberState state = MemberState::kAlive;
  bool bcast_pending = false;      // the newest broadcast is still being retransmitted
  std::unique_ptr<Proofs> proofs;  // signed claims only: 8 bytes per member otherwise
};

class MemberTable {
 public:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  [[nodiscard]] std::uint32_t find(std::string_view name) const;
  // Adds a member whose name is not in the table; returns its slot.
  std::uint32_t add(std::string name, const Endpoint& addr, std::uint64_t incarnation, MemberState state,
                    std::vector<std::byte> meta, TimePoint now);
  void remove(std::uint32_t slot);
  void set_state(std::uint32_t slot, MemberState s, TimePoint now);

  Member& at(std::uint32_t slot) { return slots_[slot]; }
  [[nodiscard]] const Member& at(std::uint32_t slot) const { return slots_[slot]; }
  [[nodiscard]] bool in_use(std::uint32_t slot) const { return slot < slots_.size() && slots_[slot].uid != 0; }
  // One past the highest slot ever used; iterate [0, slot_end()) and skip !in_use.
  [[nodiscard]] std::uint32_t slot_end() const { return static_cast<std::uint32_t>(slots_.size()); }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::size_t count(MemberState s) const { return counts_[static_cast<std::size_t>(s)]; }
  [[nodiscard]] std::size_t live() const { return count(MemberState::kAlive) + count(MemberState::kSuspect); }

 private:
  [[nodiscard]] std::size_t home(std::string_view name) const;
  void grow();
  void insert_index(std::uint32_t slot);

  std::vector<Member> slots_;
  std::vector<std::uint32_t> free_;
  std::vector<std::uint32_t> index_;  // kNone = empty; size is a power of two
  std::size_t size_ = 0;
  std::uint64_t next_uid_ = 1;
  std::array<std::size_t, kMemberStateCount> counts_{};
};

}  // namespace weft::gossip
