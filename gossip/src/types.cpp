#include "weft/gossip/types.h"

#include "weft/gossip/codec.h"

namespace weft::gossip {

const char* to_string(MemberState s) {
  switch (s) {
    case MemberState::kAlive: return "alive";
    case MemberState::kSuspect: return "suspect";
    case MemberState::kFailed: return "failed";
    case MemberState::kLeft: return "left";
  }
  return "unknown";
}

const char* to_string(EventType t) {
  switch (t) {
    case EventType::kJoined: return "joined";
    case EventType::kUpdated: return "updated";
    case EventType::kSuspect: return "suspect";
    case EventType::kFailed: return "failed";
    case EventType::kLeft: return "left";
    case EventType::kRecovered: return "recovered";
  }
  return "unknown";
}

const char* to_string(DecodeError e) {
  switch (e) {
    case DecodeError::kMalformed: return "malformed";
    case DecodeError::kBadVersion: return "bad_version";
    case DecodeError::kBadEnvelope: return "bad_envelope";
    case DecodeError::kTooManyMessages: return "too_many_messages";
    case DecodeError::kBadMessage: return "bad_message";
    case DecodeError::kTooLarge: return "too_large";
    case DecodeError::kBadAddress: return "bad_address";
    case DecodeError::kUnknownType: return "unknown_type";
  }
  return "unknown";
}

}  // namespace weft::gossip
