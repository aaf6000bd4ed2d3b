// Store::open: creates the file 0600, checks that it is a weft database of a schema we know and
// that it passes quick_check, switches to WAL, migrates, and prepares the statements.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <string>
#include <system_error>
#include <utility>

#include "impl.h"
#include "schema.h"
#include "sqlite.h"
#include "weft/store/store.h"

namespace weft::store {
namespace {

using detail::Stmt;

constexpr int kBusyTimeoutMs = 2000;
// Largest string or blob SQLite will materialise for us: a damaged row cannot make a read
// allocate more than this (the real limits of store.h are far below it).
constexpr int kMaxValueBytes = 1 << 20;
constexpr mode_t kFileMode = S_IRUSR | S_IWUSR;  // 0600: the file holds secret keys

std::string errno_text(int err) { return std::system_category().message(err); }

// Creates `path` 0600 if it does not exist; returns whether this call created it. O_EXCL makes the
// check and the creation one step. The mode is set with fchmod as well, because open() filters it
// through the umask and the store must not depend on the caller's umask.
Result<bool> create_private_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, kFileMode);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return false;
    return fail("store: create " + path + ": " + errno_text(err));
  }
  const int rc = ::fchmod(fd, kFileMode);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return fail("store: chmod " + path + ": " + errno_text(err));
  // Make the new directory entry durable (SQLite syncs the directory for its WAL, not for the main
  // file). Best effort: some file systems refuse fsync on a directory.
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return true;
}

// SQLite gives -wal and -shm the mode of the database file. For a file we created, 0600 is also set
// here so that the guarantee does not rest on that behaviour alone.
void restrict_siblings(const std::string& path) {
  for (const char* suffix : {"-wal", "-shm"}) (void)::chmod((path + suffix).c_str(), kFileMode);
}

Result<std::string> query_text(sqlite3* db, const char* sql) {
  auto stmt = Stmt::prepare(db, sql);
  if (!stmt) return fail(stmt.error().message);
  auto u = stmt->use();
  auto row = u.step();
  if (!row) return fail(row.error().message);
  if (!*row) return fail(std::string(sql) + ": no result");
  return std::string(u.text(0));
}

// Reads the header fields and refuses files that are not ours or are from a newer weft. Nothing
// has been written at this point, so a refused file is left exactly as it was.
Result<void> check_header(sqlite3* db, const std::string& path) {
  const std::string not_ours = "store: " + path + " is not a weft database: ";
  // The first read of the file; sqlite3_exec returns the code of the failing step directly.
  if (const int rc = sqlite3_exec(db, "SELECT 1 FROM sqlite_schema LIMIT 1", nullptr, nullptr, nullptr);
      rc != SQLITE_OK) {
    if ((rc & 0xff) == SQLITE_NOTADB) return fail(not_ours + sqlite3_errstr(rc));
    return fail(detail::sql_error(db, "store: " + path));
  }
  auto app = detail::pragma_int(db, "application_id");
  if (!app) return fail("store: " + path + ": " + app.error().message);
  if (*app != 0 && *app != detail::kApplicationId) {
    return fail(not_ours + "it belongs to another application (application_id " + std::to_string(*app) + ")");
  }
  auto version = detail::pragma_int(db, "user_version");
  if (!version) return fail("store: " + path + ": " + version.error().message);
  if (*app == 0 && *version != 0) {
    return fail(not_ours + "user_version " + std::to_string(*version) + " without weft's application_id");
  }
  if (*version > kSchemaVersion) {
    return fail("store: " + path + " has schema version " + std::to_string(*version) +
                ", newer than the version this weft supports (" + std::to_string(kSchemaVersion) +
                "); run a newer weft");
  }
  if (*version < 0) return fail(not_ours + "user_version " + std::to_string(*version));
  if (*app == 0) {
    // An empty file is a new database; a database with someone else's tables is not ours to touch.
    auto tables = Stmt::prepare(db, "SELECT count(*) FROM sqlite_schema");
    if (!tables) return fail("store: " + path + ": " + tables.error().message);
    auto u = tables->use();
    auto row = u.step();
    if (!row) return fail("store: " + path + ": " + row.error().message);
    if (*row && u.integer(0) != 0) return fail(not_ours + "it holds other tables");
  }
  return {};
}

Result<void> prepare_all(Store::Impl& s) {
  sqlite3* db = s.db.get();
  const std::pair<Stmt*, const char*> all[] = {
      {&s.get_setting, "SELECT value FROM settings WHERE key = ?1"},
      {&s.put_setting,
       "INSERT INTO settings (key, value) VALUES (?1, ?2) "
       "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
      {&s.get_identity, "SELECT sign_pk, sign_sk, kx_pk, kx_sk FROM identity WHERE id = 0"},
      {&s.put_identity,
       "INSERT INTO identity (id, sign_pk, sign_sk, kx_pk, kx_sk) VALUES (0, ?1, ?2, ?3, ?4) "
       "ON CONFLICT (id) DO UPDATE SET sign_pk = excluded.sign_pk, sign_sk = excluded.sign_sk, "
       "kx_pk = excluded.kx_pk, kx_sk = excluded.kx_sk"},
      {&s.get_keys, "SELECT position, key FROM keyring ORDER BY position"},
      {&s.clear_keys, "DELETE FROM keyring"},
      {&s.put_key, "INSERT INTO keyring (position, key) VALUES (?1, ?2)"},
      {&s.get_members,
       "SELECT name, addr, state, incarnation, meta, updated_unix FROM members ORDER BY name"},
      {&s.put_member,
       "INSERT INTO members (name, addr, state, incarnation, meta, updated_unix) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
       "ON CONFLICT (name) DO UPDATE SET addr = excluded.addr, state = excluded.state, "
       "incarnation = excluded.incarnation, meta = excluded.meta, updated_unix = excluded.updated_unix"},
      {&s.delete_member, "DELETE FROM members WHERE name = ?1"},
      {&s.get_entries, "SELECT name, spec FROM entries WHERE kind = ?1 ORDER BY name"},
      {&s.count_entries, "SELECT count(*) FROM entries WHERE kind = ?1 AND name != ?2"},
      {&s.put_entry,
       "INSERT INTO entries (kind, name, spec) VALUES (?1, ?2, ?3) "
       "ON CONFLICT (kind, name) DO UPDATE SET spec = excluded.spec"},
      {&s.delete_entry, "DELETE FROM entries WHERE kind = ?1 AND name = ?2"},
      {&s.get_doc, "SELECT version, envelope FROM signed_docs WHERE kind = ?1"},
      {&s.put_doc,
       "INSERT INTO signed_docs (kind, version, envelope) VALUES (?1, ?2, ?3) "
       "ON CONFLICT (kind) DO UPDATE SET version = excluded.version, envelope = excluded.envelope"},
  };
  for (const auto& [stmt, sql] : all) {
    auto p = Stmt::prepare(db, sql);
    if (!p) return fail(p.error().message);
    *stmt = std::move(*p);
  }
  return {};
}

Result<Store::Impl*> open_impl(const std::string& path, std::unique_ptr<Store::Impl>& impl) {
  if (path.empty()) return fail("store: empty database path");
  const bool in_memory = path == ":memory:";
  bool created = false;
  if (!in_memory) {
    auto c = create_private_file(path);
    if (!c) return fail(c.error().message);
    created = *c;
  }

  // No SQLITE_OPEN_CREATE for a file: it exists now, and if it vanished SQLite must not create it
  // with the umask's mode. NOMUTEX: one thread owns a Store.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (in_memory ? SQLITE_OPEN_CREATE : 0);
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  impl = std::make_unique<Store::Impl>();
  impl->db.reset(raw);  // closed on every path, also when open failed
  if (rc != SQLITE_OK) return fail(detail::sql_error(raw, "store: open " + path));
  sqlite3* db = raw;

  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, kMaxValueBytes);
  // The file is untrusted: no writable schema tricks, no functions with side effects from schema.
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, static_cast<int*>(nullptr));
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, static_cast<int*>(nullptr));

  if (auto r = check_header(db, path); !r) return fail(r.error().message);
  if (auto r = detail::check_pragma(db, "quick_check"); !r) {
    return fail("store: " + path + " is damaged: " + r.error().message);
  }

  if (!in_memory) {  // WAL needs shared memory next to a file; an in-memory database reports "memory"
    auto mode = query_text(db, "PRAGMA journal_mode = WAL");
    if (!mode) return fail("store: " + path + ": " + mode.error().message);
    if (*mode != "wal") return fail("store: " + path + ": cannot use WAL (journal_mode is " + *mode + ")");
  }
  // NORMAL: a commit survives a killed process; FullSync upgrades the writes that must survive
  // a power loss. secure_delete: replaced keys are zeroed in the file, not left in free pages.
  if (auto r = detail::exec(db, "PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON"); !r) {
    return fail("store: " + path + ": " + r.error().message);
  }

  auto version = detail::migrate(db);
  if (!version) return fail("store: " + path + ": " + version.error().message);
  if (*version != kSchemaVersion) {
    return fail("store: " + path + " has schema version " + std::to_string(*version) +
                ", this weft supports " + std::to_string(kSchemaVersion));
  }
  impl->schema_version = *version;
  if (created) restrict_siblings(path);

  if (auto r = prepare_all(*impl); !r) return fail("store: " + path + ": " + r.error().message);
  return impl.get();
}

}  // namespace

namespace detail {

Result<void> check_pragma(sqlite3* db, const char* pragma) {
  // At most 10 findings: the message stays short and a badly damaged file is not walked forever.
  auto stmt = Stmt::prepare(db, std::string("PRAGMA ") + pragma + "(10)");
  if (!stmt) return fail(stmt.error().message);
  auto u = stmt->use();
  std::string findings;
  int rows = 0;
  for (;;) {
    auto row = u.step();
    if (!row) return fail(std::string(pragma) + ": " + row.error().message);
    if (!*row) break;
    const auto text = u.text(0);
    if (++rows == 1 && text == "ok") continue;
    if (!findings.empty()) findings += "; ";
    findings += text;
  }
  if (rows == 1 && findings.empty()) return {};
  if (rows == 0) return fail(std::string(pragma) + ": no result");
  return fail(std::string(pragma) + ": " + findings);
}

}  // namespace detail

Result<Store> Store::open(const std::string& path) {
  try {
    std::unique_ptr<Impl> impl;
    auto r = open_impl(path, impl);
    if (!r) return fail(r.error().message);  // impl (and its connection) is released here
    Store s;
    s.impl_ = std::move(impl);
    return s;
  } catch (const std::exception& e) {
    return fail("store: open " + path + ": " + e.what());
  }
}

}  // namespace weft::store
