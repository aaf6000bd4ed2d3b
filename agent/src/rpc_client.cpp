// RpcClient: one REQ socket per call, bounded by a timeout; no exception leaves this file.

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <zmq.hpp>

#include "weft/agent/rpc.h"

namespace weft::agent {

using nlohmann::json;

struct RpcClient::Impl {
  zmq::context_t ctx{1};
};

Result<std::string> rpc_path(const std::string& flag, const std::string& data_dir) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("WEFT_RPC"); env && *env) return std::string(env);
  if (!data_dir.empty()) return data_dir + "/rpc.sock";
  return fail("no agent to ask: give --rpc PATH or --data-dir DIR, or set WEFT_RPC");
}

RpcClient::RpcClient(std::string path) : path_(std::move(path)), impl_(std::make_unique<Impl>()) {}
RpcClient::~RpcClient() = default;

Result<json> RpcClient::call(const std::string& method, const json& params, std::chrono::milliseconds timeout) {
  const std::string unreachable = "cannot reach agent at " + path_ + ": ";
  // ZeroMQ would wait forever for an ipc path with nobody behind it: check the file first.
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return fail(unreachable + std::strerror(errno));
  if (!S_ISSOCK(st.st_mode)) return fail(unreachable + "not a socket");
  try {
    zmq::socket_t s(impl_->ctx, zmq::socket_type::req);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndtimeo, static_cast<int>(timeout.count()));
    s.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
    s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxReplyBytes));
    s.connect("ipc://" + path_);
    const json req = {{"v", kRpcVersion}, {"method", method}, {"params", params}};
    const std::vector<std::uint8_t> bytes = json::to_msgpack(req);
    if (!s.send(zmq::buffer(bytes), zmq::send_flags::none)) return fail(unreachable + "timed out sending");
    zmq::message_t reply;
    if (!s.recv(reply, zmq::recv_flags::none)) {
      return fail(unreachable + "no answer within " + std::to_string(timeout.count()) + " ms");
    }
    const auto* p = static_cast<const std::uint8_t*>(reply.data());
    json r = json::from_msgpack(p, p + reply.size());
    if (!r.is_object() || !r.contains("ok") || !r["ok"].is_boolean()) return fail("agent sent a malformed reply");
    if (!r["ok"].get<bool>()) {
      return fail(r.contains("error") && r["error"].is_string() ? r["error"].get<std::string>() : "agent error");
    }
    return r.contains("result") ? r["result"] : json::object();
  } catch (const zmq::error_t& e) {
    return fail(unreachable + e.what());
  } catch (const json::exception& e) {
    return fail(std::string("agent sent a malformed reply: ") + e.what());
  }
}

}  // namespace weft::agent
