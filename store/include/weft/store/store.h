#pragma once
// The agent's durable state in one SQLite database (WAL) under the data dir: node identity,
// cluster keyring, own incarnation, known members, declared services and upstreams, and the
// operator-signed documents it holds (the policy; later the revocation list). A restarted agent
// reads it back and rejoins without seeds.
//
// Crash safety: every write is one transaction; journal_mode=WAL, synchronous=NORMAL (a process
// killed at any moment loses at most the transaction in flight and the file stays consistent),
// except set_incarnation, the keyring, the identity, entries and signed documents, which are
// synchronous=FULL-durable (fsynced, so they also survive a power loss) before they return.
// Schema changes are migrations keyed by PRAGMA user_version, applied in one transaction.
//
// Rows read back are untrusted (the file may be damaged or edited): types, lengths and values are
// checked against the limits below, the same limits every setter enforces. A bad identity, key or
// setting row is an error; a bad member row is skipped and counted in StoreStats (the member list
// is only a rejoin hint, and one damaged row should not cost the other members). Never a crash.
//
// Incarnations are uint64 and stored as the int64 with the same bit pattern (values above
// INT64_MAX read back as negative numbers in the sqlite3 shell, but round-trip exactly here).
//
// Not thread-safe: one thread owns a Store.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "weft/base/result.h"

namespace weft::store {

inline constexpr int kSchemaVersion = 3;

// Limits checked on every write and on every row read back.
inline constexpr std::size_t kSignPkBytes = 32;
inline constexpr std::size_t kSignSkBytes = 64;
inline constexpr std::size_t kKxPkBytes = 32;
inline constexpr std::size_t kKxSkBytes = 32;
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kMaxKeys = 256;             // keys in the ring
inline constexpr std::size_t kMaxNameBytes = 256;        // node and member names, non-empty
inline constexpr std::size_t kMaxAddrBytes = 256;        // member addr
inline constexpr std::size_t kMaxMetaBytes = 64 * 1024;  // member meta
inline constexpr std::uint8_t kMaxMemberState = 3;       // gossip::MemberState::kLeft
inline constexpr std::size_t kMaxEntryNameBytes = 256;   // service and upstream names, non-empty
inline constexpr std::size_t kMaxEntrySpecBytes = 64 * 1024;
inline constexpr std::size_t kMaxEntries = 10'000;       // per kind
inline constexpr std::size_t kMaxSignedDocBytes = 256 * 1024;  // a signed document's envelope, non-empty

// Raw key bytes; weft::store does not know what they mean (weft::transport does).
struct Identity {
  std::vector<std::byte> sign_pk;  // 32
  std::vector<std::byte> sign_sk;  // 64
  std::vector<std::byte> kx_pk;    // 32
  std::vector<std::byte> kx_sk;    // 32
  friend bool operator==(const Identity&, const Identity&) = default;
};

struct StoredMember {
  std::string name;
  std::string addr;               // "ip:port" as Endpoint::to_string prints it
  std::uint8_t state = 0;         // gossip::MemberState value
  std::uint64_t incarnation = 0;
  std::vector<std::byte> meta;
  std::int64_t updated_unix = 0;  // wall-clock seconds of the last write (for reaping at load)
  friend bool operator==(const StoredMember&, const StoredMember&) = default;
};

// What the operator declared on this node (weft service register, weft upstream add). The spec
// is the agent's own encoding; weft::store keeps it as bytes.
// append-only: values are stored in the database
enum class EntryKind : std::uint8_t {
  kService = 1,
  kUpstream = 2,
};

struct Entry {
  std::string name;
  std::vector<std::byte> spec;
  friend bool operator==(const Entry&, const Entry&) = default;
};

// Operator-signed documents the agent holds, one of each kind: the newest it accepted. The store
// keeps the envelope as the exact bytes that were verified (weft::store does not parse it) and the
// version the agent read from it, written together in one transaction, so a crash leaves the old
// pair or the new one, never a mix.
// append-only: values are stored in the database
enum class DocKind : std::uint8_t {
  kPolicy = 1,       // transport/policy.h: the signed policy envelope
  kRevocations = 2,  // reserved: the signed revocation list (issue 5, next)
};

struct StoredDoc {
  std::uint64_t version = 0;
  std::vector<std::byte> envelope;
  friend bool operator==(const StoredDoc&, const StoredDoc&) = default;
};

// Counters since open (plain uint64_t, as every module's stats).
struct StoreStats {
  std::uint64_t bad_member_rows = 0;  // member rows skipped by members() because they failed a check
  std::uint64_t bad_entry_rows = 0;   // service / upstream rows skipped by entries(), same policy
};

class Store {
 public:
  // Opens or creates the database at `path` (":memory:" for tests), sets WAL and applies
  // migrations. A new file is created 0600 whatever the umask (-wal and -shm follow it); the mode
  // of an existing file is left alone. Fails with a clear message if the file is not a
  // database (or is another application's SQLite database), is from a newer schema, or fails
  // integrity_check's quick form; a refused file is not modified.
  static Result<Store> open(const std::string& path);
  Store();
  ~Store();
  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;

  [[nodiscard]] int schema_version() const;
  // PRAGMA integrity_check == "ok".
  [[nodiscard]] Result<void> integrity_check();

  // --- identity (written once, at first start) ---
  [[nodiscard]] Result<std::optional<Identity>> identity();
  [[nodiscard]] Result<void> set_identity(const Identity& id);

  // --- small settings ---
  [[nodiscard]] Result<std::optional<std::string>> node_name();
  [[nodiscard]] Result<void> set_node_name(const std::string& name);
  [[nodiscard]] Result<std::uint64_t> incarnation();  // 0 if never set
  [[nodiscard]] Result<void> set_incarnation(std::uint64_t inc);

  // --- cluster keyring: raw 32-byte keys, primary first ---
  [[nodiscard]] Result<std::vector<std::vector<std::byte>>> keys();
  // Replaces the whole ring in one transaction.
  [[nodiscard]] Result<void> set_keys(std::span<const std::vector<std::byte>> keys_primary_first);

  // --- members ---
  // All valid member rows, ordered by name; bad rows are skipped and counted (see above).
  [[nodiscard]] Result<std::vector<StoredMember>> members();
  // Upserts `changed` and deletes `removed` (by name) in one transaction. Every member of
  // `changed` is checked first; one bad member fails the call and nothing is written. Deletes run
  // after the upserts, so a name in both lists ends up deleted.
  [[nodiscard]] Result<void> save_members(std::span<const StoredMember> changed,
                                          std::span<const std::string> removed);

  // --- services and upstreams declared on this node ---
  // All valid rows of one kind, ordered by name; bad rows are skipped and counted.
  [[nodiscard]] Result<std::vector<Entry>> entries(EntryKind kind);
  // Insert or replace; more than kMaxEntries of a kind is refused. Durable (FULL) before it returns:
  // the operator was told it is registered.
  [[nodiscard]] Result<void> put_entry(EntryKind kind, const Entry& e);
  // true if it existed.
  [[nodiscard]] Result<bool> delete_entry(EntryKind kind, const std::string& name);
  // The version of this node's service catalog as last published (0 if never).
  [[nodiscard]] Result<std::uint64_t> catalog_version();
  [[nodiscard]] Result<void> set_catalog_version(std::uint64_t v);

  // --- operator-signed documents (DocKind) ---
  // The one held of `kind`, or nullopt. A row that fails a check (type, size) is an error.
  [[nodiscard]] Result<std::optional<StoredDoc>> signed_doc(DocKind kind);
  // Replaces the document of `kind` with (version, envelope) in one transaction, durable (FULL)
  // before it returns. Refused, and nothing written, unless `version` is above the stored one:
  // the version check and the write happen under the same write lock. The envelope must be
  // 1..kMaxSignedDocBytes.
  [[nodiscard]] Result<void> set_signed_doc(DocKind kind, std::uint64_t version,
                                            std::span<const std::byte> envelope);
  // The policy: signed_doc / set_signed_doc of DocKind::kPolicy.
  [[nodiscard]] Result<std::optional<StoredDoc>> policy() { return signed_doc(DocKind::kPolicy); }
  [[nodiscard]] Result<void> set_policy(std::uint64_t version, std::span<const std::byte> envelope) {
    return set_signed_doc(DocKind::kPolicy, version, envelope);
  }

  [[nodiscard]] const StoreStats& stats() const;

  // Opaque: defined in store/src/impl.h. Public only so that the implementation's free functions
  // can name it; nothing outside store/src can use an incomplete type.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::store
