#pragma once
// The record layer of the data plane: after the Noise handshake (noise.h) each direction of a
// connection is a stream of AEAD records under that direction's key from Handshake::split().
// Pure computation: the caller reads and writes the socket.
//
// Record wire picture (integers big-endian):
//
//   0        1                      4
//   +--------+----------------------+---------------------------------------------+
//   | type   | length (3)           | ciphertext (length - 16) || tag (16)        |
//   +--------+----------------------+---------------------------------------------+
//
// - The 4 header bytes are the AEAD's additional data: neither type nor length can be changed.
// - The nonce is the record's number in its direction (0, 1, 2, ...) and is never sent: a record
//   that is replayed, dropped, reordered or duplicated is opened under another number and fails
//   its tag. AES-256-GCM nonce: 4 zero bytes || counter (8); XChaCha20-Poly1305: 16 zero bytes ||
//   counter (8); counters big-endian. Each key serves one direction of one connection only.
// - Plaintext per record: 0 .. kMaxRecordPlaintext = 16 KiB, as TLS. The measurements
//   (notes/data-plane-measurements.md) show that the bytes per syscall, not per record, set the
//   throughput, so the caller seals many records into one buffer (seal_into appends) and writes
//   them at once; small records bound what an opener buffers and the delay to the first byte.
// - Types: data; rekey (empty: once it is sealed / opened, both ends replace this direction's key
//   with HMAC-SHA256(key, "weft rekey"); the counter keeps running); close (empty: the last record
//   of the direction; any byte after it is an error, and a stream that ends without it was cut).
// - The sealer rekeys by itself every rekey_interval records (2^24 by default, inside AES-GCM's
//   limit of 2^24.5 full records per key of RFC 8446 §5.5), and refuses to seal once the counter
//   reaches max_records (2^64 - 1: the counter never wraps).
// - Any failure to open is final (sticky): the caller closes the connection. Failures are counted
//   by reason in RecordStats.
//
// Ciphers: AES-256-GCM through OpenSSL's EVP (~2x libsodium's on this hardware; one EVP context
// per direction, reused for every record) where the CPU has AES-NI, else XChaCha20-Poly1305
// (libsodium). The layer above negotiates which inside the authenticated handshake.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/byte_buffer.h"

namespace weft::transport {

inline constexpr std::size_t kRecordHeaderBytes = 4;
inline constexpr std::size_t kRecordTagBytes = 16;
inline constexpr std::size_t kMaxRecordPlaintext = 16 * 1024;
inline constexpr std::size_t kRecordOverhead = kRecordHeaderBytes + kRecordTagBytes;  // 20
inline constexpr std::size_t kMaxRecordBytes = kMaxRecordPlaintext + kRecordOverhead;

using RecordKey = std::array<unsigned char, 32>;  // one direction's key (SessionKeys)

// append-only: values are negotiated on the wire
enum class Cipher : std::uint8_t { kAes256Gcm = 1, kXChaCha20Poly1305 = 2 };
const char* to_string(Cipher c);

// True if the CPU has AES-NI and PCLMUL (libsodium's check): AES-GCM is fast and constant-time.
[[nodiscard]] bool aes_ni_available();
// What this node offers first: AES-256-GCM with AES-NI, XChaCha20-Poly1305 without.
[[nodiscard]] Cipher preferred_cipher();
// Whether AES-256-GCM runs on libcrypto (loaded on first use; false before any AES-GCM record
// layer exists, or without libcrypto or with WEFT_NO_LIBCRYPTO set: then it runs on libsodium).
[[nodiscard]] bool libcrypto_loaded();

// append-only: values are on the wire
enum class RecordType : std::uint8_t { kData = 1, kRekey = 2, kClose = 3 };

// append-only: values index stats arrays exported to users
enum class RecordError : std::uint8_t {
  kBadTag = 0,        // authentication failed: tampering, replay, reordering, loss, wrong key/cipher
  kTooLarge = 1,      // the header announces more than kMaxRecordPlaintext
  kBadHeader = 2,     // unknown type, or a length shorter than a tag
  kBadControl = 3,    // an authentic rekey or close record that carries bytes
  kAfterClose = 4,    // bytes after the close record
  kTruncated = 5,     // the stream ended without a close record (or inside a record)
  kExhausted = 6,     // the record counter reached max_records
};
inline constexpr std::size_t kRecordErrorCount = 7;
const char* to_string(RecordError e);

// append-only: values index stats arrays exported to users
enum class SealError : std::uint8_t {
  kTooLarge = 0,        // plaintext longer than kMaxRecordPlaintext
  kClosed = 1,          // a close record was already sealed
  kExhausted = 2,       // the record counter reached max_records
  kControlPayload = 3,  // rekey and close records carry no bytes
  kCrypto = 4,          // the cipher library failed (out of memory)
};
inline constexpr std::size_t kSealErrorCount = 5;
const char* to_string(SealError e);

struct RecordOptions {
  // Records sealed under one key before the sealer inserts a rekey record by itself.
  std::uint64_t rekey_interval = std::uint64_t{1} << 24;
  // The counter never reaches this; tests lower it.
  std::uint64_t max_records = ~std::uint64_t{0};
};

// Counters of one direction (a sealer fills the seal half, an opener the open half).
struct RecordStats {
  std::uint64_t records_sealed = 0;  // every type, including automatic rekeys
  std::uint64_t bytes_sealed = 0;    // data plaintext
  std::uint64_t records_opened = 0;
  std::uint64_t bytes_opened = 0;    // data plaintext
  std::uint64_t rekeys = 0;          // keys replaced
  std::array<std::uint64_t, kSealErrorCount> seal_refused{};    // by SealError
  std::array<std::uint64_t, kRecordErrorCount> open_failed{};   // by RecordError; at most one per opener
};

namespace detail {
class RecordAead;
struct Gather;
}

// Seals one direction.
class RecordSealer {
 public:
  RecordSealer(Cipher cipher, const RecordKey& key, RecordOptions options = {});
  ~RecordSealer();  // wipes the key
  RecordSealer(RecordSealer&&) noexcept;
  RecordSealer& operator=(RecordSealer&&) noexcept;

  // Appends one record (two if a rekey is due first) to `out`; `plain` must not point into `out`.
  // kRekey replaces the key after sealing; kClose ends the direction. On error `out` is unchanged.
  [[nodiscard]] Result<void, SealError> seal_into(std::vector<std::byte>& out, RecordType type,
                                                  std::span<const std::byte> plain);
  // Splits `plain` into as many full data records as needed and appends them all to `out`.
  [[nodiscard]] Result<void, SealError> seal_stream_into(std::vector<std::byte>& out,
                                                         std::span<const std::byte> plain);
  // The same into a ByteBuffer (no zero-fill of the room), and from a gather list: the
  // concatenation of `pieces` (none of which may point into `out`) is sealed as one stream.
  [[nodiscard]] Result<void, SealError> seal_into(ByteBuffer& out, RecordType type, std::span<const std::byte> plain);
  [[nodiscard]] Result<void, SealError> seal_stream_into(ByteBuffer& out, std::span<const std::byte> plain);
  [[nodiscard]] Result<void, SealError> seal_stream_into(ByteBuffer& out,
                                                         std::span<const std::span<const std::byte>> pieces);

  [[nodiscard]] bool closed() const { return closed_; }
  [[nodiscard]] std::uint64_t counter() const { return counter_; }
  [[nodiscard]] Cipher cipher() const { return cipher_; }
  [[nodiscard]] const RecordStats& stats() const { return stats_; }

 private:
  Result<void, SealError> refuse(SealError e);
  // One record of `n` bytes from `in` (consumed), written at `p` (kRecordOverhead + n bytes).
  bool seal_one(unsigned char* p, RecordType type, detail::Gather& in, std::size_t n);
  template <class Out>
  Result<void, SealError> seal_record(Out& out, RecordType type, detail::Gather& in, std::size_t n);
  template <class Out>
  Result<void, SealError> seal_gather(Out& out, detail::Gather& in, std::size_t total);

  std::unique_ptr<detail::RecordAead> aead_;
  Cipher cipher_;
  RecordOptions options_;
  std::uint64_t counter_ = 0;
  std::uint64_t under_key_ = 0;  // records sealed under the current key
  bool closed_ = false;
  RecordStats stats_;
};

// Opens one direction from whatever bytes the socket delivered.
class RecordOpener {
 public:
  struct Progress {
    std::size_t records = 0;  // records opened by this call (every type)
    bool closed = false;      // the close record has been opened (by this call or before)
  };

  RecordOpener(Cipher cipher, const RecordKey& key, RecordOptions options = {});
  ~RecordOpener();  // wipes the key and any buffered bytes
  RecordOpener(RecordOpener&&) noexcept;
  RecordOpener& operator=(RecordOpener&&) noexcept;

  // Opens every complete record in the buffered bytes followed by `bytes`, appends the data
  // records' plaintext to `plain_out` (which must not alias `bytes`), and buffers an incomplete
  // tail (at most one record: kMaxRecordBytes). Records are checked in order; on the first error
  // the plaintext of the failing record is not appended (earlier ones are, they were authentic)
  // and this and every later call return that error.
  [[nodiscard]] Result<Progress, RecordError> feed(std::span<const std::byte> bytes,
                                                   std::vector<std::byte>& plain_out);
  // The same into a ByteBuffer (no zero-fill of the room).
  [[nodiscard]] Result<Progress, RecordError> feed(std::span<const std::byte> bytes, ByteBuffer& plain_out);
  // The peer ended the stream (EOF): an error unless the close record came and nothing follows.
  [[nodiscard]] Result<void, RecordError> finish();

  [[nodiscard]] bool closed() const { return closed_; }
  [[nodiscard]] std::size_t buffered() const { return pending_.size(); }
  [[nodiscard]] std::uint64_t counter() const { return counter_; }
  [[nodiscard]] const RecordStats& stats() const { return stats_; }

 private:
  Unexpected<RecordError> fail_with(RecordError e);
  // Opens the complete record `record` (header included).
  template <class Out>
  Result<void, RecordError> open_one(std::span<const std::byte> record, Out& plain_out);
  template <class Out>
  Result<Progress, RecordError> feed_into(std::span<const std::byte> bytes, Out& plain_out);

  std::unique_ptr<detail::RecordAead> aead_;
  RecordOptions options_;
  std::uint64_t counter_ = 0;
  bool closed_ = false;
  bool failed_ = false;
  RecordError error_ = RecordError::kBadTag;
  std::vector<std::byte> pending_;  // an incomplete record, at most kMaxRecordBytes
  RecordStats stats_;
};

}  // namespace weft::transport
