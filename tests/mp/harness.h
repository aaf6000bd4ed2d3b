#pragma once
// Multi-process test harness: real `weft agent` processes on loopback addresses (or inside a
// network namespace the test creates), queried over their RPC sockets. Every wait is bounded.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace weft::mptest {

using nlohmann::json;
using namespace std::chrono_literals;

// Polls `pred` every 50 ms until it holds or `limit` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit);

// A temporary directory removed (recursively) at destruction.
struct TempDir {
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path;
};

// Runs a command to completion (bounded); returns exit code and captured stdout+stderr.
struct RunResult {
  int code = -1;
  std::string out;
};
RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds limit = 20s);
std::string weft_bin();

// Files in tests: the whole file (empty if unreadable); write fails the test if it cannot.
std::string slurp_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
// A failed command: non-zero exit, exactly one line "weft: ..." that contains `want`.
void expect_one_line_error(const RunResult& r, const std::string& want);
// A command's output as JSON (a test failure and {} if it is not).
json parse_json(const RunResult& r);

class AgentProc {
 public:
  AgentProc(std::string name, std::string addr, std::string dir);
  ~AgentProc();  // SIGKILLs if still running
  AgentProc(const AgentProc&) = delete;
  AgentProc& operator=(const AgentProc&) = delete;

  // Starts `weft agent --node NAME --bind ADDR --data-dir DIR --key-file ... extra...`.
  // `netns` non-empty runs it under `ip netns exec`.
  void start(const std::vector<std::string>& extra, const std::string& netns = "");
  bool wait_ready(std::chrono::milliseconds limit = 10s);  // RPC answers
  void kill9();
  void signal(int sig);
  std::optional<int> wait_exit(std::chrono::milliseconds limit);  // exit code, nullopt on timeout
  bool running() const { return pid_ > 0; }

  std::optional<json> call(const std::string& method, const json& params = json::object(),
                           std::chrono::milliseconds timeout = 5s);
  // name -> {status, incarnation}; empty when the agent does not answer.
  std::vector<json> members();
  std::optional<std::string> status_of(const std::string& name);
  std::size_t count(const std::string& status);
  std::string log() const;

  const std::string name;
  const std::string addr;
  const std::string dir;
  std::string rpc() const { return dir + "/rpc.sock"; }

 private:
  pid_t pid_ = -1;
  int runs_ = 0;
};

}  // namespace weft::mptest
