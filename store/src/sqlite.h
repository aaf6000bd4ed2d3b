#pragma once
// Move-only RAII over the SQLite C API, private to weft::store: a connection, prepared statements
// (reset and unbound after every use), an IMMEDIATE transaction that rolls back unless committed,
// and a scope that makes commits synchronous=FULL.

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "weft/base/result.h"

namespace weft::store::detail {

struct DbCloser {
  // close_v2: safe even if a statement outlives the connection (it becomes a zombie until then).
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

// "<what>: <sqlite message> (code N)" for the last error on `db`.
[[nodiscard]] std::string sql_error(sqlite3* db, std::string_view what);

// Runs SQL without parameters (schema, pragmas, BEGIN/COMMIT); several statements allowed.
[[nodiscard]] Result<void> exec(sqlite3* db, const char* sql);

class Stmt {
 public:
  Stmt() = default;
  [[nodiscard]] static Result<Stmt> prepare(sqlite3* db, std::string_view sql);

  // RAII use of the statement: bind, step, read columns; the destructor resets the statement and
  // clears its bindings, so borrowed (SQLITE_STATIC) parameter memory is never referenced later.
  class Use {
   public:
    explicit Use(sqlite3_stmt* s) : s_(s) {}
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

    // Bound memory is borrowed: it must outlive this Use.
    [[nodiscard]] Result<void> bind(int index, std::int64_t v);
    [[nodiscard]] Result<void> bind(int index, std::string_view text);
    [[nodiscard]] Result<void> bind(int index, std::span<const std::byte> blob);
    // Binds parameters 1, 2, ... in order; stops at the first error.
    template <typename... Args>
    [[nodiscard]] Result<void> bind_all(const Args&... args) {
      int index = 0;
      Result<void> r;
      (void)((r = bind(++index, args), r.has_value()) && ...);
      return r;
    }

    // true: a row is ready; false: done.
    [[nodiscard]] Result<bool> step();
    // Steps to the end; for statements that return no rows.
    [[nodiscard]] Result<void> run();

    // Column accessors for the current row. Views stay valid until the next step.
    [[nodiscard]] int type(int col) const;  // SQLITE_INTEGER, SQLITE_TEXT, SQLITE_BLOB, ...
    [[nodiscard]] std::int64_t integer(int col) const;
    [[nodiscard]] std::string_view text(int col) const;
    [[nodiscard]] std::span<const std::byte> blob(int col) const;

   private:
    [[nodiscard]] Result<void> bound(int rc, int index);
    sqlite3_stmt* s_;
  };

  [[nodiscard]] Use use() { return Use(s_.get()); }
  [[nodiscard]] bool valid() const { return s_ != nullptr; }

 private:
  struct Finalizer {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
  };
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  std::unique_ptr<sqlite3_stmt, Finalizer> s_;
};

// BEGIN IMMEDIATE: takes the write lock up front, so a busy database waits in busy_timeout instead
// of failing at the first write. Rolls back on destruction unless commit() succeeded.
class Tx {
 public:
  [[nodiscard]] static Result<Tx> begin(sqlite3* db);
  Tx(Tx&& o) noexcept : db_(o.db_) { o.db_ = nullptr; }
  Tx& operator=(Tx&&) = delete;
  Tx(const Tx&) = delete;
  ~Tx();
  [[nodiscard]] Result<void> commit();

 private:
  explicit Tx(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

// synchronous=FULL for the commits inside this scope (the WAL is fsynced at each commit), back to
// NORMAL on destruction. Construct it before the Tx: the setting cannot change mid-transaction.
class FullSync {
 public:
  [[nodiscard]] static Result<FullSync> enter(sqlite3* db);
  FullSync(FullSync&& o) noexcept : db_(o.db_) { o.db_ = nullptr; }
  FullSync& operator=(FullSync&&) = delete;
  FullSync(const FullSync&) = delete;
  ~FullSync();

 private:
  explicit FullSync(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace weft::store::detail
