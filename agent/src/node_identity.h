#pragma once
// The node's long-term keys in the data dir's store: loaded, or created and stored at first use.
// The one code path for `weft agent` (at start) and `weft identity init`.

#include <array>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "weft/base/result.h"
#include "weft/store/store.h"
#include "weft/transport/identity.h"

namespace weft::agent {

// Key bytes between the store's rows (std::byte vectors) and the key arrays.
inline std::vector<std::byte> to_bytes(std::span<const unsigned char> s) {
  std::vector<std::byte> v(s.size());
  if (!s.empty()) std::memcpy(v.data(), s.data(), s.size());
  return v;
}
// False (and `out` untouched) unless `v` holds exactly N bytes: a damaged row.
template <std::size_t N>
bool from_bytes(const std::vector<std::byte>& v, std::array<unsigned char, N>& out) {
  if (v.size() != N) return false;
  std::memcpy(out.data(), v.data(), N);
  return true;
}

struct LoadedIdentity {
  transport::NodeIdentity id;
  bool created = false;  // generated and stored by this call
};

// `db_path` names the database in errors. A stored identity that fails NodeIdentity::check is an
// error ("damaged"), never silently replaced.
[[nodiscard]] Result<LoadedIdentity> load_or_create_identity(store::Store& store, const std::string& db_path);

// Writes DATA_DIR/node.pub (the public keys, armored; see transport/trust.h), replacing it
// atomically. The same keys always give the same bytes. Owner-only like everything the agent
// makes in its data dir, although it holds only public keys.
[[nodiscard]] Result<std::string> write_node_pub(const std::string& data_dir,
                                                 const transport::NodeIdentity& id);

}  // namespace weft::agent
