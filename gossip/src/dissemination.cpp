#include "dissemination.h"

namespace weft::gossip {

void BroadcastQueue::push(BroadcastRef ref) {
  if (buckets_.empty()) buckets_.emplace_back();
  buckets_[0].push_back(ref);
  ++size_;
}

void BroadcastQueue::clear() {
  for (auto& b : buckets_) b.clear();
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
}

}  // namespace weft::gossip
