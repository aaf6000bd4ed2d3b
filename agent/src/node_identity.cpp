#include "node_identity.h"

#include <cstring>

#include "weft/transport/trust.h"

namespace weft::agent {

Result<LoadedIdentity> load_or_create_identity(store::Store& store, const std::string& db_path) {
  auto stored = store.identity();
  if (!stored) return fail(stored.error().message);
  LoadedIdentity out;
  if (*stored) {
    const store::Identity& s = **stored;
    transport::NodeIdentity& id = out.id;
    if (!from_bytes(s.sign_pk, id.sign_pk) || !from_bytes(s.sign_sk, id.sign_sk) ||
        !from_bytes(s.kx_pk, id.kx_pk) || !from_bytes(s.kx_sk, id.kx_sk) || !id.check()) {
      return fail(db_path + ": the stored node identity is damaged");
    }
    return out;
  }
  out.id = transport::NodeIdentity::generate();
  out.created = true;
  const store::Identity s{to_bytes(out.id.sign_pk), to_bytes(out.id.sign_sk), to_bytes(out.id.kx_pk),
                          to_bytes(out.id.kx_sk)};
  if (auto r = store.set_identity(s); !r) return fail(r.error().message);
  return out;
}

Result<std::string> write_node_pub(const std::string& data_dir, const transport::NodeIdentity& id) {
  const std::string path = data_dir + "/node.pub";
  if (auto r = transport::replace_file(path, transport::encode_node_public(transport::public_keys(id)), 0600);
      !r) {
    return fail(r.error().message);
  }
  return path;
}

}  // namespace weft::agent
