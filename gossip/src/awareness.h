#pragma once
// Local health awareness (Lifeguard): a score in [0, max) that rises when this node misses acks,
// misses expected nacks or has to refute a suspicion of itself, and falls on successful probes.
// A node in trouble slows its own probing and waits longer, instead of accusing healthy peers.

#include <algorithm>

#include "weft/base/time.h"

namespace weft::gossip {

class Awareness {
 public:
  explicit Awareness(unsigned max) : max_(std::max(1u, max)) {}

  void apply(int delta) {
    const int v = static_cast<int>(score_) + delta;
    score_ = static_cast<unsigned>(std::clamp(v, 0, static_cast<int>(max_) - 1));
  }
  [[nodiscard]] unsigned score() const { return score_; }
  [[nodiscard]] Duration scale(Duration d) const { return d * (score_ + 1); }

 private:
  unsigned max_;
  unsigned score_ = 0;
};

}  // namespace weft::gossip
