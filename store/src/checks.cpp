#include "checks.h"

#include <string>

namespace weft::store::detail {
namespace {

Result<void> check_size(const char* what, std::size_t got, std::size_t want) {
  if (got == want) return {};
  return fail(std::string(what) + " is " + std::to_string(got) + " bytes, want " + std::to_string(want));
}

}  // namespace

Result<void> check_identity(const Identity& id) {
  if (auto r = check_size("identity sign_pk", id.sign_pk.size(), kSignPkBytes); !r) return r;
  if (auto r = check_size("identity sign_sk", id.sign_sk.size(), kSignSkBytes); !r) return r;
  if (auto r = check_size("identity kx_pk", id.kx_pk.size(), kKxPkBytes); !r) return r;
  return check_size("identity kx_sk", id.kx_sk.size(), kKxSkBytes);
}

Result<void> check_key(std::span<const std::byte> key) { return check_size("key", key.size(), kKeyBytes); }

Result<void> check_name(std::string_view name) {
  if (name.empty()) return fail("name is empty");
  if (name.size() > kMaxNameBytes) {
    return fail("name is " + std::to_string(name.size()) + " bytes, limit " + std::to_string(kMaxNameBytes));
  }
  return {};
}

Result<void> check_member(const StoredMember& m) {
  if (auto r = check_name(m.name); !r) return fail("member: " + r.error().message);
  const std::string who = "member '" + m.name + "': ";
  if (m.addr.size() > kMaxAddrBytes) {
    return fail(who + "addr is " + std::to_string(m.addr.size()) + " bytes, limit " +
                std::to_string(kMaxAddrBytes));
  }
  if (m.state > kMaxMemberState) return fail(who + "state " + std::to_string(m.state) + " is unknown");
  if (m.meta.size() > kMaxMetaBytes) {
    return fail(who + "meta is " + std::to_string(m.meta.size()) + " bytes, limit " +
                std::to_string(kMaxMetaBytes));
  }
  return {};
}

}  // namespace weft::store::detail
