#pragma once
// Suspicion (Lifeguard, memberlist's formula): a suspect is declared failed after a timeout that
// starts at `max` and shrinks toward `min` as independent confirmations arrive:
//
//   timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))
//
// where c is the number of distinct confirmers besides the first accuser and k the number of
// confirmations expected. With k = 0 the timeout is `min` from the start.

#include <cstdint>
#include <string>
#include <vector>

#include "weft/base/time.h"

namespace weft::gossip {

class Suspicion {
 public:
  Suspicion(std::string from, unsigned k, Duration min, Duration max, TimePoint start, std::uint64_t id);

  // Records a confirmation; returns true when `from` is new (and the deadline may have moved).
  bool confirm(const std::string& from);
  // Whether confirm(from) would count (so a signed one is verified only then).
  [[nodiscard]] bool wants(const std::string& from) const;
  [[nodiscard]] TimePoint deadline() const { return deadline_; }
  [[nodiscard]] std::uint64_t id() const { return id_; }
  [[nodiscard]] unsigned confirmations() const { return confirmations_; }
  // The last word (NodeImpl::on_suspicion_timeout): how many pings went to the suspect after the
  // timeout, and the deadline pushed past the next. Later confirmations never pull it back.
  [[nodiscard]] unsigned last_words() const { return last_words_; }
  void last_word(TimePoint until) {
    ++last_words_;
    floor_ = until;
    deadline_ = until;
  }
  // Who said so last: the `from` we re-broadcast.
  [[nodiscard]] const std::string& last_from() const { return accusers_.back(); }

  // The bounds for a cluster of n live members.
  static Duration min_timeout(unsigned mult, std::size_t n, Duration probe_interval, Duration floor);
  static Duration timeout(unsigned k, unsigned c, Duration min, Duration max);

 private:
  std::vector<std::string> accusers_;  // first accuser, then confirmers; at most k + 1 kept
  TimePoint start_;
  Duration min_;
  Duration max_;
  TimePoint deadline_;
  TimePoint floor_{};
  std::uint64_t id_;
  unsigned k_;
  unsigned confirmations_ = 0;
  unsigned last_words_ = 0;
};

}  // namespace weft::gossip
