#pragma once
// The local CLI <-> agent RPC: ZeroMQ REQ -> ROUTER over ipc://PATH (PATH inside an owner-only
// directory, the socket 0600). Requests and replies are msgpack maps:
//
//   request  {"v": 1, "method": "members", "params": {...}}
//   reply    {"v": 1, "ok": true,  "result": {...}}
//            {"v": 1, "ok": false, "error": "one line"}
//
// Requests larger than kMaxRequestBytes, or that are not such a map, are counted and answered
// with an error; the agent keeps serving. Methods and their params/results:
//
//   members      {}                          -> {"members": [{"name","addr","status","incarnation","tags"}]}
//   join         {"addrs": ["ip:port", ...]} -> {"joined": true, "via": "ip:port"}   (waits <= 5 s)
//   leave        {}                          -> {"left": true}   (then the agent exits 0)
//   info         {}                          -> {"node": {...}, "members": {...}, "keys": {...}, "stats": {...}}
//   keys.list    {}                          -> KeyOpResult with "keys": {"<key id>": n members}
//   keys.install {"key": "<base64>"}          -> KeyOpResult
//   keys.use     {"key": "<base64 or id>"}    -> KeyOpResult
//   keys.remove  {"key": "<base64 or id>"}    -> KeyOpResult
//   KeyOpResult: {"op", "members": n asked incl. self, "responses": n, "failed": {"node": "why"},
//                 "no_response": ["node"...], "keys": {...}}

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "weft/base/result.h"

namespace weft::agent {

inline constexpr int kRpcVersion = 1;
inline constexpr std::size_t kMaxRequestBytes = 64 * 1024;
inline constexpr std::size_t kMaxReplyBytes = 64 * 1024 * 1024;

// Where a client finds the agent: --rpc, else $WEFT_RPC, else <data_dir>/rpc.sock.
[[nodiscard]] Result<std::string> rpc_path(const std::string& flag, const std::string& data_dir);

class RpcClient {
 public:
  explicit RpcClient(std::string path);
  ~RpcClient();
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  // One request; the error reads "cannot reach agent at PATH: ..." when the agent does not
  // answer within `timeout`, or is the agent's own error message.
  [[nodiscard]] Result<nlohmann::json> call(const std::string& method, const nlohmann::json& params,
                                            std::chrono::milliseconds timeout = std::chrono::seconds(10));
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::agent
