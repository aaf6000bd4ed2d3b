#pragma once
// Schema migrations, keyed by PRAGMA user_version.

#include <sqlite3.h>

#include <cstdint>

#include "weft/base/result.h"

namespace weft::store::detail {

// PRAGMA application_id of a weft database: "weft" in ASCII. A SQLite file with another non-zero
// application_id belongs to some other program and is refused.
inline constexpr std::int32_t kApplicationId = 0x77656674;

// Applies, each in its own transaction, every migration above the file's user_version. Returns the
// resulting version (kSchemaVersion). Safe against a second process migrating at the same time:
// the version is re-read under the write lock.
[[nodiscard]] Result<int> migrate(sqlite3* db);

// PRAGMA user_version / application_id (read-only queries).
[[nodiscard]] Result<std::int64_t> pragma_int(sqlite3* db, const char* pragma);

}  // namespace weft::store::detail
