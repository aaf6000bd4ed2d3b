// The agent's trust root at start (issue 5): the operator keys it trusts and its own certificate,
// checked before the agent says anything. Membership and the proxy handshake use them next.

#include <chrono>
#include <string>

#include "agent_impl.h"

namespace weft::agent {

namespace tr = weft::transport;

Result<Agent::Trust> Agent::load_trust() const {
  Trust t;
  for (const std::string& path : cfg_.operator_pubs) {
    auto text = tr::read_text_file(path);
    if (!text) return fail("--operator-pub " + path + ": " + text.error().message);
    auto pk = tr::decode_operator_public(*text);
    if (!pk) return fail("--operator-pub " + path + ": " + pk.error().message);
    t.operators.push_back(*pk);
  }
  auto text = tr::read_text_file(cfg_.cert_file);
  if (!text) return fail("--cert " + cfg_.cert_file + ": " + text.error().message);
  auto envelope = tr::unarmor_cert(*text);
  if (!envelope) return fail("--cert " + cfg_.cert_file + ": " + envelope.error().message);
  // Certificates carry wall-clock times: the one clock read outside the event loop, at start.
  const auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  auto cert = tr::verify_cert(*envelope, t.operators, now, tr::kDefaultCertSkew);
  if (!cert) return fail("--cert " + cfg_.cert_file + ": " + cert.error().message);
  if (cert->node != cfg_.node) {
    return fail("--cert " + cfg_.cert_file + ": the certificate is for node '" + cert->node + "', not '" + cfg_.node +
                "'");
  }
  if (!tr::cert_matches(*cert, identity_)) {
    return fail("--cert " + cfg_.cert_file + ": the certificate names other keys than this node's (sign " +
                cfg_.data_dir + "/node.pub)");
  }
  t.cert_envelope = std::move(*envelope);
  t.cert = std::move(*cert);
  return t;
}

json Agent::trust_json() const {
  if (!trust_) return nullptr;
  json operators = json::array();
  for (const tr::SignPublicKey& pk : trust_->operators) operators.push_back(tr::to_hex(tr::issuer_id(pk)));
  const tr::NodeCert& c = trust_->cert;
  return json{{"operators", operators},
              {"cluster", cfg_.cluster},
              {"policy_version", policy_ ? policy_->version : 0},
              {"revocations_version", revocations_ ? revocations_->version : 0},
              {"cert",
               {{"serial", c.serial},
                {"issuer", tr::to_hex(c.issuer)},
                {"not_before", tr::format_rfc3339(c.not_before)},
                {"not_after", tr::format_rfc3339(c.not_after)},
                {"services", c.services}}}};
}

}  // namespace weft::agent
