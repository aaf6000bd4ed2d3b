#include "harness.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "weft/agent/rpc.h"

namespace weft::mptest {

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(50ms);
  }
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "weft-mp-XXXXXX").string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) std::abort();
  path = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string weft_bin() { return WEFT_BIN; }

namespace {

pid_t spawn(const std::vector<std::string>& argv, const std::string& out_path, bool append) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::setpgid(0, 0);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

std::optional<int> wait_pid(pid_t pid, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  TempDir t;
  const std::string out = t.path + "/out";
  const pid_t pid = spawn(argv, out, false);
  RunResult r;
  auto code = wait_pid(pid, limit);
  if (!code) {
    ::kill(pid, SIGKILL);
    wait_pid(pid, 5s);
    r.code = -2;
  } else {
    r.code = *code;
  }
  r.out = slurp(out);
  return r;
}

AgentProc::AgentProc(std::string n, std::string a, std::string d) : name(std::move(n)), addr(std::move(a)), dir(std::move(d)) {}

AgentProc::~AgentProc() {
  if (pid_ > 0) kill9();
}

void AgentProc::start(const std::vector<std::string>& extra, const std::string& netns) {
  std::vector<std::string> argv;
  if (!netns.empty()) argv = {"ip", "netns", "exec", netns};
  for (const std::string& a : {weft_bin(), std::string("agent"), std::string("--node"), name, std::string("--bind"), addr,
                               std::string("--data-dir"), dir}) {
    argv.push_back(a);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::filesystem::create_directories(dir + ".logs");
  pid_ = spawn(argv, dir + ".logs/agent.log", runs_++ > 0);
}

bool AgentProc::wait_ready(std::chrono::milliseconds limit) {
  return wait_until([&] { return call("info", json::object(), 1s).has_value(); }, limit);
}

void AgentProc::kill9() { signal(SIGKILL); wait_exit(5s); }

void AgentProc::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> AgentProc::wait_exit(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return std::nullopt;
  auto code = wait_pid(pid_, limit);
  if (code) pid_ = -1;
  return code;
}

std::optional<json> AgentProc::call(const std::string& method, const json& params, std::chrono::milliseconds timeout) {
  agent::RpcClient c(rpc());
  auto r = c.call(method, params, timeout);
  if (!r) return std::nullopt;
  return *r;
}

std::vector<json> AgentProc::members() {
  auto r = call("members");
  if (!r || !(*r)["members"].is_array()) return {};
  return (*r)["members"].get<std::vector<json>>();
}

std::optional<std::string> AgentProc::status_of(const std::string& n) {
  for (const json& m : members()) {
    if (m["name"] == n) return m["status"].get<std::string>();
  }
  return std::nullopt;
}

std::size_t AgentProc::count(const std::string& status) {
  std::size_t n = 0;
  for (const json& m : members()) n += m["status"] == status ? 1u : 0u;
  return n;
}

std::string AgentProc::log() const { return slurp(dir + ".logs/agent.log"); }

std::string slurp_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

void expect_one_line_error(const RunResult& r, const std::string& want) {
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("weft: ", 0), 0u) << r.out;
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "more than one line: " << r.out;
  EXPECT_NE(r.out.find(want), std::string::npos) << "want '" << want << "' in: " << r.out;
}

json parse_json(const RunResult& r) {
  try {
    return json::parse(r.out);
  } catch (const std::exception&) {
    ADD_FAILURE() << "not JSON: " << r.out;
    return json::object();
  }
}

}  // namespace weft::mptest
