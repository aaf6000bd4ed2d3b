#pragma once
// Time aliases. Only the agent's event loop reads a real clock; everything else
// receives `now` as an argument so it runs on virtual time in tests and the simulator.

#include <chrono>

namespace weft {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::microseconds;

// Seconds as a double, for reports.
inline double to_seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace weft
