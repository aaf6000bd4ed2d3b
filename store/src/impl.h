#pragma once
// Store::Impl: the connection and its prepared statements. Private to weft::store.

#include <string>

#include "sqlite.h"
#include "weft/store/store.h"

namespace weft::store {

struct Store::Impl {
  detail::DbHandle db;  // first member: destroyed after the statements below
  int schema_version = 0;
  StoreStats stats;

  detail::Stmt get_setting;  // ?1 key
  detail::Stmt put_setting;  // ?1 key, ?2 value
  detail::Stmt get_identity;
  detail::Stmt put_identity;  // ?1..?4 sign_pk, sign_sk, kx_pk, kx_sk
  detail::Stmt get_keys;
  detail::Stmt clear_keys;
  detail::Stmt put_key;  // ?1 position, ?2 key
  detail::Stmt get_members;
  detail::Stmt put_member;     // ?1..?6 name, addr, state, incarnation, meta, updated_unix
  detail::Stmt delete_member;  // ?1 name
  detail::Stmt get_entries;    // ?1 kind
  detail::Stmt count_entries;  // ?1 kind, ?2 name: rows of the kind other than name
  detail::Stmt put_entry;      // ?1 kind, ?2 name, ?3 spec
  detail::Stmt delete_entry;   // ?1 kind, ?2 name
  detail::Stmt get_doc;        // ?1 kind
  detail::Stmt put_doc;        // ?1 kind, ?2 version, ?3 envelope
};

namespace detail {

// PRAGMA quick_check / integrity_check: ok when the only row is "ok"; else the first findings.
[[nodiscard]] Result<void> check_pragma(sqlite3* db, const char* pragma);

}  // namespace detail
}  // namespace weft::store
