// weft::store: schema, round trips, reopen, file mode, refusal of foreign / newer / damaged files,
// damaged rows, and SIGKILL in the middle of writes.

#include "weft/store/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace weft::store {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;

Bytes filled(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte(static_cast<std::uint8_t>(seed + i));
  return b;
}

Identity test_identity() { return {filled(32, 1), filled(64, 2), filled(32, 3), filled(32, 4)}; }

StoredMember member(std::string name, std::uint64_t inc, std::size_t meta_bytes = 3) {
  StoredMember m;
  m.name = std::move(name);
  m.addr = "10.0.0.1:7946";
  m.state = 1;
  m.incarnation = inc;
  m.meta = filled(meta_bytes, 9);
  m.updated_unix = 1700000000;
  return m;
}

// A fresh directory under testing::TempDir(), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = testing::TempDir() + "weft-store-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::string file(const std::string& name) const { return (path_ / name).string(); }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A plain sqlite3 connection, for editing a database behind the store's back.
class RawDb {
 public:
  explicit RawDb(const std::string& path) { EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK); }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  void exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (err != nullptr ? err : "");
    sqlite3_free(err);
  }

 private:
  sqlite3* db_ = nullptr;
};

std::string read_file(const std::string& path) {
  std::string out(fs::file_size(path), '\0');
  std::ifstream in(path, std::ios::binary);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  EXPECT_TRUE(in) << path;
  return out;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Opens a store and fills every part of it.
void fill(Store& s) {
  ASSERT_TRUE(s.set_identity(test_identity()));
  ASSERT_TRUE(s.set_node_name("node-a"));
  ASSERT_TRUE(s.set_incarnation(42));
  const std::vector<Bytes> ring = {filled(32, 10), filled(32, 20)};
  ASSERT_TRUE(s.set_keys(ring));
  const std::vector<StoredMember> ms = {member("b", 2), member("a", 1, 0)};
  ASSERT_TRUE(s.save_members(ms, {}));
}

void expect_filled(Store& s) {
  auto id = s.identity();
  ASSERT_TRUE(id) << id.error().message;
  ASSERT_TRUE(id->has_value());
  EXPECT_EQ(**id, test_identity());
  auto name = s.node_name();
  ASSERT_TRUE(name);
  EXPECT_EQ(*name, std::optional<std::string>("node-a"));
  auto inc = s.incarnation();
  ASSERT_TRUE(inc);
  EXPECT_EQ(*inc, 42U);
  auto keys = s.keys();
  ASSERT_TRUE(keys);
  EXPECT_EQ(*keys, (std::vector<Bytes>{filled(32, 10), filled(32, 20)}));
  auto ms = s.members();
  ASSERT_TRUE(ms);
  EXPECT_EQ(*ms, (std::vector<StoredMember>{member("a", 1, 0), member("b", 2)}));  // ordered by name
}

// ---- fresh database and round trips ----

TEST(StoreTest, FreshMemoryDatabaseIsEmpty) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->schema_version(), kSchemaVersion);
  EXPECT_EQ(s->schema_version(), 3);
  auto id = s->identity();
  ASSERT_TRUE(id);
  EXPECT_FALSE(id->has_value());
  auto name = s->node_name();
  ASSERT_TRUE(name);
  EXPECT_FALSE(name->has_value());
  auto inc = s->incarnation();
  ASSERT_TRUE(inc);
  EXPECT_EQ(*inc, 0U);
  auto keys = s->keys();
  ASSERT_TRUE(keys);
  EXPECT_TRUE(keys->empty());
  auto ms = s->members();
  ASSERT_TRUE(ms);
  EXPECT_TRUE(ms->empty());
  EXPECT_TRUE(s->integrity_check());
}

TEST(StoreTest, FreshFileHasTheCurrentSchemaVersion) {
  TempDir dir;
  auto s = Store::open(dir.file("weft.db"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->schema_version(), 3);
  EXPECT_TRUE(fs::exists(dir.file("weft.db")));
  EXPECT_TRUE(fs::exists(dir.file("weft.db-wal")));  // WAL mode
  RawDb raw(dir.file("weft.db"));
}

TEST(StoreTest, RoundTripsEverything) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  fill(*s);
  expect_filled(*s);
  EXPECT_TRUE(s->integrity_check());
}

TEST(StoreTest, SettersOverwrite) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  fill(*s);
  Identity other{filled(32, 7), filled(64, 7), filled(32, 7), filled(32, 7)};
  ASSERT_TRUE(s->set_identity(other));
  ASSERT_TRUE(s->set_node_name("node-b"));
  ASSERT_TRUE(s->set_incarnation(43));
  EXPECT_EQ(**s->identity(), other);
  EXPECT_EQ(**s->node_name(), "node-b");
  EXPECT_EQ(*s->incarnation(), 43U);
}

TEST(StoreTest, IncarnationKeepsAllSixtyFourBits) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  for (std::uint64_t v : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{1} << 63,
                          std::numeric_limits<std::uint64_t>::max()}) {
    ASSERT_TRUE(s->set_incarnation(v));
    EXPECT_EQ(*s->incarnation(), v);
    const std::vector<StoredMember> ms = {member("m", v)};
    ASSERT_TRUE(s->save_members(ms, {}));
    EXPECT_EQ(s->members()->at(0).incarnation, v);
  }
}

TEST(StoreTest, SetKeysReplacesTheRing) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  const std::vector<Bytes> three = {filled(32, 1), filled(32, 2), filled(32, 3)};
  ASSERT_TRUE(s->set_keys(three));
  EXPECT_EQ(*s->keys(), three);
  const std::vector<Bytes> one = {filled(32, 3)};
  ASSERT_TRUE(s->set_keys(one));
  EXPECT_EQ(*s->keys(), one);
  ASSERT_TRUE(s->set_keys({}));
  EXPECT_TRUE(s->keys()->empty());
}

TEST(StoreTest, SettersRefuseBadValuesAndWriteNothing) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  fill(*s);
  EXPECT_FALSE(s->set_identity({filled(31, 1), filled(64, 2), filled(32, 3), filled(32, 4)}));
  EXPECT_FALSE(s->set_identity({filled(32, 1), filled(65, 2), filled(32, 3), filled(32, 4)}));
  EXPECT_FALSE(s->set_node_name(""));
  EXPECT_FALSE(s->set_node_name(std::string(kMaxNameBytes + 1, 'x')));
  const std::vector<Bytes> short_key = {filled(32, 1), filled(31, 2)};
  auto r = s->set_keys(short_key);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("31"), std::string::npos) << r.error().message;
  const std::vector<Bytes> too_many(kMaxKeys + 1, filled(32, 1));
  EXPECT_FALSE(s->set_keys(too_many));

  auto bad_state = member("c", 1);
  bad_state.state = 4;
  auto big_meta = member("d", 1, kMaxMetaBytes + 1);
  for (const auto& bad :
       {bad_state, big_meta, member("", 1), member(std::string(kMaxNameBytes + 1, 'n'), 1)}) {
    const std::vector<StoredMember> batch = {member("c", 5), bad};  // the good one is not written either
    EXPECT_FALSE(s->save_members(batch, {}));
  }
  expect_filled(*s);
}

TEST(StoreTest, SaveMembersUpsertsAndDeletesInOneCall) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  const std::vector<StoredMember> first = {member("a", 1), member("b", 1), member("c", 1)};
  ASSERT_TRUE(s->save_members(first, {}));

  auto b2 = member("b", 2, kMaxMetaBytes);
  b2.addr = "[::1]:7000";
  b2.state = kMaxMemberState;
  b2.updated_unix = -5;
  const std::vector<StoredMember> changed = {b2, member("d", 1, 0)};
  const std::vector<std::string> removed = {"a", "no-such-member"};
  ASSERT_TRUE(s->save_members(changed, removed));
  auto ms = s->members();
  ASSERT_TRUE(ms);
  EXPECT_EQ(*ms, (std::vector<StoredMember>{b2, member("c", 1), member("d", 1, 0)}));

  // A name in both lists ends up deleted (deletes run after upserts).
  const std::vector<StoredMember> e = {member("e", 1)};
  const std::vector<std::string> rm_e = {"e"};
  ASSERT_TRUE(s->save_members(e, rm_e));
  EXPECT_EQ(s->members()->size(), 3U);
  EXPECT_TRUE(s->save_members({}, {}));
}

TEST(StoreTest, ReopenKeepsEverything) {
  TempDir dir;
  const auto path = dir.file("weft.db");
  {
    auto s = Store::open(path);
    ASSERT_TRUE(s) << s.error().message;
    fill(*s);
  }
  auto s = Store::open(path);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->schema_version(), 3);
  expect_filled(*s);
  EXPECT_TRUE(s->integrity_check());
}

TEST(StoreTest, MovedStoreWorksAndEmptyStoreFails) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s);
  Store moved = std::move(*s);
  ASSERT_TRUE(moved.set_incarnation(7));
  EXPECT_EQ(*moved.incarnation(), 7U);

  Store none;
  EXPECT_EQ(none.schema_version(), 0);
  EXPECT_FALSE(none.keys());
  EXPECT_FALSE(none.set_incarnation(1));
  EXPECT_FALSE(none.integrity_check());
  EXPECT_EQ(none.stats().bad_member_rows, 0U);
}

// ---- the file ----

TEST(StoreTest, NewFileIs0600WhateverTheUmask) {
  for (mode_t mask : {mode_t{0}, mode_t{022}, mode_t{0277}}) {
    TempDir dir;
    ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
    const auto path = dir.file("weft.db");
    const mode_t old = ::umask(mask);
    auto s = Store::open(path);
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->set_incarnation(1));
    EXPECT_EQ(mode_of(path), 0600U) << "umask " << mask;
    EXPECT_EQ(mode_of(path + "-wal"), 0600U) << "umask " << mask;
    EXPECT_EQ(mode_of(path + "-shm"), 0600U) << "umask " << mask;
    ::umask(old);
    EXPECT_EQ(mode_of(dir.path().string()), 0755U);  // the directory is not the store's to change
  }
}

TEST(StoreTest, EmptyPathIsRefused) { EXPECT_FALSE(Store::open("")); }

TEST(StoreTest, MissingDirectoryIsAnError) {
  TempDir dir;
  auto s = Store::open(dir.file("no/such/dir/weft.db"));
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("no/such/dir"), std::string::npos) << s.error().message;
}

TEST(StoreTest, NotADatabaseIsRefusedAndLeftUnchanged) {
  TempDir dir;
  std::string big;
  for (int i = 0; i < 600; ++i) big += "not a database, just text\n";
  for (const std::string& contents : {std::string("hello\n"), big}) {
    const auto path = dir.file("weft.db");
    write_file(path, contents);
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    auto s = Store::open(path);
    ASSERT_FALSE(s);
    EXPECT_NE(s.error().message.find(path + " is not a weft database: file is not a database"),
              std::string::npos)
        << s.error().message;
    EXPECT_EQ(read_file(path), contents);
    EXPECT_EQ(mode_of(path), 0644U);
    EXPECT_FALSE(fs::exists(path + "-wal"));
    EXPECT_FALSE(fs::exists(path + "-shm"));
    EXPECT_FALSE(fs::exists(path + "-journal"));
  }
}

TEST(StoreTest, AnotherApplicationsDatabaseIsRefused) {
  TempDir dir;
  const auto path = dir.file("other.db");
  {
    RawDb raw(path);
    raw.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  }
  auto s = Store::open(path);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("is not a weft database"), std::string::npos) << s.error().message;
  {
    RawDb raw(path);
    raw.exec("DROP TABLE t; PRAGMA application_id = 1234");
  }
  s = Store::open(path);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("another application"), std::string::npos) << s.error().message;
}

TEST(StoreTest, NewerSchemaIsRefused) {
  TempDir dir;
  const auto path = dir.file("weft.db");
  {
    auto s = Store::open(path);
    ASSERT_TRUE(s);
    fill(*s);
  }
  {
    RawDb raw(path);
    raw.exec("PRAGMA user_version = 4");  // one above kSchemaVersion
  }
  auto s = Store::open(path);
  ASSERT_FALSE(s);
  const auto& msg = s.error().message;
  EXPECT_NE(msg.find("schema version 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3)"), std::string::npos) << msg;
}

TEST(StoreTest, DamagedPagesFailQuickCheck) {
  TempDir dir;
  const auto path = dir.file("weft.db");
  {
    auto s = Store::open(path);
    ASSERT_TRUE(s);
    std::vector<StoredMember> ms;
    for (int i = 0; i < 300; ++i) ms.push_back(member("member-" + std::to_string(i), 1, 200));
    ASSERT_TRUE(s->save_members(ms, {}));
  }  // closing checkpoints the WAL into the main file
  auto bytes = read_file(path);
  ASSERT_GT(bytes.size(), 8U * 4096U);
  for (std::size_t i = 2 * 4096; i < bytes.size(); i += 4096)
    bytes.replace(i, 64, 64, '\xAB');  // page headers
  write_file(path, bytes);
  auto s = Store::open(path);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("damaged"), std::string::npos) << s.error().message;
}

// ---- services and upstreams ----

std::vector<std::byte> spec_of(std::string_view text) {
  std::vector<std::byte> out;
  for (char c : text) out.push_back(static_cast<std::byte>(c));
  return out;
}

TEST(StoreEntries, PutReplaceDeleteAndReopen) {
  TempDir dir;
  {
    auto s = Store::open(dir.file("weft.db"));
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->entries(EntryKind::kService));
    EXPECT_TRUE(s->entries(EntryKind::kService)->empty());
    ASSERT_TRUE(s->put_entry(EntryKind::kService, {"web", spec_of("v1")}));
    ASSERT_TRUE(s->put_entry(EntryKind::kService, {"api", spec_of("a")}));
    ASSERT_TRUE(s->put_entry(EntryKind::kService, {"web", spec_of("v2")}));  // replaces
    ASSERT_TRUE(s->put_entry(EntryKind::kUpstream, {"web", spec_of("u")}));   // another kind
    auto gone = s->delete_entry(EntryKind::kService, "api");
    ASSERT_TRUE(gone);
    EXPECT_TRUE(*gone);
    gone = s->delete_entry(EntryKind::kService, "api");
    ASSERT_TRUE(gone);
    EXPECT_FALSE(*gone) << "deleting twice reports it was not there";
    ASSERT_TRUE(s->set_catalog_version(41));
  }
  auto s = Store::open(dir.file("weft.db"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(*s->entries(EntryKind::kService), (std::vector<Entry>{{"web", spec_of("v2")}}));
  EXPECT_EQ(*s->entries(EntryKind::kUpstream), (std::vector<Entry>{{"web", spec_of("u")}}));
  EXPECT_EQ(*s->catalog_version(), 41u);
}

TEST(StoreEntries, BadEntriesAreRefusedAndTheLimitHolds) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->put_entry(EntryKind::kService, {"", spec_of("x")}));
  EXPECT_FALSE(s->put_entry(EntryKind::kService, {std::string(kMaxEntryNameBytes + 1, 'n'), spec_of("x")}));
  EXPECT_FALSE(s->put_entry(EntryKind::kService, {"big", std::vector<std::byte>(kMaxEntrySpecBytes + 1)}));
  EXPECT_FALSE(s->put_entry(static_cast<EntryKind>(9), {"x", spec_of("x")}));
  EXPECT_TRUE(s->entries(EntryKind::kService)->empty());
  for (std::size_t i = 0; i < kMaxEntries; ++i) {
    ASSERT_TRUE(s->put_entry(EntryKind::kUpstream, {"u" + std::to_string(i), {}})) << i;
  }
  EXPECT_FALSE(s->put_entry(EntryKind::kUpstream, {"one-more", {}}));
  EXPECT_TRUE(s->put_entry(EntryKind::kUpstream, {"u7", spec_of("replacing is fine")}));
  EXPECT_TRUE(s->put_entry(EntryKind::kService, {"other-kind", {}}));
  EXPECT_EQ(s->entries(EntryKind::kUpstream)->size(), kMaxEntries);
}

TEST(StoreEntries, AVersionOneDatabaseIsMigrated) {
  TempDir dir;
  {
    RawDb raw(dir.file("weft.db"));
    // The whole of schema version 1, as a weft of issue 3 left it.
    raw.exec(
        "CREATE TABLE settings (key TEXT PRIMARY KEY NOT NULL, value ANY NOT NULL) STRICT;"
        "CREATE TABLE identity (id INTEGER PRIMARY KEY NOT NULL CHECK (id = 0), sign_pk BLOB NOT NULL, "
        "sign_sk BLOB NOT NULL, kx_pk BLOB NOT NULL, kx_sk BLOB NOT NULL) STRICT;"
        "CREATE TABLE keyring (position INTEGER PRIMARY KEY NOT NULL, key BLOB NOT NULL) STRICT;"
        "CREATE TABLE members (name TEXT PRIMARY KEY NOT NULL, addr TEXT NOT NULL, state INTEGER NOT NULL, "
        "incarnation INTEGER NOT NULL, meta BLOB NOT NULL, updated_unix INTEGER NOT NULL) STRICT;"
        "PRAGMA application_id = 2003134068; PRAGMA user_version = 1;"
        "INSERT INTO settings VALUES ('incarnation', 12);");
  }
  auto s = Store::open(dir.file("weft.db"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->schema_version(), 3);
  EXPECT_EQ(*s->incarnation(), 12u);
  EXPECT_TRUE(s->put_entry(EntryKind::kService, {"web", {}}));
  EXPECT_TRUE(s->integrity_check());
}

TEST(StoreEntries, AVersionTwoDatabaseIsMigratedKeepingItsEntries) {
  TempDir dir;
  {
    auto s = Store::open(dir.file("weft.db"));
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->put_entry(EntryKind::kUpstream, {"web", spec_of("u")}));
  }
  {
    // Back to schema version 2 as weft before signed documents left it.
    RawDb raw(dir.file("weft.db"));
    raw.exec("DROP TABLE signed_docs; PRAGMA user_version = 2;");
  }
  auto s = Store::open(dir.file("weft.db"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->schema_version(), 3);
  EXPECT_EQ(*s->entries(EntryKind::kUpstream), (std::vector<Entry>{{"web", spec_of("u")}}));
  EXPECT_EQ(*s->policy(), std::nullopt);
  EXPECT_TRUE(s->set_policy(1, filled(10, 1)));
  EXPECT_TRUE(s->integrity_check());
}

// ---- signed documents ----

TEST(StoreSignedDocs, NoneThenSetReplaceAndReopen) {
  TempDir dir;
  {
    auto s = Store::open(dir.file("weft.db"));
    ASSERT_TRUE(s) << s.error().message;
    auto none = s->policy();
    ASSERT_TRUE(none) << none.error().message;
    EXPECT_FALSE(none->has_value());
    ASSERT_TRUE(s->set_policy(3, filled(100, 3)));
    EXPECT_EQ(*s->policy(), (StoredDoc{3, filled(100, 3)}));
    ASSERT_TRUE(s->set_policy(7, filled(200, 7)));
    EXPECT_EQ(*s->policy(), (StoredDoc{7, filled(200, 7)}));
    // The kinds are separate rows: a revocation list never replaces the policy.
    ASSERT_TRUE(s->set_signed_doc(DocKind::kRevocations, 1, filled(5, 1)));
    EXPECT_EQ(*s->signed_doc(DocKind::kRevocations), (StoredDoc{1, filled(5, 1)}));
    EXPECT_EQ(*s->policy(), (StoredDoc{7, filled(200, 7)}));
  }
  auto s = Store::open(dir.file("weft.db"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(*s->policy(), (StoredDoc{7, filled(200, 7)}));
  EXPECT_EQ(*s->signed_doc(DocKind::kRevocations), (StoredDoc{1, filled(5, 1)}));
}

TEST(StoreSignedDocs, OnlyAHigherVersionReplacesAndBadValuesWriteNothing) {
  auto s = Store::open(":memory:");
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(s->set_policy(5, filled(10, 5)));
  auto same = s->set_policy(5, filled(10, 6));
  ASSERT_FALSE(same);
  EXPECT_NE(same.error().message.find("not above the stored 5"), std::string::npos) << same.error().message;
  EXPECT_FALSE(s->set_policy(4, filled(10, 4)));
  EXPECT_FALSE(s->set_policy(6, {}));                                        // empty envelope
  EXPECT_FALSE(s->set_policy(6, std::vector<std::byte>(kMaxSignedDocBytes + 1)));  // too big
  EXPECT_FALSE(s->set_signed_doc(static_cast<DocKind>(9), 6, filled(10, 6)));
  EXPECT_FALSE(s->signed_doc(static_cast<DocKind>(9)));
  EXPECT_EQ(*s->policy(), (StoredDoc{5, filled(10, 5)}));
  // The largest envelope fits; versions keep all 64 bits and compare unsigned.
  ASSERT_TRUE(s->set_policy(std::uint64_t{1} << 63, std::vector<std::byte>(kMaxSignedDocBytes)));
  ASSERT_TRUE(s->set_policy(std::numeric_limits<std::uint64_t>::max(), filled(1, 1)));
  EXPECT_EQ(*s->policy(), (StoredDoc{std::numeric_limits<std::uint64_t>::max(), filled(1, 1)}));
  EXPECT_FALSE(s->set_policy(6, filled(10, 6)));
}

// ---- damaged rows ----

class DamagedRowTest : public testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::open(path_);
    ASSERT_TRUE(s) << s.error().message;
    fill(*s);
  }
  // Edits the file with plain SQLite, then reopens the store (the file stays a valid database).
  Store damage(const std::string& sql) {
    {
      RawDb raw(path_);
      raw.exec(sql);
    }
    auto s = Store::open(path_);
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(*s) : Store();
  }
  TempDir dir_;
  std::string path_ = dir_.file("weft.db");
};

TEST_F(DamagedRowTest, ShortKey) {
  auto s = damage("UPDATE keyring SET key = randomblob(31) WHERE position = 1");
  auto keys = s.keys();
  ASSERT_FALSE(keys);
  EXPECT_NE(keys.error().message.find("31 bytes"), std::string::npos) << keys.error().message;
  EXPECT_TRUE(s.integrity_check());  // the file is fine, the row is not
}

TEST_F(DamagedRowTest, KeyringWithAGap) {
  auto s = damage("UPDATE keyring SET position = 5 WHERE position = 1");
  EXPECT_FALSE(s.keys());
}

TEST_F(DamagedRowTest, IdentityBlobSizes) {
  for (const char* sql :
       {"UPDATE identity SET sign_pk = randomblob(33)", "UPDATE identity SET sign_sk = randomblob(32)",
        "UPDATE identity SET kx_pk = zeroblob(0)", "UPDATE identity SET kx_sk = randomblob(4000)"}) {
    auto s = damage(sql);
    EXPECT_FALSE(s.identity()) << sql;
    ASSERT_TRUE(s.set_identity(test_identity()));  // repairable
  }
}

TEST_F(DamagedRowTest, SettingsOfTheWrongType) {
  auto s = damage("UPDATE settings SET value = 'many' WHERE key = 'incarnation'");
  EXPECT_FALSE(s.incarnation());
  s = damage("UPDATE settings SET value = x'00' WHERE key = 'node_name'");
  EXPECT_FALSE(s.node_name());
  s = damage("UPDATE settings SET value = '' WHERE key = 'node_name'");
  EXPECT_FALSE(s.node_name());
}

TEST_F(DamagedRowTest, BadMemberRowsAreSkippedAndCounted) {
  auto s = damage(
      "INSERT INTO members VALUES ('bad-state', 'x', 9, 1, x'', 0);"
      "INSERT INTO members VALUES ('', 'x', 0, 1, x'', 0);"
      "INSERT INTO members VALUES ('big-meta', 'x', 0, 1, zeroblob(65537), 0);"
      "INSERT INTO members VALUES (printf('%.257c', 'n'), 'x', 0, 1, x'', 0);"
      "INSERT INTO members VALUES ('neg-state', 'x', -1, 1, x'', 0);");
  auto ms = s.members();
  ASSERT_TRUE(ms) << ms.error().message;
  EXPECT_EQ(*ms, (std::vector<StoredMember>{member("a", 1, 0), member("b", 2)}));
  EXPECT_EQ(s.stats().bad_member_rows, 5U);
  // Removing a bad row by name works.
  const std::vector<std::string> rm = {"bad-state"};
  ASSERT_TRUE(s.save_members({}, rm));
  ASSERT_TRUE(s.members());
  EXPECT_EQ(s.stats().bad_member_rows, 9U);
}

TEST_F(DamagedRowTest, BadEntryRowsAreSkippedAndCounted) {
  auto s = damage(
      "INSERT INTO entries VALUES (1, 'good', x'01');"
      "INSERT INTO entries VALUES (1, '', x'01');"
      "INSERT INTO entries VALUES (1, 'huge', zeroblob(65537));"
      "INSERT INTO entries VALUES (1, printf('%.257c', 'n'), x'01');");
  auto es = s.entries(EntryKind::kService);
  ASSERT_TRUE(es) << es.error().message;
  EXPECT_EQ(*es, (std::vector<Entry>{{"good", {std::byte{1}}}}));
  EXPECT_EQ(s.stats().bad_entry_rows, 3U);
}

TEST_F(DamagedRowTest, BadSignedDocRowsAreErrors) {
  // STRICT tables refuse a value of the wrong type even from plain SQL; sizes can still be wrong.
  {
    auto s = damage("INSERT INTO signed_docs VALUES (1, 7, zeroblob(0))");
    auto d = s.policy();
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("envelope is 0 bytes"), std::string::npos) << d.error().message;
    EXPECT_FALSE(s.set_policy(8, filled(3, 8))) << "a damaged row is not silently replaced";
  }
  auto s = damage("UPDATE signed_docs SET envelope = zeroblob(2000000)");
  EXPECT_FALSE(s.policy());
}

TEST_F(DamagedRowTest, HugeValueIsAnErrorNotAnAllocation) {
  auto s = damage("UPDATE identity SET sign_sk = zeroblob(2000000)");
  EXPECT_FALSE(s.identity());
}

// ---- crash safety ----

// Child: opens the store and writes batches until killed. Batch i upserts m0..m9 at incarnation i,
// replaces "gone-(i-1)" by "gone-i", then sets the incarnation to i and reports i on `ack`.
[[noreturn]] void crash_child(const std::string& path, int ack) {
  ::alarm(10);  // never outlive a parent that died
  auto s = Store::open(path);
  if (!s) ::_exit(2);
  auto base = s->incarnation();
  if (!base) ::_exit(3);
  for (std::uint64_t i = *base + 1;; ++i) {
    std::vector<StoredMember> batch;
    for (int m = 0; m < 10; ++m)
      batch.push_back(member("m" + std::to_string(m), i, (i * 37 + static_cast<std::uint64_t>(m)) % 3000));
    batch.push_back(member("gone-" + std::to_string(i), i));
    const std::vector<std::string> removed = {"gone-" + std::to_string(i - 1)};
    if (!s->save_members(batch, removed)) ::_exit(4);
    if (!s->set_incarnation(i)) ::_exit(5);
    if (::write(ack, &i, sizeof i) != static_cast<ssize_t>(sizeof i)) ::_exit(6);
  }
}

TEST(StoreCrashTest, SigkillMidWriteLeavesAConsistentDatabase) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  TempDir dir;
  const auto path = dir.file("weft.db");
  std::uint64_t known = 0;  // the incarnation found after the previous kill
  int kills_with_acks = 0;
  for (int round = 0; round < 30; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      crash_child(path, fds[1]);
    }
    ::close(fds[1]);
    std::vector<std::uint64_t> acks;
    std::uint64_t v = 0;
    // Even rounds count the delay from fork (kills also land in open and in the migration); odd
    // rounds from the first acknowledged write, so that writes are interrupted however slow the disk.
    if (round % 2 == 1 && ::read(fds[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v)) acks.push_back(v);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 50)(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited early with status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    while (::read(fds[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v)) acks.push_back(v);
    ::close(fds[0]);

    auto s = Store::open(path);
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->integrity_check());
    auto inc = s->incarnation();
    ASSERT_TRUE(inc) << inc.error().message;
    // Durable once acknowledged; the write in flight may or may not have landed.
    const std::uint64_t last = acks.empty() ? known : acks.back();
    EXPECT_TRUE(*inc == last || *inc == last + 1) << "incarnation " << *inc << ", last acknowledged " << last;
    if (!acks.empty()) ++kills_with_acks;

    // Each batch is atomic: all of m0..m9 and exactly one gone-* row carry the same incarnation k,
    // and set_incarnation(k) follows save_members(k).
    auto ms = s->members();
    ASSERT_TRUE(ms) << ms.error().message;
    EXPECT_EQ(s->stats().bad_member_rows, 0U);
    if (ms->empty()) {
      EXPECT_EQ(*inc, 0U);
    } else {
      ASSERT_EQ(ms->size(), 11U);
      const std::uint64_t k = ms->front().incarnation;
      int gone = 0;
      for (const auto& m : *ms) {
        EXPECT_EQ(m.incarnation, k) << m.name;
        if (m.name.starts_with("gone-")) {
          ++gone;
          EXPECT_EQ(m.name, "gone-" + std::to_string(k));
        }
      }
      EXPECT_EQ(gone, 1);
      EXPECT_TRUE(*inc == k || *inc + 1 == k) << "incarnation " << *inc << ", members at " << k;
    }
    known = *inc;
  }
  EXPECT_GE(kills_with_acks, 15) << "the child seldom got to write";
}

// The envelope of policy version v: v's bytes repeated, a size that varies with v (so a torn
// write would show as a size or content that does not match the version).
Bytes doc_for(std::uint64_t v) {
  Bytes b(1000 + (v * 7919) % 30000);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::byte(static_cast<std::uint8_t>(v >> (8 * (i % 8))));
  return b;
}

[[noreturn]] void doc_crash_child(const std::string& path, int ack) {
  ::alarm(10);
  auto s = Store::open(path);
  if (!s) ::_exit(2);
  auto held = s->policy();
  if (!held) ::_exit(3);
  for (std::uint64_t v = *held ? (*held)->version + 1 : 1;; ++v) {
    if (!s->set_policy(v, doc_for(v))) ::_exit(4);
    if (::write(ack, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) ::_exit(6);
  }
}

// kill -9 during a stream of policy writes: the file passes integrity_check and holds the last
// acknowledged version or the one in flight, with exactly that version's envelope.
TEST(StoreCrashTest, SigkillDuringPolicyWritesKeepsVersionAndEnvelopeTogether) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  TempDir dir;
  const auto path = dir.file("weft.db");
  std::uint64_t known = 0;
  int kills_with_acks = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      doc_crash_child(path, fds[1]);
    }
    ::close(fds[1]);
    std::vector<std::uint64_t> acks;
    std::uint64_t v = 0;
    if (round % 2 == 1 && ::read(fds[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v)) acks.push_back(v);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 50)(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited early with status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    while (::read(fds[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v)) acks.push_back(v);
    ::close(fds[0]);

    auto s = Store::open(path);
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->integrity_check());
    auto d = s->policy();
    ASSERT_TRUE(d) << d.error().message;
    const std::uint64_t last = acks.empty() ? known : acks.back();
    const std::uint64_t got = *d ? (*d)->version : 0;
    EXPECT_TRUE(got == last || got == last + 1) << "version " << got << ", last acknowledged " << last;
    if (*d) {
      EXPECT_EQ((*d)->envelope, doc_for(got)) << "the envelope is not the one written with version " << got;
    }
    if (!acks.empty()) ++kills_with_acks;
    known = got;
  }
  EXPECT_GE(kills_with_acks, 10) << "the child seldom got to write";
}

}  // namespace
}  // namespace weft::store
