// weft::store: getters and setters over the prepared statements of an open database. Opening,
// file creation and the header checks are in open.cpp; the schema in schema.cpp.

#include "weft/store/store.h"

#include <exception>
#include <limits>
#include <string>
#include <utility>

#include "checks.h"
#include "impl.h"
#include "sqlite.h"

namespace weft::store {

using detail::FullSync;
using detail::Stmt;
using detail::Tx;

namespace {

constexpr const char* kNodeNameKey = "node_name";
constexpr const char* kIncarnationKey = "incarnation";
constexpr const char* kCatalogVersionKey = "catalog_version";

// Exceptions (std::bad_alloc from a vector or string) never cross the API.
template <typename F>
auto guarded(const std::unique_ptr<Store::Impl>& impl, const char* what, F&& f) noexcept -> decltype(f()) {
  if (!impl) return fail(std::string("store: ") + what + ": the store is not open");
  try {
    return f();
  } catch (const std::exception& e) {
    return fail(std::string("store: ") + what + ": " + e.what());
  } catch (...) {
    return fail(std::string("store: ") + what + ": unknown exception");
  }
}

Unexpected<Error> failed(const char* what, const Error& e) {
  return fail(std::string("store: ") + what + ": " + e.message);
}

// Column readers for untrusted rows: type and size are checked before anything is copied.
Result<std::int64_t> read_int(const Stmt::Use& u, int col, const std::string& what) {
  if (u.type(col) != SQLITE_INTEGER) return fail(what + " is not an integer");
  return u.integer(col);
}

Result<std::string> read_text(const Stmt::Use& u, int col, std::size_t min, std::size_t max,
                              const std::string& what) {
  if (u.type(col) != SQLITE_TEXT) return fail(what + " is not text");
  const auto t = u.text(col);
  if (t.size() < min || t.size() > max) {
    return fail(what + " is " + std::to_string(t.size()) + " bytes, want " + std::to_string(min) + ".." +
                std::to_string(max));
  }
  return std::string(t);
}

Result<std::vector<std::byte>> read_blob(const Stmt::Use& u, int col, std::size_t min, std::size_t max,
                                         const std::string& what) {
  if (u.type(col) != SQLITE_BLOB) return fail(what + " is not a blob");
  const auto b = u.blob(col);
  if (b.size() < min || b.size() > max) {
    if (min == max)
      return fail(what + " is " + std::to_string(b.size()) + " bytes, want " + std::to_string(min));
    return fail(what + " is " + std::to_string(b.size()) + " bytes, want " + std::to_string(min) + ".." +
                std::to_string(max));
  }
  return std::vector<std::byte>(b.begin(), b.end());
}

std::span<const std::byte> bytes(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

}  // namespace

Store::Store() = default;
Store::~Store() = default;
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;

int Store::schema_version() const { return impl_ ? impl_->schema_version : 0; }

const StoreStats& Store::stats() const {
  static const StoreStats kNone;
  return impl_ ? impl_->stats : kNone;
}

Result<void> Store::integrity_check() {
  return guarded(impl_, "integrity_check", [&]() -> Result<void> {
    if (auto r = detail::check_pragma(impl_->db.get(), "integrity_check"); !r)
      return failed("integrity_check", r.error());
    return {};
  });
}

// --- identity ---

Result<std::optional<Identity>> Store::identity() {
  return guarded(impl_, "identity", [&]() -> Result<std::optional<Identity>> {
    auto u = impl_->get_identity.use();
    auto row = u.step();
    if (!row) return failed("identity", row.error());
    if (!*row) return std::optional<Identity>();
    Identity id;
    auto sign_pk = read_blob(u, 0, kSignPkBytes, kSignPkBytes, "identity sign_pk");
    auto sign_sk = read_blob(u, 1, kSignSkBytes, kSignSkBytes, "identity sign_sk");
    auto kx_pk = read_blob(u, 2, kKxPkBytes, kKxPkBytes, "identity kx_pk");
    auto kx_sk = read_blob(u, 3, kKxSkBytes, kKxSkBytes, "identity kx_sk");
    for (const auto* r : {&sign_pk, &sign_sk, &kx_pk, &kx_sk}) {
      if (!*r) return failed("identity", r->error());
    }
    id.sign_pk = std::move(*sign_pk);
    id.sign_sk = std::move(*sign_sk);
    id.kx_pk = std::move(*kx_pk);
    id.kx_sk = std::move(*kx_sk);
    return std::optional<Identity>(std::move(id));
  });
}

Result<void> Store::set_identity(const Identity& id) {
  return guarded(impl_, "set_identity", [&]() -> Result<void> {
    if (auto r = detail::check_identity(id); !r) return failed("set_identity", r.error());
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("set_identity", sync.error());
    auto tx = Tx::begin(impl_->db.get());
    if (!tx) return failed("set_identity", tx.error());
    auto u = impl_->put_identity.use();
    if (auto r = u.bind_all(bytes(id.sign_pk), bytes(id.sign_sk), bytes(id.kx_pk), bytes(id.kx_sk)); !r) {
      return failed("set_identity", r.error());
    }
    if (auto r = u.run(); !r) return failed("set_identity", r.error());
    if (auto r = tx->commit(); !r) return failed("set_identity", r.error());
    return {};
  });
}

// --- settings ---

Result<std::optional<std::string>> Store::node_name() {
  return guarded(impl_, "node_name", [&]() -> Result<std::optional<std::string>> {
    auto u = impl_->get_setting.use();
    if (auto r = u.bind(1, std::string_view(kNodeNameKey)); !r) return failed("node_name", r.error());
    auto row = u.step();
    if (!row) return failed("node_name", row.error());
    if (!*row) return std::optional<std::string>();
    auto name = read_text(u, 0, 1, kMaxNameBytes, "node_name");
    if (!name) return failed("node_name", name.error());
    return std::optional<std::string>(std::move(*name));
  });
}

Result<void> Store::set_node_name(const std::string& name) {
  return guarded(impl_, "set_node_name", [&]() -> Result<void> {
    if (auto r = detail::check_name(name); !r) return failed("set_node_name", r.error());
    auto u = impl_->put_setting.use();
    // One statement in autocommit mode is its own transaction.
    if (auto r = u.bind_all(std::string_view(kNodeNameKey), std::string_view(name)); !r) {
      return failed("set_node_name", r.error());
    }
    if (auto r = u.run(); !r) return failed("set_node_name", r.error());
    return {};
  });
}

Result<std::uint64_t> Store::incarnation() {
  return guarded(impl_, "incarnation", [&]() -> Result<std::uint64_t> {
    auto u = impl_->get_setting.use();
    if (auto r = u.bind(1, std::string_view(kIncarnationKey)); !r) return failed("incarnation", r.error());
    auto row = u.step();
    if (!row) return failed("incarnation", row.error());
    if (!*row) return std::uint64_t{0};
    auto v = read_int(u, 0, "incarnation");
    if (!v) return failed("incarnation", v.error());
    return static_cast<std::uint64_t>(*v);  // the stored int64 bit pattern, see store.h
  });
}

Result<void> Store::set_incarnation(std::uint64_t inc) {
  return guarded(impl_, "set_incarnation", [&]() -> Result<void> {
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("set_incarnation", sync.error());
    auto u = impl_->put_setting.use();
    // One statement in autocommit mode is its own transaction, committed with FULL sync.
    if (auto r = u.bind_all(std::string_view(kIncarnationKey), static_cast<std::int64_t>(inc)); !r) {
      return failed("set_incarnation", r.error());
    }
    if (auto r = u.run(); !r) return failed("set_incarnation", r.error());
    return {};
  });
}

// --- keyring ---

Result<std::vector<std::vector<std::byte>>> Store::keys() {
  return guarded(impl_, "keys", [&]() -> Result<std::vector<std::vector<std::byte>>> {
    std::vector<std::vector<std::byte>> out;
    auto u = impl_->get_keys.use();
    for (;;) {
      auto row = u.step();
      if (!row) return failed("keys", row.error());
      if (!*row) break;
      if (out.size() == kMaxKeys) return fail("store: keys: more than " + std::to_string(kMaxKeys) + " keys");
      auto pos = read_int(u, 0, "keyring position");
      if (!pos) return failed("keys", pos.error());
      // Rows come ordered by position; 0, 1, 2, ... keeps "primary first" unambiguous.
      if (*pos != static_cast<std::int64_t>(out.size())) {
        return fail("store: keys: keyring position " + std::to_string(*pos) + " where " +
                    std::to_string(out.size()) + " was expected");
      }
      auto key = read_blob(u, 1, kKeyBytes, kKeyBytes, "key at position " + std::to_string(*pos));
      if (!key) return failed("keys", key.error());
      out.push_back(std::move(*key));
    }
    return out;
  });
}

Result<void> Store::set_keys(std::span<const std::vector<std::byte>> keys_primary_first) {
  return guarded(impl_, "set_keys", [&]() -> Result<void> {
    if (keys_primary_first.size() > kMaxKeys) {
      return fail("store: set_keys: " + std::to_string(keys_primary_first.size()) + " keys, limit " +
                  std::to_string(kMaxKeys));
    }
    for (const auto& k : keys_primary_first) {
      if (auto r = detail::check_key(bytes(k)); !r) return failed("set_keys", r.error());
    }
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("set_keys", sync.error());
    auto tx = Tx::begin(impl_->db.get());
    if (!tx) return failed("set_keys", tx.error());
    if (auto r = impl_->clear_keys.use().run(); !r) return failed("set_keys", r.error());
    for (std::size_t i = 0; i < keys_primary_first.size(); ++i) {
      auto u = impl_->put_key.use();
      if (auto r = u.bind_all(static_cast<std::int64_t>(i), bytes(keys_primary_first[i])); !r) {
        return failed("set_keys", r.error());
      }
      if (auto r = u.run(); !r) return failed("set_keys", r.error());
    }
    if (auto r = tx->commit(); !r) return failed("set_keys", r.error());
    return {};
  });
}

// --- members ---

Result<std::vector<StoredMember>> Store::members() {
  return guarded(impl_, "members", [&]() -> Result<std::vector<StoredMember>> {
    std::vector<StoredMember> out;
    auto u = impl_->get_members.use();
    for (;;) {
      auto row = u.step();
      if (!row) return failed("members", row.error());  // the query itself failed: not one bad row
      if (!*row) break;
      auto name = read_text(u, 0, 1, kMaxNameBytes, "name");
      auto addr = read_text(u, 1, 0, kMaxAddrBytes, "addr");
      auto state = read_int(u, 2, "state");
      auto inc = read_int(u, 3, "incarnation");
      auto meta = read_blob(u, 4, 0, kMaxMetaBytes, "meta");
      auto updated = read_int(u, 5, "updated_unix");
      if (!name || !addr || !state || !inc || !meta || !updated || *state < 0 || *state > kMaxMemberState) {
        ++impl_->stats.bad_member_rows;  // skipped: see the bad-row policy in store.h
        continue;
      }
      StoredMember m;
      m.name = std::move(*name);
      m.addr = std::move(*addr);
      m.state = static_cast<std::uint8_t>(*state);
      m.incarnation = static_cast<std::uint64_t>(*inc);
      m.meta = std::move(*meta);
      m.updated_unix = *updated;
      out.push_back(std::move(m));
    }
    return out;
  });
}

Result<void> Store::save_members(std::span<const StoredMember> changed,
                                 std::span<const std::string> removed) {
  return guarded(impl_, "save_members", [&]() -> Result<void> {
    for (const auto& m : changed) {
      if (auto r = detail::check_member(m); !r) return failed("save_members", r.error());
    }
    if (changed.empty() && removed.empty()) return {};
    auto tx = Tx::begin(impl_->db.get());
    if (!tx) return failed("save_members", tx.error());
    for (const auto& m : changed) {
      auto u = impl_->put_member.use();
      if (auto r = u.bind_all(std::string_view(m.name), std::string_view(m.addr), std::int64_t{m.state},
                              static_cast<std::int64_t>(m.incarnation), bytes(m.meta), m.updated_unix);
          !r) {
        return failed("save_members", r.error());
      }
      if (auto r = u.run(); !r) return failed("save_members", r.error());
    }
    for (const auto& name : removed) {
      auto u = impl_->delete_member.use();
      if (auto r = u.bind(1, std::string_view(name)); !r) return failed("save_members", r.error());
      if (auto r = u.run(); !r) return failed("save_members", r.error());
    }
    if (auto r = tx->commit(); !r) return failed("save_members", r.error());
    return {};
  });
}

// --- services and upstreams ---

namespace {

Result<void> check_entry(EntryKind kind, const Entry& e) {
  if (kind != EntryKind::kService && kind != EntryKind::kUpstream) return fail("unknown entry kind");
  if (e.name.empty() || e.name.size() > kMaxEntryNameBytes) {
    return fail("name is " + std::to_string(e.name.size()) + " bytes, want 1.." + std::to_string(kMaxEntryNameBytes));
  }
  if (e.spec.size() > kMaxEntrySpecBytes) {
    return fail("spec is " + std::to_string(e.spec.size()) + " bytes, over " + std::to_string(kMaxEntrySpecBytes));
  }
  return {};
}

}  // namespace

Result<std::vector<Entry>> Store::entries(EntryKind kind) {
  return guarded(impl_, "entries", [&]() -> Result<std::vector<Entry>> {
    std::vector<Entry> out;
    auto u = impl_->get_entries.use();
    if (auto r = u.bind(1, static_cast<std::int64_t>(kind)); !r) return failed("entries", r.error());
    for (;;) {
      auto row = u.step();
      if (!row) return failed("entries", row.error());
      if (!*row) break;
      auto name = read_text(u, 0, 1, kMaxEntryNameBytes, "name");
      auto spec = read_blob(u, 1, 0, kMaxEntrySpecBytes, "spec");
      if (!name || !spec || out.size() >= kMaxEntries) {
        ++impl_->stats.bad_entry_rows;
        continue;
      }
      out.push_back(Entry{std::move(*name), std::move(*spec)});
    }
    return out;
  });
}

Result<void> Store::put_entry(EntryKind kind, const Entry& e) {
  return guarded(impl_, "put_entry", [&]() -> Result<void> {
    if (auto r = check_entry(kind, e); !r) return failed("put_entry", r.error());
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("put_entry", sync.error());
    auto tx = Tx::begin(impl_->db.get());
    if (!tx) return failed("put_entry", tx.error());
    {
      auto u = impl_->count_entries.use();
      if (auto r = u.bind_all(static_cast<std::int64_t>(kind), std::string_view(e.name)); !r) {
        return failed("put_entry", r.error());
      }
      auto row = u.step();
      if (!row) return failed("put_entry", row.error());
      if (*row && u.integer(0) >= static_cast<std::int64_t>(kMaxEntries)) {
        return fail("store: put_entry: already " + std::to_string(kMaxEntries) + " entries of this kind");
      }
    }
    auto u = impl_->put_entry.use();
    if (auto r = u.bind_all(static_cast<std::int64_t>(kind), std::string_view(e.name), bytes(e.spec)); !r) {
      return failed("put_entry", r.error());
    }
    if (auto r = u.run(); !r) return failed("put_entry", r.error());
    if (auto r = tx->commit(); !r) return failed("put_entry", r.error());
    return {};
  });
}

Result<bool> Store::delete_entry(EntryKind kind, const std::string& name) {
  return guarded(impl_, "delete_entry", [&]() -> Result<bool> {
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("delete_entry", sync.error());
    auto u = impl_->delete_entry.use();
    if (auto r = u.bind_all(static_cast<std::int64_t>(kind), std::string_view(name)); !r) {
      return failed("delete_entry", r.error());
    }
    if (auto r = u.run(); !r) return failed("delete_entry", r.error());
    return sqlite3_changes(impl_->db.get()) > 0;
  });
}

Result<std::uint64_t> Store::catalog_version() {
  return guarded(impl_, "catalog_version", [&]() -> Result<std::uint64_t> {
    auto u = impl_->get_setting.use();
    if (auto r = u.bind(1, std::string_view(kCatalogVersionKey)); !r) return failed("catalog_version", r.error());
    auto row = u.step();
    if (!row) return failed("catalog_version", row.error());
    if (!*row) return std::uint64_t{0};
    auto v = read_int(u, 0, "catalog_version");
    if (!v) return failed("catalog_version", v.error());
    return static_cast<std::uint64_t>(*v);
  });
}

Result<void> Store::set_catalog_version(std::uint64_t v) {
  return guarded(impl_, "set_catalog_version", [&]() -> Result<void> {
    auto u = impl_->put_setting.use();
    if (auto r = u.bind_all(std::string_view(kCatalogVersionKey), static_cast<std::int64_t>(v)); !r) {
      return failed("set_catalog_version", r.error());
    }
    if (auto r = u.run(); !r) return failed("set_catalog_version", r.error());
    return {};
  });
}

// --- operator-signed documents ---

namespace {

Result<void> check_doc_kind(DocKind kind) {
  if (kind != DocKind::kPolicy && kind != DocKind::kRevocations) return fail("unknown document kind");
  return {};
}

// The row of `kind` under an open statement use; nullopt when there is none.
Result<std::optional<StoredDoc>> read_doc(Stmt& get, DocKind kind) {
  auto u = get.use();
  if (auto r = u.bind(1, static_cast<std::int64_t>(kind)); !r) return fail(r.error().message);
  auto row = u.step();
  if (!row) return fail(row.error().message);
  if (!*row) return std::optional<StoredDoc>();
  auto version = read_int(u, 0, "signed document version");
  if (!version) return fail(version.error().message);
  auto envelope = read_blob(u, 1, 1, kMaxSignedDocBytes, "signed document envelope");
  if (!envelope) return fail(envelope.error().message);
  return std::optional<StoredDoc>(StoredDoc{static_cast<std::uint64_t>(*version), std::move(*envelope)});
}

}  // namespace

Result<std::optional<StoredDoc>> Store::signed_doc(DocKind kind) {
  return guarded(impl_, "signed_doc", [&]() -> Result<std::optional<StoredDoc>> {
    if (auto r = check_doc_kind(kind); !r) return failed("signed_doc", r.error());
    auto d = read_doc(impl_->get_doc, kind);
    if (!d) return failed("signed_doc", d.error());
    return d;
  });
}

Result<void> Store::set_signed_doc(DocKind kind, std::uint64_t version, std::span<const std::byte> envelope) {
  return guarded(impl_, "set_signed_doc", [&]() -> Result<void> {
    if (auto r = check_doc_kind(kind); !r) return failed("set_signed_doc", r.error());
    if (envelope.empty() || envelope.size() > kMaxSignedDocBytes) {
      return fail("store: set_signed_doc: the envelope is " + std::to_string(envelope.size()) + " bytes, want 1.." +
                  std::to_string(kMaxSignedDocBytes));
    }
    auto sync = FullSync::enter(impl_->db.get());
    if (!sync) return failed("set_signed_doc", sync.error());
    auto tx = Tx::begin(impl_->db.get());
    if (!tx) return failed("set_signed_doc", tx.error());
    // Under the write lock: two writers (or a stale caller) can never move the version back.
    auto held = read_doc(impl_->get_doc, kind);
    if (!held) return failed("set_signed_doc", held.error());
    if (*held && (*held)->version >= version) {
      return fail("store: set_signed_doc: version " + std::to_string(version) + " is not above the stored " +
                  std::to_string((*held)->version));
    }
    auto u = impl_->put_doc.use();
    if (auto r = u.bind_all(static_cast<std::int64_t>(kind), static_cast<std::int64_t>(version), envelope); !r) {
      return failed("set_signed_doc", r.error());
    }
    if (auto r = u.run(); !r) return failed("set_signed_doc", r.error());
    if (auto r = tx->commit(); !r) return failed("set_signed_doc", r.error());
    return {};
  });
}

}  // namespace weft::store
