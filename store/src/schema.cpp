#include "schema.h"

#include <iterator>
#include <string>

#include "sqlite.h"
#include "weft/store/store.h"

namespace weft::store::detail {
namespace {

// STRICT tables: SQLite itself refuses a value of the wrong type on write. Reads still check every
// value, because the file may have been edited or damaged.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE settings (
  key   TEXT PRIMARY KEY NOT NULL,   -- 'node_name' (TEXT), 'incarnation' (INTEGER)
  value ANY NOT NULL
) STRICT;
CREATE TABLE identity (
  id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 0),   -- one row
  sign_pk BLOB NOT NULL,
  sign_sk BLOB NOT NULL,
  kx_pk   BLOB NOT NULL,
  kx_sk   BLOB NOT NULL
) STRICT;
CREATE TABLE keyring (
  position INTEGER PRIMARY KEY NOT NULL,   -- 0 = primary, then 1, 2, ... without gaps
  key      BLOB NOT NULL
) STRICT;
CREATE TABLE members (
  name         TEXT PRIMARY KEY NOT NULL,
  addr         TEXT NOT NULL,
  state        INTEGER NOT NULL,
  incarnation  INTEGER NOT NULL,   -- uint64 as the int64 with the same bits
  meta         BLOB NOT NULL,
  updated_unix INTEGER NOT NULL
) STRICT;
PRAGMA application_id = 2003134068;   -- kApplicationId, 0x77656674 "weft"
)sql";

// Services and upstreams the operator declared on this node (store.h: EntryKind, Entry).
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE entries (
  kind INTEGER NOT NULL,   -- EntryKind: 1 service, 2 upstream
  name TEXT NOT NULL,
  spec BLOB NOT NULL,
  PRIMARY KEY (kind, name)
) STRICT;
)sql";

// Operator-signed documents (store.h: DocKind, StoredDoc): one row per kind, the version and the
// envelope always written together.
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE signed_docs (
  kind     INTEGER PRIMARY KEY NOT NULL,   -- DocKind: 1 policy, 2 revocation list
  version  INTEGER NOT NULL,               -- uint64 as the int64 with the same bits
  envelope BLOB NOT NULL                   -- the signed bytes exactly as verified
) STRICT;
)sql";

struct Migration {
  int to_version;
  const char* sql;
};

// Append-only. A schema change is one more line here (and kSchemaVersion + 1 in store.h).
constexpr Migration kMigrations[] = {
    {1, kSchemaV1},
    {2, kSchemaV2},
    {3, kSchemaV3},
};

constexpr bool migrations_are_consecutive() {
  int v = 0;
  for (const auto& m : kMigrations) {
    if (m.to_version != ++v) return false;
  }
  return v == kSchemaVersion;
}
static_assert(migrations_are_consecutive(), "kMigrations must go 1, 2, ... up to kSchemaVersion");
static_assert(kApplicationId == 2003134068, "the literal in kSchemaV1");

}  // namespace

Result<std::int64_t> pragma_int(sqlite3* db, const char* pragma) {
  auto stmt = Stmt::prepare(db, std::string("PRAGMA ") + pragma);
  if (!stmt) return fail(stmt.error().message);
  auto use = stmt->use();
  auto row = use.step();
  if (!row) return fail(row.error().message);
  if (!*row || use.type(0) != SQLITE_INTEGER) return fail(std::string("PRAGMA ") + pragma + ": no integer");
  return use.integer(0);
}

Result<int> migrate(sqlite3* db) {
  std::int64_t version = 0;
  for (const auto& m : kMigrations) {
    auto tx = Tx::begin(db);
    if (!tx) return fail("migrate: " + tx.error().message);
    auto v = pragma_int(db, "user_version");
    if (!v) return fail("migrate: " + v.error().message);
    version = *v;
    if (version >= m.to_version) continue;  // already applied (perhaps by another process)
    if (version != m.to_version - 1) {
      return fail("migrate: schema version " + std::to_string(version) + " cannot go to " +
                  std::to_string(m.to_version));
    }
    if (auto r = exec(db, m.sql); !r)
      return fail("migrate to " + std::to_string(m.to_version) + ": " + r.error().message);
    const std::string set_version = "PRAGMA user_version = " + std::to_string(m.to_version);
    if (auto r = exec(db, set_version.c_str()); !r) return fail("migrate: " + r.error().message);
    if (auto r = tx->commit(); !r) return fail("migrate: " + r.error().message);
    version = m.to_version;
  }
  return static_cast<int>(version);
}

}  // namespace weft::store::detail
