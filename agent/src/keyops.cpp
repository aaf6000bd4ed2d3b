// Cluster-wide key rotation, as `serf keys`: the agent asked by the CLI checks the operation
// locally, sends it to every live member over the reliable channel (sealed with the current
// primary key), applies it itself, and gathers the answers for a few seconds.
//
// Request body (msgpack map):  {"id": u32, "op": "install"|"use"|"remove"|"list", "key": "...",
//                               "signed": bin (the operator-signed document, keyop_trust.cpp; optional)}
// Response body (msgpack map): {"id": u32, "name": "node", "ok": bool, "error": "...", "keys": ["id"...]}

#include <spdlog/spdlog.h>

#include <cstring>

#include "agent_impl.h"
#include "msgpack_json.h"

namespace weft::agent {

namespace {

constexpr auto kKeyOpWait = std::chrono::seconds(3);
constexpr std::size_t kMaxKeyBody = 16 * 1024;

std::vector<std::byte> pack(const json& j) { return to_msgpack_bytes(j); }

std::optional<json> unpack(std::span<const std::byte> body) { return msgpack_object(body, kMaxKeyBody); }

}  // namespace

std::string generate_cluster_key() { return transport::format_key(transport::generate_key()); }

json Agent::key_ids_json() const {
  json ids = json::array();
  for (transport::KeyId id : ring_.ids()) ids.push_back(transport::format_key_id(id));
  json j = {{"installed", ids}, {"plaintext", ring_.plaintext()}};
  if (auto p = ring_.primary()) j["primary"] = transport::format_key_id(*p);
  return j;
}

// A key is named by its base64 form or by its 8-hex-digit id.
Result<transport::KeyId> Agent::resolve_key(const std::string& key) const {
  if (key.size() == 8 && key.find_first_not_of("0123456789abcdef") == std::string::npos) {
    const auto id = static_cast<transport::KeyId>(std::stoul(key, nullptr, 16));
    if (!ring_.find(id)) return fail("key " + key + " is not installed");
    return id;
  }
  auto k = transport::parse_key(key);
  if (!k) return fail(k.error().message);
  const transport::KeyId id = transport::key_id(*k);
  if (!ring_.find(id)) return fail("key " + transport::format_key_id(id) + " is not installed");
  return id;
}

Result<void> Agent::apply_key_op(const std::string& op, const std::string& key,
                                 std::span<const std::byte> signed_op) {
  if (op == "list") return {};
  if (ring_.plaintext()) return fail("this agent runs without encryption (--insecure-plaintext): keys cannot change");
  if (auto a = authorize_key_op(op, key, signed_op, true); !a) return a;
  if (op == "install") {
    auto k = transport::parse_key(key);
    if (!k) return fail(k.error().message);
    ring_.install(*k);
  } else if (op == "use" || op == "remove") {
    auto id = resolve_key(key);
    if (!id) return Unexpected<Error>(id.error());
    auto r = op == "use" ? ring_.use(*id) : ring_.remove(*id);
    if (!r) return r;
  } else {
    return fail("unknown key operation '" + op + "'");
  }
  persist_keys();
  log_->info("keyring {} now primary={} keys={}", op, ring_.primary() ? transport::format_key_id(*ring_.primary()) : "",
             ring_.ids().size());
  return {};
}

void Agent::start_key_op(TimePoint now, const std::string& peer, const std::string& op, const std::string& key,
                         const std::string& signed_text) {
  if (key_op_) return reply_error(peer, "keys: another key operation is in progress");
  std::vector<std::byte> signed_op;
  if (op != "list") {
    if (!signed_text.empty()) {
      auto env = transport::unarmor_key_op(signed_text);
      if (!env) {
        ++key_ops_refused_[static_cast<std::size_t>(transport::KeyOpError::kMalformed)];
        return reply_error(peer, "keys " + op + ": key operation refused (malformed): " + env.error().message);
      }
      signed_op = std::move(*env);
    }
    // Check locally first: nothing is sent if this agent itself would refuse.
    if (ring_.plaintext()) {
      return reply_error(peer, "keys: this agent runs without encryption (--insecure-plaintext): keys cannot change");
    }
    if (op == "install") {
      if (auto k = transport::parse_key(key); !k) return reply_error(peer, "keys install: " + k.error().message);
    } else {
      auto id = resolve_key(key);
      if (!id) return reply_error(peer, "keys " + op + ": " + id.error().message);
      if (op == "remove" && ring_.primary() == *id) {
        return reply_error(peer, "keys remove: " + transport::format_key_id(*id) +
                                     " is the primary key; make another primary first (weft keys use)");
      }
      if (op == "use") {
        // Every live member must hold the key before anyone seals with it, or those that do not
        // would drop our gossip and see us fail: first ask everyone for their keys (a "list"
        // round), and switch only if all of them answered with it (finish_key_op).
        if (auto a = authorize_key_op(op, key, signed_op, false); !a) {
          return reply_error(peer, "keys use: " + a.error().message);
        }
        return begin_key_round(now, Waiter{peer, now + kKeyOpWait}, op, key, std::move(signed_op),
                               transport::format_key_id(*id));
      }
    }
    // With a trust root, nothing is sent unless the operator signed this step.
    if (auto a = authorize_key_op(op, key, signed_op, false); !a) {
      return reply_error(peer, "keys " + op + ": " + a.error().message);
    }
  }
  begin_key_round(now, Waiter{peer, now + kKeyOpWait}, op, key, std::move(signed_op), "");
}

// Asks every live member to apply `op` (or, with `precheck_id`, only to list its keys) and applies
// it here; finish_key_op() answers `waiter` once all have answered or the wait is over.
void Agent::begin_key_round(TimePoint now, Waiter waiter, const std::string& op, const std::string& key,
                            std::vector<std::byte> signed_op, const std::string& precheck_id) {
  KeyOp k;
  k.id = next_key_op_id_++;
  k.op = op;
  k.key = key;
  k.signed_op = std::move(signed_op);
  k.precheck_id = precheck_id;
  k.waiter = std::move(waiter);
  const std::string sent_op = precheck_id.empty() ? op : "list";
  // Sent before the local change: sealed with the key everyone holds now.
  json req{{"id", k.id}, {"op", sent_op}, {"key", key}};
  if (precheck_id.empty() && !k.signed_op.empty()) {
    std::vector<std::uint8_t> b(k.signed_op.size());
    std::memcpy(b.data(), k.signed_op.data(), b.size());
    req["signed"] = json::binary(std::move(b));
  }
  const std::vector<std::byte> body = pack(req);
  for (const gossip::MemberInfo& m : node_->members()) {
    if (m.name == cfg_.node) continue;
    if (m.state != gossip::MemberState::kAlive && m.state != gossip::MemberState::kSuspect) continue;
    k.waiting.insert(m.name);
    send_frame(now, m.addr, FrameKind::kKeyRequest, body);
  }
  k.asked = k.waiting.size() + 1;
  key_op_ = std::move(k);
  auto r = apply_key_op(sent_op, key, key_op_->signed_op);
  ++key_op_->responses;
  if (!r) key_op_->failed[cfg_.node] = r.error().message;
  for (transport::KeyId id : ring_.ids()) ++key_op_->key_counts[transport::format_key_id(id)];
  check_waiters(now);
}

void Agent::on_key_request(TimePoint now, const Endpoint& from, std::span<const std::byte> body) {
  auto req = unpack(body);
  if (!req || !(*req)["id"].is_number_unsigned() || !(*req)["op"].is_string() || !(*req)["key"].is_string()) {
    ++stats_.bad_frames;
    return;
  }
  std::vector<std::byte> signed_op;
  if (auto it = req->find("signed"); it != req->end()) {
    if (!it->is_binary() || it->get_binary().empty() || it->get_binary().size() > transport::kMaxKeyOpBytes) {
      ++stats_.bad_frames;
      return;
    }
    const auto& b = it->get_binary();
    signed_op.resize(b.size());
    std::memcpy(signed_op.data(), b.data(), b.size());
  }
  ++stats_.key_ops_served;
  auto r = apply_key_op((*req)["op"].get<std::string>(), (*req)["key"].get<std::string>(), signed_op);
  json keys = json::array();
  for (transport::KeyId id : ring_.ids()) keys.push_back(transport::format_key_id(id));
  json resp = {{"id", (*req)["id"]}, {"name", cfg_.node}, {"ok", r.has_value()}, {"keys", keys}};
  if (!r) resp["error"] = r.error().message;
  send_frame(now, from, FrameKind::kKeyResponse, pack(resp));
}

void Agent::on_key_response(std::span<const std::byte> body) {
  auto resp = unpack(body);
  if (!resp || !(*resp)["id"].is_number_unsigned() || !(*resp)["name"].is_string() || !(*resp)["ok"].is_boolean()) {
    ++stats_.bad_frames;
    return;
  }
  if (!key_op_ || (*resp)["id"].get<std::uint64_t>() != key_op_->id) return;  // late: the op is over
  const std::string name = (*resp)["name"].get<std::string>();
  if (key_op_->waiting.erase(name) == 0) return;
  ++key_op_->responses;
  if (!(*resp)["ok"].get<bool>()) {
    const json& e = (*resp)["error"];
    key_op_->failed[name] = e.is_string() ? e.get<std::string>() : "failed";
  }
  bool holds = false;
  if ((*resp)["keys"].is_array()) {
    for (const json& id : (*resp)["keys"]) {
      if (!id.is_string() || id.get_ref<const std::string&>().size() != 8) continue;
      ++key_op_->key_counts[id.get<std::string>()];
      holds = holds || id.get_ref<const std::string&>() == key_op_->precheck_id;
    }
  }
  if (!key_op_->precheck_id.empty() && !holds) key_op_->lacking.insert(name);
}

void Agent::finish_key_op(TimePoint now) {
  KeyOp k = std::move(*key_op_);
  key_op_.reset();
  if (!k.precheck_id.empty()) {
    auto names = [](const std::set<std::string>& s) {
      std::string out;
      for (const std::string& n : s) out += (out.empty() ? "" : ", ") + n;
      return out;
    };
    if (k.lacking.empty() && k.waiting.empty() && k.failed.empty()) {
      return begin_key_round(now, Waiter{k.waiter.peer, now + kKeyOpWait}, k.op, k.key, std::move(k.signed_op), "");
    }
    std::string why;
    if (!k.lacking.empty()) why += "not installed on " + names(k.lacking);
    if (!k.waiting.empty()) why += std::string(why.empty() ? "" : "; ") + "no answer from " + names(k.waiting);
    if (!k.failed.empty()) why += std::string(why.empty() ? "" : "; ") + "failed on " + std::to_string(k.failed.size());
    return reply_error(k.waiter.peer, "keys use: refused, every live member must hold key " + k.precheck_id +
                                          " first (" + why + "); run weft keys install again");
  }
  json result = {{"op", k.op},
                 {"members", k.asked},
                 {"responses", k.responses},
                 {"failed", k.failed},
                 {"no_response", json(std::vector<std::string>(k.waiting.begin(), k.waiting.end()))},
                 {"keys", json(k.key_counts)},
                 {"primary", ring_.primary() ? transport::format_key_id(*ring_.primary()) : ""}};
  reply(k.waiter.peer, result);
}

}  // namespace weft::agent
