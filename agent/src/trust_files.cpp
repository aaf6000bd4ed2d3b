// `weft operator init`, `weft identity init`, `weft cert sign`, `weft cert show`: the files around
// weft::transport's trust root (see weft/agent/trust_files.h).

#include "weft/agent/trust_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "node_identity.h"
#include "operator_key_file.h"
#include "paths.h"
#include "weft/store/store.h"
#include "weft/transport/revocation.h"
#include "weft/transport/trust.h"

namespace weft::agent {

namespace {

using nlohmann::json;
namespace tr = weft::transport;

Result<std::string> read_file(const std::string& path) {
  auto text = tr::read_text_file(path);
  if (!text) return fail(text.error().message);
  return text;
}

// The first line of the file, without its line end; empty is an error.
Result<std::string> read_passphrase(const std::string& path) {
  auto text = read_file(path);
  if (!text) return fail("--passphrase-file " + text.error().message);
  std::string p = *text;
  const auto nl = p.find('\n');
  if (nl != std::string::npos) p.resize(nl);
  if (!p.empty() && p.back() == '\r') p.pop_back();
  if (p.empty()) return fail("--passphrase-file " + path + ": the first line is empty");
  return p;
}

// Creates every missing component of `dir`, the new ones 0700.
Result<void> make_dir(const std::string& dir) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail("cannot create " + part + ": " + std::strerror(errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return fail(dir + " is not a directory");
  return {};
}

json cert_json(const tr::NodeCert& c) {
  return json{{"version", c.version},
              {"serial", c.serial},
              {"issuer", tr::to_hex(c.issuer)},
              {"node", c.node},
              {"sign_pk", tr::to_hex(c.sign_pk)},
              {"sign_pk_base64", tr::to_base64(c.sign_pk)},
              {"kx_pk", tr::to_hex(c.kx_pk)},
              {"kx_pk_base64", tr::to_base64(c.kx_pk)},
              {"fingerprint", tr::to_hex(std::span(c.sign_pk).first(8))},
              {"services", c.services},
              {"not_before", tr::format_rfc3339(c.not_before)},
              {"not_after", tr::format_rfc3339(c.not_after)}};
}

}  // namespace

Result<OperatorInitResult> operator_init(const std::string& dir, const std::string& passphrase_file) {
  std::optional<std::string> passphrase;
  if (!passphrase_file.empty()) {
    auto p = read_passphrase(passphrase_file);
    if (!p) return fail(p.error().message);
    passphrase = std::move(*p);
  }
  if (auto r = make_dir(dir); !r) return fail("--out: " + r.error().message);
  OperatorInitResult out{dir + "/operator.key", dir + "/operator.pub", ""};
  const tr::OperatorKey key = tr::OperatorKey::generate();
  std::string secret = key.encode_secret(passphrase);
  if (passphrase) std::fill(passphrase->begin(), passphrase->end(), '\0');
  auto w = tr::write_new_file(out.key_path, secret, 0600);
  std::fill(secret.begin(), secret.end(), '\0');
  if (!w) return fail(w.error().message);
  if (auto r = tr::replace_file(out.pub_path, key.encode_public(), 0644); !r) {
    ::unlink(out.key_path.c_str());  // no key without its public half: a rerun starts clean
    return fail(r.error().message);
  }
  out.issuer = tr::to_hex(key.issuer());
  return out;
}

Result<IdentityInitResult> identity_init(const std::string& data_dir) {
  if (auto r = prepare_data_dir(data_dir); !r) return fail(r.error().message);
  auto lock = lock_data_dir(data_dir);
  if (!lock) {
    return fail(lock.error().message + " (a running agent keeps " + data_dir + "/node.pub up to date)");
  }
  Result<IdentityInitResult> out = [&]() -> Result<IdentityInitResult> {
    const std::string db_path = data_dir + "/weft.db";
    auto st = store::Store::open(db_path);
    if (!st) return fail(st.error().message);
    auto id = load_or_create_identity(*st, db_path);
    if (!id) return fail(id.error().message);
    auto pub = write_node_pub(data_dir, id->id);
    if (!pub) return fail(pub.error().message);
    return IdentityInitResult{*pub, tr::fingerprint(id->id), id->created};
  }();
  ::close(*lock);
  return out;
}

Result<tr::OperatorKey> load_operator_key(const std::string& operator_key, const std::string& passphrase_file) {
  auto key_text = read_file(operator_key);
  if (!key_text) return fail("--operator-key " + key_text.error().message);
  auto key_file = tr::parse_operator_secret(*key_text);
  std::fill(key_text->begin(), key_text->end(), '\0');
  if (!key_file) return fail("--operator-key " + operator_key + ": " + key_file.error().message);
  std::optional<std::string> passphrase;
  if (!passphrase_file.empty()) {
    auto p = read_passphrase(passphrase_file);
    if (!p) return fail(p.error().message);
    passphrase = std::move(*p);
  }
  auto key = tr::unlock_operator_secret(*key_file, passphrase);
  if (passphrase) std::fill(passphrase->begin(), passphrase->end(), '\0');
  if (!key) return fail("--operator-key " + operator_key + ": " + key.error().message);
  return key;
}

Result<json> cert_sign(const CertSignRequest& req) {
  if (auto r = tr::check_trust_name("node", req.node); !r) return fail("--node: " + r.error().message);
  for (const std::string& s : req.services) {
    if (auto r = tr::check_trust_name("service", s); !r) return fail("--service: " + r.error().message);
  }
  const auto ttl = std::chrono::duration_cast<std::chrono::seconds>(req.ttl);
  if (ttl <= std::chrono::seconds(0)) return fail("--ttl must be at least 1s");

  auto key = load_operator_key(req.operator_key, req.passphrase_file);
  if (!key) return fail(key.error().message);

  auto node_text = read_file(req.node_key);
  if (!node_text) return fail("--node-key " + node_text.error().message);
  auto node_keys = tr::decode_node_public(*node_text);
  if (!node_keys) return fail("--node-key " + req.node_key + ": " + node_keys.error().message);

  tr::NodeCert c;
  c.serial = tr::random_serial();
  c.node = req.node;
  c.sign_pk = node_keys->sign_pk;
  c.kx_pk = node_keys->kx_pk;
  c.services = req.services;
  std::sort(c.services.begin(), c.services.end());
  c.services.erase(std::unique(c.services.begin(), c.services.end()), c.services.end());
  c.not_before = req.now;
  c.not_after = req.now + ttl;
  auto env = tr::sign_cert(c, *key);
  if (!env) return fail(env.error().message);
  if (auto r = tr::replace_file(req.out, tr::armor_cert(*env), 0644); !r)
    return fail("--out " + r.error().message);
  auto d = tr::decode_cert(*env);
  if (!d) return fail("the new certificate does not decode: " + d.error().message);  // never: a bug
  return cert_json(d->cert);
}

namespace {

json revocations_json(const tr::RevocationList& l) {
  json revoked = json::array();
  for (const tr::RevokedCert& c : l.revoked) revoked.push_back(json{{"issuer", tr::to_hex(c.issuer)}, {"serial", c.serial}});
  return json{{"cluster", l.cluster}, {"version", l.version}, {"issuer", tr::to_hex(l.issuer)}, {"revoked", revoked}};
}

Result<std::vector<std::byte>> read_revocations(const std::string& file) {
  auto text = read_file(file);
  if (!text) return fail(text.error().message);
  auto env = tr::unarmor_revocations(*text);
  if (!env) return fail(file + ": " + env.error().message);
  return env;
}

Result<std::vector<tr::SignPublicKey>> read_operator_pubs(const std::vector<std::string>& paths) {
  std::vector<tr::SignPublicKey> trusted;
  for (const std::string& path : paths) {
    auto pub_text = read_file(path);
    if (!pub_text) return fail("--operator-pub " + pub_text.error().message);
    auto pk = tr::decode_operator_public(*pub_text);
    if (!pk) return fail("--operator-pub " + path + ": " + pk.error().message);
    trusted.push_back(*pk);
  }
  return trusted;
}

json verification_json(bool valid, const std::string& status, const std::string& reason) {
  return json{{"valid", valid}, {"status", status}, {"reason", reason}};
}

}  // namespace

Result<json> cert_revoke(const CertRevokeRequest& req) {
  if (req.serials.empty() && req.certs.empty() && req.from.empty())
    return fail("name a certificate to revoke (--serial N or --cert FILE)");
  auto key = load_operator_key(req.operator_key, req.passphrase_file);
  if (!key) return fail(key.error().message);
  tr::RevocationList l;
  l.cluster = req.cluster;
  std::uint64_t previous = 0;
  if (!req.from.empty()) {
    auto env = read_revocations(req.from);
    if (!env) return fail("--from " + env.error().message);
    auto d = tr::decode_revocations(*env);
    if (!d) return fail("--from " + req.from + ": " + d.error().message);
    if (!l.cluster.empty() && l.cluster != d->list.cluster)
      return fail("--from " + req.from + " is for cluster '" + d->list.cluster + "', not '" + l.cluster + "'");
    l = d->list;
    previous = l.version;
  }
  if (l.cluster.empty()) l.cluster = req.cluster.empty() ? "default" : req.cluster;
  for (const std::uint64_t serial : req.serials) {
    if (serial == 0) return fail("--serial 0 names no certificate");
    l.revoked.push_back(tr::RevokedCert{key->issuer(), serial});
  }
  for (const std::string& file : req.certs) {
    auto text = read_file(file);
    if (!text) return fail("--cert " + text.error().message);
    auto env = tr::unarmor_cert(*text);
    if (!env) return fail("--cert " + file + ": " + env.error().message);
    auto d = tr::decode_cert(*env);
    if (!d) return fail("--cert " + file + ": " + d.error().message);
    l.revoked.push_back(tr::RevokedCert{d->cert.issuer, d->cert.serial});
  }
  const auto now_s = static_cast<std::uint64_t>(std::max<std::int64_t>(0, req.now.time_since_epoch().count()));
  l.version = req.version ? *req.version : std::max(now_s, previous + 1);
  if (l.version <= previous) {
    return fail("--version " + std::to_string(l.version) + " is not above the previous list's " +
                std::to_string(previous) + " (agents would refuse it)");
  }
  auto env = tr::sign_revocations(l, *key);
  if (!env) return fail(env.error().message);
  if (auto r = tr::replace_file(req.out, tr::armor_revocations(*env), 0644); !r)
    return fail("--out " + r.error().message);
  auto d = tr::decode_revocations(*env);
  if (!d) return fail("the new list does not decode: " + d.error().message);  // never: a bug
  return revocations_json(d->list);
}

Result<json> describe_revocations(std::span<const std::byte> envelope) {
  auto d = tr::decode_revocations(envelope);
  if (!d) return fail(d.error().message);
  return revocations_json(d->list);
}

Result<json> revocations_show(const std::string& file, const std::vector<std::string>& operator_pubs) {
  auto env = read_revocations(file);
  if (!env) return fail(env.error().message);
  auto d = tr::decode_revocations(*env);
  if (!d) return fail(file + ": " + d.error().message);
  json out = revocations_json(d->list);
  if (operator_pubs.empty()) return out;
  auto trusted = read_operator_pubs(operator_pubs);
  if (!trusted) return fail(trusted.error().message);
  auto v = tr::verify_revocations(*env, *trusted, d->list.cluster, std::nullopt);
  out["verification"] = v ? verification_json(true, "valid", "")
                          : verification_json(false, tr::to_string(v.error().kind), v.error().message);
  return out;
}

Result<json> cert_show(const std::string& cert_file, const std::vector<std::string>& operator_pubs,
                       UnixSeconds now) {
  auto text = read_file(cert_file);
  if (!text) return fail(text.error().message);
  auto env = tr::unarmor_cert(*text);
  if (!env) return fail(cert_file + ": " + env.error().message);
  auto d = tr::decode_cert(*env);
  if (!d) return fail(cert_file + ": " + d.error().message);
  json out = cert_json(d->cert);
  if (operator_pubs.empty()) return out;
  auto trusted = read_operator_pubs(operator_pubs);
  if (!trusted) return fail(trusted.error().message);
  auto v = tr::verify_cert(*env, *trusted, now, tr::kDefaultCertSkew);
  out["verification"] = v ? verification_json(true, "valid", "")
                          : verification_json(false, tr::to_string(v.error().kind), v.error().message);
  return out;
}

}  // namespace weft::agent
