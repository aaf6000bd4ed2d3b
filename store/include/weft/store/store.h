#pragma once
// The agent's durable state in one SQLite database (WAL) under the data dir: node identity,
// cluster keyring, own incarnation, known members. A restarted agent reads it back and rejoins
// without seeds.
//
// Crash safety: every write is one transaction; journal_mode=WAL, synchronous=NORMAL (a process
// killed at any moment loses at most the transaction in flight and the file stays consistent),
// except set_incarnation and the keyring, which are synchronous=FULL-durable before they return.
// Schema changes are migrations keyed by PRAGMA user_version, applied in one transaction.
//
// Rows read back are untrusted (the file may be damaged or edited): lengths and values are
// checked and a bad row is an error, never a crash. Not thread-safe: one thread owns a Store.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "weft/base/result.h"

namespace weft::store {

inline constexpr int kSchemaVersion = 1;

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

class Store {
 public:
  // Opens or creates the database at `path` (":memory:" for tests), sets WAL and applies
  // migrations. A new file is created 0600. Fails with a clear message if the file is not a
  // database, is from a newer schema, or fails integrity_check's quick form.
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
  [[nodiscard]] Result<std::vector<StoredMember>> members();
  // Upserts `changed` and deletes `removed` (by name) in one transaction.
  [[nodiscard]] Result<void> save_members(std::span<const StoredMember> changed,
                                          std::span<const std::string> removed);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::store
