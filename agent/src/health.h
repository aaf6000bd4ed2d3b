#pragma once
// Health checks of the services registered on this agent (issue 4), as Consul's tcp / http /
// script checks. Driven by the agent's single-threaded poll loop: no threads, no blocking call.
// The loop owns the clock; every call takes `now`, and tick() returns the next deadline.
//
//   loop:  deadline = min(..., checker.tick(now))
//          checker.append_pollfds(fds)          // sockets and pidfds of the checks in flight
//          poll(fds, until deadline)
//          checker.on_poll(now, fds)            // advances the checks whose descriptor is ready
//          for (auto& [service, h] : checker.take_changes()) ...
//
// A check is a small state machine on one descriptor: a non-blocking socket (tcp: connect;
// http: connect, send, read the status line) or a pidfd (exec: the child's exit). Invariants:
// a check in flight owns exactly one open descriptor; a descriptor is closed when its check ends,
// is cancelled or its service is removed; a spawned process is always reaped (killed first when
// it outlives its timeout or its service), so checks leave neither zombies nor descriptors.

#include <poll.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/base/result.h"
#include "weft/base/time.h"

namespace weft::agent {

// append-only: values may be stored and sent to other members.
enum class Health : std::uint8_t { kPassing = 0, kCritical = 1 };
const char* to_string(Health h);

struct CheckSpec {
  enum class Kind : std::uint8_t { kNone, kTcp, kHttp, kExec };
  Kind kind = Kind::kNone;
  std::string target;  // http: the URL; exec: the command line; tcp/none: empty
  Duration interval = std::chrono::seconds(10);
  Duration timeout = std::chrono::seconds(5);  // capped at the interval

  // "" -> kNone, "tcp" -> connect to 127.0.0.1:service_port, "http://HOST[:PORT]/PATH" (plain
  // http; HOST an IPv4 literal or "localhost"; PORT defaults to 80), "exec:COMMAND" (run with
  // /bin/sh -c). Anything else, or an interval under kMinCheckInterval: an error naming the problem.
  static Result<CheckSpec> parse(std::string_view text, Duration interval);
  std::string text() const;  // back to the form parse() takes

  friend bool operator==(const CheckSpec&, const CheckSpec&) = default;
};

// Checks more often than this would cost the loop more than they tell.
inline constexpr Duration kMinCheckInterval = std::chrono::milliseconds(100);
inline constexpr std::size_t kMaxCheckText = 4096;

struct CheckCounters {
  std::uint64_t run = 0;  // checks started
  std::uint64_t passed = 0;
  std::uint64_t failed = 0;  // timeouts included
  std::uint64_t timeouts = 0;
};

struct HealthStats {
  std::array<CheckCounters, 4> by_kind{};  // indexed by CheckSpec::Kind (kNone stays zero)
  std::uint64_t cancelled = 0;             // checks in flight when their service was removed or re-set
  std::uint64_t killed = 0;                // exec processes killed: timed out or cancelled
  std::uint64_t reaped = 0;                // exec processes reaped
  std::uint64_t flips = 0;                 // health changes (what take_changes() reports)
  const CheckCounters& of(CheckSpec::Kind k) const { return by_kind[static_cast<std::size_t>(k)]; }
};

class HealthChecker {
 public:
  HealthChecker() = default;
  // Kills what still runs and waits (at most ~1 s, only here) to reap it.
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // (Re)starts checking `service` (its local port is `port`); the first check starts at the next
  // tick(). A new service starts critical until its first check passes; Kind::kNone is passing
  // at once and never checked. Re-setting a service keeps its health unless it gains its first
  // check (-> critical) or loses it (-> passing), as the agent's catalog does; a check in flight
  // is cancelled.
  void set(TimePoint now, const std::string& service, std::uint16_t port, CheckSpec spec);
  // Cancels its check (an exec process is killed and reaped soon after) and forgets the service,
  // its unreported changes included.
  void remove(const std::string& service);

  // Appends {fd, events, 0} for every check in flight. Hand the same entries back to on_poll()
  // after poll(2), before the next tick() (other entries in the span are ignored).
  void append_pollfds(std::vector<pollfd>& fds) const;
  void on_poll(TimePoint now, std::span<const pollfd> fds);
  // Starts due checks and fails the ones past their timeout; returns the next deadline
  // (TimePoint::max() if none). Never blocks.
  [[nodiscard]] TimePoint tick(TimePoint now);

  // Health flips since the last call, in order: (service, new health). A new service's initial
  // health is not a flip.
  [[nodiscard]] std::vector<std::pair<std::string, Health>> take_changes();
  [[nodiscard]] std::optional<Health> health(const std::string& service) const;
  // Why the last check ended as it did: "connected", "connect refused", "HTTP 503", "exit 1",
  // "timeout"... Empty for an unknown or not yet checked service.
  [[nodiscard]] std::string last_output(const std::string& service) const;
  [[nodiscard]] const HealthStats& stats() const { return stats_; }

 private:
  enum class Phase : std::uint8_t { kIdle, kConnecting, kSending, kReceiving, kRunning };

  struct Entry {
    std::uint16_t port = 0;
    CheckSpec spec;
    Health health = Health::kCritical;
    std::string output;
    TimePoint next_start{};
    // The check in flight (phase != kIdle): one descriptor, its deadline, and its progress.
    Phase phase = Phase::kIdle;
    int fd = -1;  // socket, or the pidfd of `pid`
    pid_t pid = -1;
    TimePoint deadline{};
    std::string io;  // http: the request still to send, then the response read so far
  };
  // An exec process killed before it exited: its pidfd stays in the poll set until it is reaped.
  struct Orphan {
    pid_t pid = -1;
    int pidfd = -1;
  };

  void start(TimePoint now, const std::string& service, Entry& e);
  void start_connect(const std::string& service, Entry& e, std::uint32_t addr, std::uint16_t port);
  void start_exec(const std::string& service, Entry& e);
  void advance(const std::string& service, Entry& e, short revents);
  void advance_http(const std::string& service, Entry& e);
  void finish(const std::string& service, Entry& e, bool passed, std::string output);
  void cancel_process(Entry& e);
  void cancel(Entry& e);
  void release(Entry& e);
  void set_health(const std::string& service, Entry& e, Health h);
  void reap_orphans();

  std::map<std::string, Entry, std::less<>> entries_;
  std::map<int, std::string> by_fd_;  // descriptor of a check in flight -> its service
  std::vector<Orphan> orphans_;
  std::vector<std::pair<std::string, Health>> changes_;
  HealthStats stats_;
};

}  // namespace weft::agent
