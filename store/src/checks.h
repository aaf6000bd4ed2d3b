#pragma once
// The limits of store.h, applied to values before they are written and to rows read back.

#include <cstddef>
#include <span>
#include <string_view>

#include "weft/base/result.h"
#include "weft/store/store.h"

namespace weft::store::detail {

[[nodiscard]] Result<void> check_identity(const Identity& id);
[[nodiscard]] Result<void> check_key(std::span<const std::byte> key);
[[nodiscard]] Result<void> check_name(std::string_view name);  // node and member names
[[nodiscard]] Result<void> check_member(const StoredMember& m);

}  // namespace weft::store::detail
