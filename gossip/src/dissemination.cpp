#include "dissemination.h"

namespace weft::gossip {

void BroadcastQueue::push(BroadcastRef ref) {
  if (buckets_.empty()) buckets_.emplace_back();
  buckets_[0].push_back(ref);
  ++size_;
}

void BroadcastQueue::clear() {
  std::vector<std::vector<BroadcastRef>>().swap(buckets_);
  size_ = 0;
}

void BroadcastQueue::restore() {
  // Popped newest-first, so push back in reverse to keep the newest at each bucket's back.
  for (auto it = skipped_.rbegin(); it != skipped_.rend(); ++it) {
    buckets_[it->bucket].push_back(it->ref);
    ++size_;
  }
  for (auto it = sent_.rbegin(); it != sent_.rend(); ++it) {
    if (it->bucket >= buckets_.size()) buckets_.resize(it->bucket + 1);
    buckets_[it->bucket].push_back(it->ref);
    ++size_;
  }
  sent_.clear();
  skipped_.clear();
  // A join burst fills every bucket to ~n entries in turn; give the memory back once a bucket
  // drains (n nodes x n members x buckets adds up in a simulation).
  for (auto& b : buckets_) {
    if (b.empty() && b.capacity() > kKeepCapacity) std::vector<BroadcastRef>().swap(b);
  }
}

}  // namespace weft::gossip
