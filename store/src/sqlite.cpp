#include "sqlite.h"

#include <climits>
#include <string>

namespace weft::store::detail {

std::string sql_error(sqlite3* db, std::string_view what) {
  std::string out(what);
  out += ": ";
  out += sqlite3_errmsg(db);  // "out of memory" for a null db, never null
  out += " (code ";
  out += std::to_string(sqlite3_extended_errcode(db));
  out += ')';
  return out;
}

Result<void> exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK) return {};
  // Name the statement by its start: migrations are long.
  std::string_view what(sql);
  if (what.size() > 48) what = what.substr(0, 48);
  return fail(sql_error(db, what));
}

Result<Stmt> Stmt::prepare(sqlite3* db, std::string_view sql) {
  if (sql.size() > INT_MAX) return fail("statement too long");
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                    &raw, nullptr);
  Stmt s(raw);  // owns raw (or null) from here on
  if (rc != SQLITE_OK || raw == nullptr) return fail(sql_error(db, "prepare"));
  return s;
}

Stmt::Use::~Use() {
  sqlite3_reset(s_);
  sqlite3_clear_bindings(s_);
}

Result<void> Stmt::Use::bound(int rc, int index) {
  if (rc == SQLITE_OK) return {};
  return fail(sql_error(sqlite3_db_handle(s_), "bind parameter " + std::to_string(index)));
}

Result<void> Stmt::Use::bind(int index, std::int64_t v) {
  return bound(sqlite3_bind_int64(s_, index, v), index);
}

// A null data pointer would bind SQL NULL, so empty values get a real (empty) pointer or a
// zero-length blob. The destructor argument nullptr is SQLITE_STATIC: the memory is borrowed.
Result<void> Stmt::Use::bind(int index, std::string_view text) {
  const char* p = text.empty() ? "" : text.data();
  return bound(sqlite3_bind_text64(s_, index, p, text.size(), nullptr, SQLITE_UTF8), index);
}

Result<void> Stmt::Use::bind(int index, std::span<const std::byte> blob) {
  if (blob.empty()) return bound(sqlite3_bind_zeroblob(s_, index, 0), index);
  return bound(sqlite3_bind_blob64(s_, index, blob.data(), blob.size(), nullptr), index);
}

Result<bool> Stmt::Use::step() {
  const int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return fail(sql_error(sqlite3_db_handle(s_), "step"));
}

Result<void> Stmt::Use::run() {
  for (;;) {
    auto r = step();
    if (!r) return fail(r.error().message);
    if (!*r) return {};
  }
}

int Stmt::Use::type(int col) const { return sqlite3_column_type(s_, col); }

std::int64_t Stmt::Use::integer(int col) const { return sqlite3_column_int64(s_, col); }

// Pointer first, then the size: the documented order (the pointer call may convert the value).
std::string_view Stmt::Use::text(int col) const {
  const unsigned char* p = sqlite3_column_text(s_, col);
  const int n = sqlite3_column_bytes(s_, col);
  if (p == nullptr || n <= 0) return {};
  return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)};
}

std::span<const std::byte> Stmt::Use::blob(int col) const {
  const void* p = sqlite3_column_blob(s_, col);
  const int n = sqlite3_column_bytes(s_, col);
  if (p == nullptr || n <= 0) return {};
  return {static_cast<const std::byte*>(p), static_cast<std::size_t>(n)};
}

Result<Tx> Tx::begin(sqlite3* db) {
  if (auto r = exec(db, "BEGIN IMMEDIATE"); !r) return fail(r.error().message);
  return Tx(db);
}

Tx::~Tx() {
  // After a failed COMMIT SQLite may already have rolled back; only roll back what is open.
  if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

Result<void> Tx::commit() {
  if (auto r = exec(db_, "COMMIT"); !r) return r;
  db_ = nullptr;
  return {};
}

Result<FullSync> FullSync::enter(sqlite3* db) {
  if (auto r = exec(db, "PRAGMA synchronous = FULL"); !r) return fail(r.error().message);
  return FullSync(db);
}

FullSync::~FullSync() {
  if (db_ != nullptr) sqlite3_exec(db_, "PRAGMA synchronous = NORMAL", nullptr, nullptr, nullptr);
}

}  // namespace weft::store::detail
