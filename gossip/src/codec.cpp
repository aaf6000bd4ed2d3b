// msgpack wire codec of the membership protocol. The wire picture is in codec.h.
//
// Encoding is total: msgpack::packer writes straight into the caller's vector (no intermediate
// buffer). Limits are enforced by the decoder; Config::validate keeps local names and metadata
// within them.
//
// Decoding untrusted bytes happens in three steps, none of which lets an exception out:
//   1. Size checks on the whole input and, for packets, on the envelope's element count read from
//      its header -- before anything is allocated.
//   2. msgpack::unpack with explicit limits into a local zone. STR, BIN and EXT are referenced in
//      the input, never copied, so the zone only holds arrays and maps. msgpack-c allocates those
//      up front from their header count (24 or 48 bytes per element), so the container limit
//      bounds each one and the depth limit bounds how many can be open at once.
//   3. Conversion of the object tree into the public structs, checking every type and range.
//
// Error classes:
//   kMalformed  invalid msgpack, truncation (a header that claims more bytes than remain,
//               however large: msgpack-c waits for the bytes and never allocates them), trailing
//               bytes after the top-level object;
//   kTooLarge   whole input over its limit, a container count over the container limit, nesting
//               deeper than kMaxDepth, a name over kMaxNameBytes, metadata over kMaxMetaBytes;
//   the others  as documented in codec.h.

#include "weft/gossip/codec.h"

#include "weft/gossip/claims.h"

#include <msgpack.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <utility>

// The msgpackc-cxx target selects API v3 (unpack through create_object_visitor). The limits
// below were checked against that unpacker: it throws on every error, checks a container's
// count before allocating it, and counts every container (empty ones too) towards the depth.
static_assert(MSGPACK_DEFAULT_API_VERSION == 3, "codec.cpp was reviewed against msgpack-c API v3");

namespace weft::gossip {
namespace {

constexpr std::size_t kV4AddrBytes = 4 + 2;   // address + big-endian port
constexpr std::size_t kV6AddrBytes = 16 + 2;

// The version is one positive fixint byte and the envelope header at most 3 bytes (array16):
// together kPacketOverhead.
static_assert(kProtocolVersion <= 0x7f, "PacketBuilder assumes a one-byte version");
static_assert(kMaxMessagesPerPacket + 1 <= 0xffff, "PacketBuilder assumes at most an array16 header");
constexpr std::size_t kVersionBytes = 1;
static_assert(kPacketOverhead == 3 + kVersionBytes);

constexpr std::size_t array_header_bytes(std::size_t elements) {
  return elements <= 15 ? 1 : elements <= 0xffff ? 3 : 5;
}

constexpr std::uint64_t wire(MsgType t) { return static_cast<std::uint64_t>(t); }

// ---------------------------------------------------------------------------------------------
// Encoding

// msgpack::packer's output stream: appends to the caller's vector. (resize + memcpy measured
// ~15% faster than a range insert for the packer's 1-9 byte writes.)
class ByteSink {
 public:
  explicit ByteSink(std::vector<std::byte>& out) : out_(out) {}
  void write(const char* data, std::size_t size) {
    if (size == 0) return;  // empty bodies may come with a null pointer
    const std::size_t old = out_.size();
    out_.resize(old + size);
    std::memcpy(out_.data() + old, data, size);
  }

 private:
  std::vector<std::byte>& out_;
};
using Packer = msgpack::packer<ByteSink>;

// Bytes of a message or entry besides its strings and metadata (array header, type, integers,
// address, bool, str/bin headers) stay below this; only a reservation hint.
constexpr std::size_t kFixedBytesHint = 48;

// Makes room for `extra` more bytes while keeping geometric growth: a plain
// reserve(size + extra) on every append would reallocate on every message of a packet.
void reserve_more(std::vector<std::byte>& out, std::size_t extra) {
  const std::size_t need = out.size() + extra;
  if (need > out.capacity()) out.reserve(std::max(need, 2 * out.capacity()));
}

// Names and metadata are far below 4 GiB (the decoder rejects anything over its limit).
std::uint32_t wire_size(std::size_t n) { return static_cast<std::uint32_t>(n); }

void pack_str(Packer& pk, const std::string& s) {
  pk.pack_str(wire_size(s.size()));
  pk.pack_str_body(s.data(), wire_size(s.size()));
}

void pack_bin(Packer& pk, const std::vector<std::byte>& b) {
  pk.pack_bin(wire_size(b.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), wire_size(b.size()));
}

void pack_addr(Packer& pk, const Endpoint& e) {
  std::array<char, kV6AddrBytes> buf{};
  const std::size_t n = e.ip_size();
  std::memcpy(buf.data(), e.ip.data(), n);
  buf[n] = static_cast<char>(e.port >> 8);
  buf[n + 1] = static_cast<char>(e.port & 0xff);
  pk.pack_bin(wire_size(n + 2));
  pk.pack_bin_body(buf.data(), wire_size(n + 2));
}

void pack_bool(Packer& pk, bool v) { v ? pk.pack_true() : pk.pack_false(); }

void pack_header(Packer& pk, MsgType type, std::uint32_t elements) {
  pk.pack_array(elements);
  pk.pack_uint8(static_cast<std::uint8_t>(type));
}

// One overload per message type; the field order is the wire picture in codec.h.
struct MessagePacker {
  Packer& pk;
  void operator()(const Ping& m) const {
    pack_header(pk, MsgType::kPing, 3);
    pk.pack_uint32(m.seq);
    pack_str(pk, m.target);
  }
  void operator()(const IndirectPing& m) const {
    pack_header(pk, MsgType::kIndirectPing, 5);
    pk.pack_uint32(m.seq);
    pack_str(pk, m.target);
    pack_addr(pk, m.target_addr);
    pack_bool(pk, m.want_nack);
  }
  void operator()(const Ack& m) const {
    pack_header(pk, MsgType::kAck, 2);
    pk.pack_uint32(m.seq);
  }
  void operator()(const Nack& m) const {
    // A plain nack keeps the original two-field form (and its golden bytes).
    pack_header(pk, MsgType::kNack, m.refused ? 3 : 2);
    pk.pack_uint32(m.seq);
    if (m.refused) pack_bool(pk, true);
  }
  // Signed claims add trailing fields only when signed, so unsigned messages keep their bytes.
  void operator()(const Alive& m) const {
    const bool signed_claim = !m.sig.empty();
    pack_header(pk, MsgType::kAlive, signed_claim ? 7 : 5);
    pack_str(pk, m.name);
    pack_addr(pk, m.addr);
    pk.pack_uint64(m.incarnation);
    pack_bin(pk, m.meta);
    if (signed_claim) {
      pack_bin(pk, m.sig);
      pack_bin(pk, m.cred);
    }
  }
  void operator()(const Suspect& m) const {
    const bool signed_claim = !m.sig.empty();
    pack_header(pk, MsgType::kSuspect, signed_claim ? (m.failed ? 6 : 5) : 4);
    pack_str(pk, m.name);
    pk.pack_uint64(m.incarnation);
    pack_str(pk, m.from);
    if (signed_claim) {
      pack_bin(pk, m.sig);
      if (m.failed) pack_bool(pk, true);
    }
  }
  void operator()(const Dead& m) const {
    const bool signed_claim = !m.sig.empty();
    pack_header(pk, MsgType::kDead, signed_claim ? 5 : 4);
    pack_str(pk, m.name);
    pk.pack_uint64(m.incarnation);
    pack_str(pk, m.from);
    if (signed_claim) pack_bin(pk, m.sig);
  }
  void operator()(const SyncDigest& m) const {
    pack_header(pk, MsgType::kSyncDigest, 4);
    pk.pack_uint32(m.seq);
    pk.pack_uint64(m.digest);
    pack_bool(pk, m.reply);
  }
};

std::size_t variable_bytes(const Message& msg) {
  return std::visit(
      [](const auto& m) {
        std::size_t n = 0;
        if constexpr (requires { m.target; }) n += m.target.size();
        if constexpr (requires { m.name; }) n += m.name.size();
        if constexpr (requires { m.from; }) n += m.from.size();
        if constexpr (requires { m.meta; }) n += m.meta.size();
        if constexpr (requires { m.sig; }) n += m.sig.size();
        if constexpr (requires { m.cred; }) n += m.cred.size();
        return n;
      },
      msg);
}

// ---------------------------------------------------------------------------------------------
// Decoding

// Largest datagram we look at (the UDP length field's maximum).
constexpr std::size_t kMaxPacketBytes = 65535;
// Container limit in packets: the envelope may hold kMaxMessagesPerPacket + 1 elements and no
// message needs more (extra fields of later versions included). Worst case the zone holds
// kMaxDepth open maps of this size: ~48 KB, whatever the headers claim.
constexpr std::size_t kPacketContainerLimit = kMaxMessagesPerPacket + 1;
// Smallest possible push-pull entry: fixarray, 1-char fixstr, bin8 IPv4 address, fixint
// incarnation, fixint state, empty bin8 metadata. Bounds the reservation for entries.
constexpr std::size_t kMinEntryBytes = 1 + 2 + (2 + kV4AddrBytes) + 1 + 1 + 2;

using Object = msgpack::object;
using Objects = std::span<const Object>;

Unexpected<DecodeError> reject(DecodeError e) { return Unexpected<DecodeError>(e); }

Objects elements(const Object& array) { return {array.via.array.ptr, array.via.array.size}; }

// Maps the exception being handled to a DecodeError. Call only from inside a catch block.
DecodeError current_exception_error() noexcept {
  try {
    throw;
  } catch (const msgpack::size_overflow&) {  // container count or depth over its limit
    return DecodeError::kTooLarge;
  } catch (const msgpack::unpack_error&) {   // parse_error, insufficient_bytes
    return DecodeError::kMalformed;
  } catch (const std::bad_alloc&) {
    return DecodeError::kTooLarge;
  } catch (...) {
    return DecodeError::kMalformed;
  }
}

// Every STR/BIN/EXT is referenced in the input (which outlives the object tree), not copied, so
// their msgpack-c limits are just the input size: the fields we read are checked by
// FieldReader; the rest (unknown messages, extra fields) is never looked at.
bool reference_input(msgpack::type::object_type /*type*/, std::size_t /*size*/, void* /*user*/) {
  return true;
}

// Unpacks the one msgpack object that must fill `bytes` exactly. msgpack errors propagate as
// exceptions (see current_exception_error).
Result<Object, DecodeError> unpack_exactly(std::span<const std::byte> bytes, std::size_t container_limit,
                                           msgpack::zone& zone) {
  const std::size_t n = bytes.size();
  const msgpack::unpack_limit limits(/*array=*/container_limit, /*map=*/container_limit,
                                     /*str=*/n, /*bin=*/n, /*ext=*/n, /*depth=*/kMaxDepth);
  std::size_t off = 0;
  const Object obj =
      msgpack::unpack(zone, reinterpret_cast<const char*>(bytes.data()), n, off, reference_input, nullptr, limits);
  if (off != n) return reject(DecodeError::kMalformed);  // trailing bytes
  return obj;
}

// The zone a decode unpacks into: one per thread, reused and cleared before each use. A fresh
// msgpack::zone mallocs its first 8 KiB chunk, which on an idle agent was a tenth of the CPU
// spent per received datagram. Decodes do not nest, and the decoded structs never point into it.
msgpack::zone& scratch_zone() {
  thread_local msgpack::zone zone;
  zone.clear();  // frees the chunks a large input added; keeps the first
  return zone;
}

// Checks the envelope shared by packets and streams; returns the elements after the version.
Result<Objects, DecodeError> open_envelope(const Object& root) {
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 2) return reject(DecodeError::kBadEnvelope);
  const Object& version = root.via.array.ptr[0];
  if (version.type != msgpack::type::POSITIVE_INTEGER) return reject(DecodeError::kBadEnvelope);
  if (version.via.u64 != kProtocolVersion) return reject(DecodeError::kBadVersion);
  return elements(root).subspan(1);
}

// The element count of a top-level array header, read without unpacking; nullopt when `bytes`
// does not start with a complete array header (unpacking then classifies the input).
std::optional<std::uint32_t> array_header_count(std::span<const std::byte> bytes) {
  auto at = [&](std::size_t i) { return std::to_integer<std::uint32_t>(bytes[i]); };
  if (bytes.empty()) return std::nullopt;
  const std::uint32_t tag = at(0);
  if ((tag & 0xf0) == 0x90) return tag & 0x0f;                                    // fixarray
  if (tag == 0xdc && bytes.size() >= 3) return (at(1) << 8) | at(2);              // array16
  if (tag == 0xdd && bytes.size() >= 5) return (at(1) << 24) | (at(2) << 16) | (at(3) << 8) | at(4);  // array32
  return std::nullopt;
}

// Reads the fields of one wire array in order and checks each type and range. The first
// problem sticks: later reads do nothing and return empty values, so a decoder reads all its
// fields and checks error() once. Fields past the last one read are ignored (later protocol
// versions may append fields); a missing field is kBadMessage.
class FieldReader {
 public:
  explicit FieldReader(const Object& array) : fields_(elements(array)) {
    WEFT_ASSERT(array.type == msgpack::type::ARRAY);
  }

  [[nodiscard]] std::optional<DecodeError> error() const { return error_; }

  std::uint64_t u64() {
    const Object* o = next(msgpack::type::POSITIVE_INTEGER);
    return o ? o->via.u64 : 0;
  }

  std::uint32_t u32() { return static_cast<std::uint32_t>(u64_at_most(std::numeric_limits<std::uint32_t>::max())); }

  MemberState state() { return static_cast<MemberState>(u64_at_most(kMemberStateCount - 1)); }

  bool boolean() {
    const Object* o = next(msgpack::type::BOOLEAN);
    return o ? o->via.boolean : false;
  }

  // An optional trailing bool (appended in a later revision): `absent` when the message ends
  // here, as it does from older peers; present, it must be a bool.
  bool optional_boolean(bool absent) { return pos_ < fields_.size() ? boolean() : absent; }
  std::optional<std::uint64_t> optional_u64() {
    if (pos_ >= fields_.size()) return std::nullopt;
    return u64();
  }

  // A member name: non-empty, at most kMaxNameBytes.
  std::string name() {
    const Object* o = next(msgpack::type::STR);
    if (!o) return {};
    const std::size_t size = o->via.str.size;
    if (size == 0 || size > kMaxNameBytes) {
      fail(size == 0 ? DecodeError::kBadMessage : DecodeError::kTooLarge);
      return {};
    }
    return {o->via.str.ptr, size};
  }

  std::vector<std::byte> meta() {
    const Object* o = next(msgpack::type::BIN);
    if (!o || o->via.bin.size == 0) return {};
    if (o->via.bin.size > kMaxMetaBytes) {
      fail(DecodeError::kTooLarge);
      return {};
    }
    const auto* p = reinterpret_cast<const std::byte*>(o->via.bin.ptr);
    return {p, p + o->via.bin.size};
  }

  Endpoint addr() {
    const Object* o = next(msgpack::type::BIN);
    if (!o) return {};
    Endpoint e;
    if (o->via.bin.size == kV4AddrBytes) {
      e.family = Endpoint::Family::kV4;
    } else if (o->via.bin.size == kV6AddrBytes) {
      e.family = Endpoint::Family::kV6;
    } else {
      fail(DecodeError::kBadAddress);
      return {};
    }
    const auto* p = reinterpret_cast<const std::uint8_t*>(o->via.bin.ptr);
    const std::size_t n = e.ip_size();
    std::copy_n(p, n, e.ip.begin());
    e.port = static_cast<std::uint16_t>((p[n] << 8) | p[n + 1]);
    return e;
  }

  // True when fields remain (optional trailing fields follow).
  [[nodiscard]] bool more() const { return !error_ && pos_ < fields_.size(); }

  // A blob of at most `max` bytes (signatures, credentials).
  std::vector<std::byte> bin(std::size_t max) {
    const Object* o = next(msgpack::type::BIN);
    if (!o || o->via.bin.size == 0) return {};
    if (o->via.bin.size > max) {
      fail(DecodeError::kTooLarge);
      return {};
    }
    const auto* p = reinterpret_cast<const std::byte*>(o->via.bin.ptr);
    return {p, p + o->via.bin.size};
  }

  // A nested array field (push-pull entries); nullptr after an error.
  const Object* array() { return next(msgpack::type::ARRAY); }

 private:
  std::uint64_t u64_at_most(std::uint64_t max) {
    const std::uint64_t v = u64();
    if (v <= max) return v;
    fail(DecodeError::kBadMessage);
    return 0;
  }
  const Object* next(msgpack::type::object_type type) {
    if (error_) return nullptr;
    if (pos_ == fields_.size() || fields_[pos_].type != type) {
      fail(DecodeError::kBadMessage);
      return nullptr;
    }
    return &fields_[pos_++];
  }
  void fail(DecodeError e) {
    if (!error_) error_ = e;
  }

  Objects fields_;
  std::size_t pos_ = 0;
  std::optional<DecodeError> error_;
};

// Decodes one element of a packet into `out`: a message, or a skipped one of unknown type.
std::optional<DecodeError> decode_message(const Object& obj, DecodedPacket& out) {
  if (obj.type != msgpack::type::ARRAY) return DecodeError::kBadMessage;
  FieldReader r(obj);
  const std::uint64_t type = r.u64();
  if (r.error()) return r.error();
  // Braced initialisers evaluate left to right, so fields are read in wire order.
  auto emit = [&](auto&& msg) -> std::optional<DecodeError> {
    if (r.error()) return r.error();
    out.messages.emplace_back(std::forward<decltype(msg)>(msg));
    return std::nullopt;
  };
  switch (type) {
    case wire(MsgType::kPing):
      return emit(Ping{.seq = r.u32(), .target = r.name()});
    case wire(MsgType::kIndirectPing):
      return emit(IndirectPing{.seq = r.u32(), .target = r.name(), .target_addr = r.addr(), .want_nack = r.boolean()});
    case wire(MsgType::kAck):
      return emit(Ack{.seq = r.u32()});
    case wire(MsgType::kNack):
      return emit(Nack{.seq = r.u32(), .refused = r.optional_boolean(false)});
    case wire(MsgType::kAlive): {
      Alive a{.name = r.name(), .addr = r.addr(), .incarnation = r.u64(), .meta = r.meta()};
      if (r.more()) {
        a.sig = r.bin(kMaxSignatureBytes);
        a.cred = r.bin(kMaxCredentialBytes);
        if (a.sig.empty()) a.cred.clear();  // unsigned: as encode_message writes it
      }
      return emit(std::move(a));
    }
    case wire(MsgType::kSuspect): {
      Suspect m{.name = r.name(), .incarnation = r.u64(), .from = r.name()};
      if (r.more()) {
        m.sig = r.bin(kMaxSignatureBytes);
        m.failed = r.optional_boolean(false) && !m.sig.empty();
      }
      return emit(std::move(m));
    }
    case wire(MsgType::kDead): {
      Dead m{.name = r.name(), .incarnation = r.u64(), .from = r.name()};
      if (r.more()) m.sig = r.bin(kMaxSignatureBytes);
      return emit(std::move(m));
    }
    case wire(MsgType::kSyncDigest):
      return emit(SyncDigest{.seq = r.u32(), .digest = r.u64(), .reply = r.boolean()});
    default:  // a later version's message (or a push-pull, which has no place in a packet)
      ++out.unknown_skipped;
      return std::nullopt;
  }
}

Result<DecodedPacket, DecodeError> decode_packet_unguarded(std::span<const std::byte> bytes) {
  if (bytes.size() > kMaxPacketBytes) return reject(DecodeError::kTooLarge);
  // Checked before unpacking: msgpack-c would report an over-long envelope as a size overflow
  // indistinguishable from any other container's.
  if (auto count = array_header_count(bytes); count && *count > kMaxMessagesPerPacket + 1) {
    return reject(DecodeError::kTooManyMessages);
  }
  auto root = unpack_exactly(bytes, kPacketContainerLimit, scratch_zone());
  if (!root) return reject(root.error());
  auto body = open_envelope(*root);
  if (!body) return reject(body.error());

  DecodedPacket out;
  out.messages.reserve(body->size());
  for (const Object& element : *body) {
    if (auto e = decode_message(element, out)) return reject(*e);
  }
  return out;
}

Result<PushPull, DecodeError> decode_stream_unguarded(std::span<const std::byte> bytes) {
  if (bytes.size() > kMaxStreamBytes) return reject(DecodeError::kTooLarge);
  // No container can hold more elements than the input has bytes; capping the limit by the
  // input size keeps a short input from making msgpack-c allocate kMaxStreamEntries objects.
  auto root = unpack_exactly(bytes, std::min(kMaxStreamEntries, bytes.size()), scratch_zone());
  if (!root) return reject(root.error());
  auto body = open_envelope(*root);  // elements after the push-pull are ignored
  if (!body) return reject(body.error());

  const Object& pp = body->front();
  if (pp.type != msgpack::type::ARRAY) return reject(DecodeError::kBadMessage);
  FieldReader r(pp);
  const std::uint64_t type = r.u64();
  if (r.error()) return reject(*r.error());
  if (type != wire(MsgType::kPushPull)) return reject(DecodeError::kUnknownType);

  PushPull out;
  out.seq = r.u32();
  out.join = r.boolean();
  out.response = r.boolean();
  const Object* entries = r.array();
  if (r.error()) return reject(*r.error());

  const Objects list = elements(*entries);
  out.members.reserve(std::min(list.size(), bytes.size() / kMinEntryBytes));
  for (const Object& entry : list) {
    if (entry.type != msgpack::type::ARRAY) return reject(DecodeError::kBadMessage);
    FieldReader er(entry);
    PushPullEntry m{.name = er.name(), .addr = er.addr(), .incarnation = er.u64(), .state = er.state(), .meta = er.meta()};
    if (er.more()) {
      m.sig = er.bin(kMaxSignatureBytes);
      m.cred = er.bin(kMaxCredentialBytes);
      if (er.more()) {
        m.accuser = er.name();
        m.accuse_sig = er.bin(kMaxSignatureBytes);
        m.accuse_dead = er.boolean();
      }
      if (m.sig.empty()) {  // unsigned: as encode_stream writes it
        m.cred.clear();
        m.accuser.clear();
        m.accuse_sig.clear();
        m.accuse_dead = false;
      }
    }
    if (er.error()) return reject(*er.error());
    out.members.push_back(std::move(m));
  }
  out.digest = r.optional_u64();
  if (r.error()) return reject(*r.error());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API

void encode_message(const Message& msg, std::vector<std::byte>& out) {
  reserve_more(out, kFixedBytesHint + variable_bytes(msg));
  ByteSink sink(out);
  Packer pk(sink);
  std::visit(MessagePacker{pk}, msg);
}

PacketBuilder::PacketBuilder(std::size_t max_bytes) : max_bytes_(max_bytes) {}

// Exact budget: the bytes left for one more message once the envelope header has grown to
// count their element (1 byte up to 15 elements, 3 bytes from 16). Invariant: a message of
// size s is accepted iff s <= remaining(), and finish().size() <= max_bytes_.
std::size_t PacketBuilder::remaining() const {
  if (count_ >= kMaxMessagesPerPacket) return 0;
  const std::size_t used = array_header_bytes(count_ + 2) + kVersionBytes + body_.size();
  return used < max_bytes_ ? max_bytes_ - used : 0;
}

bool PacketBuilder::add_encoded(std::span<const std::byte> msg) {
  if (msg.size() > remaining()) return false;
  body_.insert(body_.end(), msg.begin(), msg.end());
  ++count_;
  return true;
}

bool PacketBuilder::add(const Message& msg) {
  // Encodes in place and rolls back when it does not fit: no temporary buffer.
  const std::size_t room = remaining();
  if (room == 0) return false;
  const std::size_t before = body_.size();
  encode_message(msg, body_);
  if (body_.size() - before > room) {
    body_.resize(before);
    return false;
  }
  ++count_;
  return true;
}

std::vector<std::byte> PacketBuilder::finish() {
  if (count_ == 0) return {};  // nothing to send (an envelope without messages is invalid)
  const std::size_t elements = count_ + 1;
  std::vector<std::byte> out;
  out.reserve(array_header_bytes(elements) + kVersionBytes + body_.size());
  ByteSink sink(out);
  Packer pk(sink);
  pk.pack_array(static_cast<std::uint32_t>(elements));
  pk.pack_uint32(kProtocolVersion);
  out.insert(out.end(), body_.begin(), body_.end());
  body_.clear();  // keeps its capacity for the next packet
  count_ = 0;
  return out;
}

Result<DecodedPacket, DecodeError> decode_packet(std::span<const std::byte> bytes) {
  try {
    return decode_packet_unguarded(bytes);
  } catch (...) {
    return reject(current_exception_error());
  }
}

std::vector<std::byte> encode_stream(const PushPull& msg) {
  std::size_t hint = 2 * kFixedBytesHint;
  for (const auto& e : msg.members) {
    hint += kFixedBytesHint + e.name.size() + e.meta.size() + e.sig.size() + e.cred.size() + e.accuser.size() +
            e.accuse_sig.size();
  }
  std::vector<std::byte> out;
  out.reserve(hint);
  ByteSink sink(out);
  Packer pk(sink);
  pk.pack_array(2);
  pk.pack_uint32(kProtocolVersion);
  pack_header(pk, MsgType::kPushPull, msg.digest ? 6 : 5);
  pk.pack_uint32(msg.seq);
  pack_bool(pk, msg.join);
  pack_bool(pk, msg.response);
  pk.pack_array(wire_size(msg.members.size()));
  for (const auto& e : msg.members) {
    const bool signed_claim = !e.sig.empty();
    const bool accused = signed_claim && !e.accuser.empty();
    pk.pack_array(accused ? 10 : signed_claim ? 7 : 5);
    pack_str(pk, e.name);
    pack_addr(pk, e.addr);
    pk.pack_uint64(e.incarnation);
    pk.pack_uint8(static_cast<std::uint8_t>(e.state));
    pack_bin(pk, e.meta);
    if (signed_claim) {
      pack_bin(pk, e.sig);
      pack_bin(pk, e.cred);
    }
    if (accused) {
      pack_str(pk, e.accuser);
      pack_bin(pk, e.accuse_sig);
      pack_bool(pk, e.accuse_dead);
    }
  }
  if (msg.digest) pk.pack_uint64(*msg.digest);
  return out;
}

Result<PushPull, DecodeError> decode_stream(std::span<const std::byte> bytes) {
  try {
    return decode_stream_unguarded(bytes);
  } catch (...) {
    return reject(current_exception_error());
  }
}

// ---------------------------------------------------------------------------------------------
// Signed claims (claims.h)

namespace {
constexpr char kClaimContext[] = "weft gossip claim";
constexpr std::uint8_t kClaimVersion = 1;

void pack_claim_head(Packer& pk, std::uint32_t elements, ClaimKind kind, const std::string& name,
                     std::uint64_t incarnation) {
  pk.pack_array(elements);
  pk.pack_str(sizeof kClaimContext - 1);
  pk.pack_str_body(kClaimContext, sizeof kClaimContext - 1);
  pk.pack_uint8(kClaimVersion);
  pk.pack_uint8(static_cast<std::uint8_t>(kind));
  pack_str(pk, name);
  pk.pack_uint64(incarnation);
}
}  // namespace

std::vector<std::byte> alive_claim(const std::string& name, const Endpoint& addr, std::uint64_t incarnation,
                                   const std::vector<std::byte>& meta) {
  std::vector<std::byte> out;
  out.reserve(kFixedBytesHint + name.size() + meta.size());
  ByteSink sink(out);
  Packer pk(sink);
  pack_claim_head(pk, 7, ClaimKind::kAlive, name, incarnation);
  pack_addr(pk, addr);
  pack_bin(pk, meta);
  return out;
}

std::vector<std::byte> accusation_claim(ClaimKind kind, const std::string& name, std::uint64_t incarnation,
                                        const std::string& accuser) {
  std::vector<std::byte> out;
  out.reserve(kFixedBytesHint + name.size() + accuser.size());
  ByteSink sink(out);
  Packer pk(sink);
  pack_claim_head(pk, 6, kind, name, incarnation);
  pack_str(pk, accuser);
  return out;
}

}  // namespace weft::gossip
