#pragma once
// The node's long-term keys in the data dir's store: loaded, or created and stored at first use.
// The one code path for `weft agent` (at start) and `weft identity init`.

#include <string>

#include "weft/base/result.h"
#include "weft/store/store.h"
#include "weft/transport/identity.h"

namespace weft::agent {

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
