#include "suspicion.h"

#include <algorithm>
#include <cmath>

namespace weft::gossip {

Suspicion::Suspicion(std::string from, unsigned k, Duration min, Duration max, TimePoint start, std::uint64_t id)
    : start_(start), min_(min), max_(std::max(min, max)), id_(id), k_(k) {
  accusers_.push_back(std::move(from));
  deadline_ = start_ + timeout(k_, 0, min_, max_);
}

bool Suspicion::confirm(const std::string& from) {
  if (confirmations_ >= k_) return false;  // already at the minimum
  if (std::find(accusers_.begin(), accusers_.end(), from) != accusers_.end()) return false;
  accusers_.push_back(from);
  ++confirmations_;
  deadline_ = std::max(start_ + timeout(k_, confirmations_, min_, max_), floor_);
  return true;
}

bool Suspicion::wants(const std::string& from) const {
  return confirmations_ < k_ && std::find(accusers_.begin(), accusers_.end(), from) == accusers_.end();
}

Duration Suspicion::min_timeout(unsigned mult, std::size_t n, Duration probe_interval, Duration floor) {
  const double scale = std::max(1.0, std::log10(std::max(1.0, static_cast<double>(n))));
  const auto t = std::chrono::duration_cast<Duration>(probe_interval * (mult * scale));
  return std::max(t, floor);
}

Duration Suspicion::timeout(unsigned k, unsigned c, Duration min, Duration max) {
  if (k == 0) return min;
  const double frac = std::log(static_cast<double>(c) + 1.0) / std::log(static_cast<double>(k) + 1.0);
  const auto span = std::chrono::duration<double>(max - min) * frac;
  const auto t = max - std::chrono::duration_cast<Duration>(span);
  // Whole milliseconds, as memberlist, so timings read cleanly in tests.
  return std::max(min, Duration(std::chrono::floor<std::chrono::milliseconds>(t)));
}

}  // namespace weft::gossip
