#pragma once
// Wire encoding of the membership protocol (msgpack).
//
// A datagram (unreliable channel) is one compound packet:
//
//   packet  = array[ version, msg, msg, ... ]          1 + 1..kMaxMessagesPerPacket elements
//   version = uint (kProtocolVersion)
//   msg     = array[ type:uint, field, field, ... ]    fields per type below; a decoder accepts
//                                                      and ignores extra trailing fields, so
//                                                      later versions may append fields
//
//   type 1 ping           [1, seq:u32, target:str]
//   type 2 indirect ping  [2, seq:u32, target:str, target_addr:bin, want_nack:bool]
//   type 3 ack            [3, seq:u32]
//   type 4 nack           [4, seq:u32, refused:bool]          refused is optional (below)
//   type 5 alive          [5, name:str, addr:bin, incarnation:u64, meta:bin]
//   type 6 suspect        [6, name:str, incarnation:u64, from:str]
//   type 7 dead           [7, name:str, incarnation:u64, from:str]   from == name: graceful leave
//   type 9 sync digest    [9, seq:u32, digest:u64, reply:bool]
//                         a periodic anti-entropy round in one datagram each way: the asker sends
//                         the digest of its member table (reply false); a member with the same
//                         digest answers with its own (reply true); a member whose table differs
//                         answers with its whole table on the reliable channel instead (a push-pull
//                         response carrying the same seq). Added after version 1 shipped: older
//                         peers skip it as an unknown type.
//
// A message of unknown type inside a packet is skipped and counted (forward compatibility);
// a malformed message rejects the whole packet.
//
// Optional trailing fields (appended after version 1 shipped; the version number stays 1):
//   nack.refused  true: the relay's ping to the target drew an ICMP "port unreachable" (the
//                 refused-probe fast path, see Config::refused_fast_path). Sent only when true,
//                 so a plain nack is byte-for-byte the original [4, seq]; absent means false.
//                 Peers that predate it ignore the extra field and count a plain nack.
//   signed claims (claims.h; only in clusters that sign, and then always):
//   alive   [5, name, addr, incarnation, meta, sig:bin, cred:bin]
//   suspect [6, name, incarnation, from, sig:bin (, failed:bool)]   failed sent only when true
//   dead    [7, name, incarnation, from, sig:bin]
//   entry   [name, addr, incarnation, state, meta, sig:bin, cred:bin (, accuser:str,
//            accuse_sig:bin, accuse_dead:bool)]                     the last three only when
//                                                                   the entry is not alive
//   sig at most kMaxSignatureBytes, cred at most kMaxCredentialBytes. An empty sig means
//   unsigned: the decoder then drops the other claim fields (encoding never writes them).
// A decoder reads an optional field only when it is present; present, it must have its type.
//
// A stream message (reliable channel) is:
//
//   stream  = array[ version, pushpull ]
//   pushpull= array[ 8, seq:u32, join:bool, response:bool, array[ entry... ] (, digest:u64)? ]
//             digest (optional): a digest of the sender's member table (name, incarnation,
//             state), sent with the table that answers a sync digest datagram (type 9) so the
//             asker can tell whether the answerer lacks something of its own.
//   entry   = array[ name:str, addr:bin, incarnation:u64, state:uint, meta:bin ]
//
//   addr    = bin of 6 bytes (IPv4 + port, big endian) or 18 bytes (IPv6 + port)
//
// Sizes: a datagram is at most Config::max_packet_bytes (1400 by default); strings are at most
// kMaxNameBytes, metadata at most kMaxMetaBytes, a stream at most kMaxStreamBytes with at most
// kMaxStreamEntries entries. Decoding checks every length before allocating, never throws, and
// never recurses deeper than kMaxDepth.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"
#include "weft/gossip/types.h"

namespace weft::gossip {

inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::size_t kMaxMessagesPerPacket = 255;
inline constexpr std::size_t kMaxNameBytes = 128;
inline constexpr std::size_t kMaxMetaBytes = 1024;
inline constexpr std::size_t kMaxStreamEntries = 100'000;
inline constexpr std::size_t kMaxStreamBytes = 32u << 20;
inline constexpr std::size_t kMaxDepth = 4;
// Bytes a packet needs beyond its messages: array header (up to 3 bytes) + version (1 byte).
inline constexpr std::size_t kPacketOverhead = 4;

// append-only: values are on the wire
enum class MsgType : std::uint8_t {
  kPing = 1,
  kIndirectPing = 2,
  kAck = 3,
  kNack = 4,
  kAlive = 5,
  kSuspect = 6,
  kDead = 7,
  kPushPull = 8,
  kSyncDigest = 9,
};

struct Ping {
  std::uint32_t seq = 0;
  std::string target;
  friend bool operator==(const Ping&, const Ping&) = default;
};
struct IndirectPing {
  std::uint32_t seq = 0;
  std::string target;
  Endpoint target_addr;
  bool want_nack = false;
  friend bool operator==(const IndirectPing&, const IndirectPing&) = default;
};
struct Ack {
  std::uint32_t seq = 0;
  friend bool operator==(const Ack&, const Ack&) = default;
};
struct Nack {
  std::uint32_t seq = 0;
  bool refused = false;  // optional on the wire: see above
  friend bool operator==(const Nack&, const Nack&) = default;
};
// sig / cred / failed (and the entry's proof fields): signed claims (claims.h); empty when the
// cluster does not sign, and then not on the wire at all.
struct Alive {
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;
  std::vector<std::byte> meta;
  std::vector<std::byte> sig{};   // the member's signature over alive_claim(...)
  std::vector<std::byte> cred{};  // the member's credential
  friend bool operator==(const Alive&, const Alive&) = default;
};
struct Suspect {
  std::string name;
  std::uint64_t incarnation = 0;
  std::string from;
  std::vector<std::byte> sig{};  // from's signature over accusation_claim(failed ? dead : suspect, ...)
  bool failed = false;           // the signature is over a dead claim (a failed push-pull entry)
  friend bool operator==(const Suspect&, const Suspect&) = default;
};
struct Dead {
  std::string name;
  std::uint64_t incarnation = 0;
  std::string from;
  std::vector<std::byte> sig{};  // from's signature over accusation_claim(dead, ...)
  friend bool operator==(const Dead&, const Dead&) = default;
};
struct SyncDigest {
  std::uint32_t seq = 0;
  std::uint64_t digest = 0;
  bool reply = false;
  friend bool operator==(const SyncDigest&, const SyncDigest&) = default;
};
using Message = std::variant<Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead, SyncDigest>;

struct PushPullEntry {
  std::string name;
  Endpoint addr;
  std::uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  std::vector<std::byte> meta;
  std::vector<std::byte> sig{};         // signed claims: the member's alive signature
  std::vector<std::byte> cred{};        // ... and credential
  std::string accuser{};                // suspect / failed / left: who said so (left: the member)
  std::vector<std::byte> accuse_sig{};  // ... and its signature
  bool accuse_dead = false;             // ... over a dead claim (else a suspect claim)
  friend bool operator==(const PushPullEntry&, const PushPullEntry&) = default;
};
struct PushPull {
  std::uint32_t seq = 0;
  bool join = false;
  bool response = false;
  std::vector<PushPullEntry> members;
  std::optional<std::uint64_t> digest = std::nullopt;
  friend bool operator==(const PushPull&, const PushPull&) = default;
};

// Why a packet or stream was rejected. Each has a counter in GossipStats.
// append-only: values index stats arrays exported to users
enum class DecodeError : std::uint8_t {
  kMalformed = 0,      // not msgpack, truncated, or trailing bytes
  kBadVersion = 1,     // envelope version we do not speak
  kBadEnvelope = 2,    // envelope is not an array of the right shape
  kTooManyMessages = 3,
  kBadMessage = 4,     // a message has a missing or mistyped field
  kTooLarge = 5,       // a string, blob, count, nesting depth or the whole input exceeds its limit
  kBadAddress = 6,
  kUnknownType = 7,    // a stream message of a type we do not know (in packets: skipped)
};
inline constexpr std::size_t kDecodeErrorCount = 8;
const char* to_string(DecodeError e);

// Appends the encoding of one message (without the packet envelope) to `out`.
void encode_message(const Message& msg, std::vector<std::byte>& out);

// Builds one compound packet within a byte budget.
class PacketBuilder {
 public:
  explicit PacketBuilder(std::size_t max_bytes);
  // Adds an already-encoded message (from encode_message). Returns false, adding nothing, when
  // it would not fit or the packet already holds kMaxMessagesPerPacket messages.
  bool add_encoded(std::span<const std::byte> msg);
  bool add(const Message& msg);
  // Bytes free for the next message, exactly: counts the envelope header growing from 1 to 3
  // bytes at 16 elements. add_encoded(m) succeeds iff m.size() <= remaining().
  [[nodiscard]] std::size_t remaining() const;
  [[nodiscard]] std::size_t count() const { return count_; }
  [[nodiscard]] bool empty() const { return count_ == 0; }
  // The finished datagram: envelope header followed by the messages; empty when no message was
  // added. Resets the builder.
  std::vector<std::byte> finish();

 private:
  std::size_t max_bytes_;
  std::size_t count_ = 0;
  std::vector<std::byte> body_;
};

struct DecodedPacket {
  std::vector<Message> messages;
  std::size_t unknown_skipped = 0;  // messages of a type this version does not know
};

Result<DecodedPacket, DecodeError> decode_packet(std::span<const std::byte> bytes);

std::vector<std::byte> encode_stream(const PushPull& msg);
Result<PushPull, DecodeError> decode_stream(std::span<const std::byte> bytes);

}  // namespace weft::gossip
