#pragma once
// Public value types of the membership core.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/time.h"

namespace weft::gossip {

// append-only: values are on the wire (push-pull state entries)
enum class MemberState : std::uint8_t {
  kAlive = 0,
  kSuspect = 1,
  kFailed = 2,
  kLeft = 3,
};
inline constexpr std::size_t kMemberStateCount = 4;
const char* to_string(MemberState s);

// What one node believes about one member.
struct MemberInfo {
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  std::vector<std::byte> meta;
  TimePoint state_change{};  // local time of the last state change
};

enum class EventType : std::uint8_t {
  kJoined,     // first seen, or back after a graceful leave
  kUpdated,    // same state, new metadata or address at a higher incarnation
  kSuspect,
  kFailed,
  kLeft,
  kRecovered,  // suspect or failed -> alive
};
const char* to_string(EventType t);

// Events are small on purpose (no metadata): a 10 000-node simulation emits ~10^8 of them
// while joining. Node::member() returns the metadata.
struct MemberEvent {
  EventType type;
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
};

// The reliable channel carries push-pull state syncs (join and anti-entropy): in the agent it is
// ZeroMQ over TCP, in the simulator a lossless (but partitionable) link.
enum class Channel : std::uint8_t { kUnreliable, kReliable };

struct Datagram {
  Endpoint to;
  std::vector<std::byte> bytes;
  Channel channel = Channel::kUnreliable;
};

}  // namespace weft::gossip
