#pragma once
// BroadcastQueue: state updates waiting to be piggybacked (memberlist's TransmitLimitedQueue).
//
// One pending broadcast per member: queuing a new one bumps the member's generation and the old
// entry becomes stale, dropped when met. Entries live in buckets by how often they were sent;
// packing takes the least-sent first and, among equals, the newest first. An entry is retired
// after `limit` = RetransmitMult * ceil(log10(n + 1)) transmissions. Entries are 8 bytes (slot +
// generation); the message is encoded from the member's current state when sent.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weft/gossip/codec.h"

namespace weft::gossip {

struct BroadcastRef {
  std::uint32_t slot;
  std::uint32_t gen;
};

inline unsigned retransmit_limit(unsigned mult, std::size_t n) {
  return mult * static_cast<unsigned>(std::ceil(std::log10(static_cast<double>(n) + 1.0)));
}

class BroadcastQueue {
 public:
  // The smallest broadcast message we encode; below this much room a packet is full.
  static constexpr std::size_t kMinMessageBytes = 16;
  // Give up filling a packet after this many entries that did not fit.
  static constexpr std::size_t kMaxSkips = 8;
  // An empty bucket keeps at most this much capacity.
  static constexpr std::size_t kKeepCapacity = 64;

  void push(BroadcastRef ref);
  [[nodiscard]] std::size_t size() const { return size_; }  // includes stale entries
  [[nodiscard]] bool empty() const { return size_ == 0; }
  void clear();

  // Adds broadcasts to `pb` while they fit. `encode(ref, out)` appends the message for a
  // valid ref and returns true, or returns false for a stale ref. `retire(ref)` is called for
  // a ref that reached the limit. Returns the number of messages added.
  template <typename Encode, typename Retire>
  std::size_t fill(PacketBuilder& pb, unsigned limit, Encode&& encode, Retire&& retire);

 private:
  struct Held {
    BroadcastRef ref;
    std::uint32_t bucket;
  };
  void restore();

  std::vector<std::vector<BroadcastRef>> buckets_;  // index = transmissions so far
  std::size_t size_ = 0;
  std::vector<Held> sent_;     // scratch: re-queued after a fill, one bucket up
  std::vector<Held> skipped_;  // scratch: did not fit, re-queued where they were
  std::vector<std::byte> msg_; // scratch: one encoded message
};

template <typename Encode, typename Retire>
std::size_t BroadcastQueue::fill(PacketBuilder& pb, unsigned limit, Encode&& encode, Retire&& retire) {
  std::size_t added = 0;
  sent_.clear();
  skipped_.clear();
  for (std::uint32_t t = 0; t < buckets_.size(); ++t) {
    auto& bucket = buckets_[t];
    while (!bucket.empty()) {
      if (pb.remaining() < kMinMessageBytes || skipped_.size() > kMaxSkips) {
        restore();
        return added;
      }
      const BroadcastRef ref = bucket.back();
      bucket.pop_back();
      --size_;
      if (t >= limit) {  // the limit shrank with the cluster
        retire(ref);
        continue;
      }
      msg_.clear();
      if (!encode(ref, msg_)) continue;  // stale
      if (!pb.add_encoded(msg_)) {
        skipped_.push_back({ref, t});
        continue;
      }
      ++added;
      if (t + 1 >= limit) {
        retire(ref);
      } else {
        sent_.push_back({ref, t + 1});
      }
    }
  }
  restore();
  return added;
}

}  // namespace weft::gossip
