#include "client.h"

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <cstdio>

#include "weft/agent/rpc.h"

namespace weft::cli {

void add_client_options(CLI::App* app, ClientOptions& o, bool with_json) {
  app->add_option("--rpc", o.rpc, "Agent socket (default: $WEFT_RPC, else DATA_DIR/rpc.sock)");
  app->add_option("--data-dir", o.data_dir, "The agent's data dir, to find its socket");
  if (with_json) app->add_flag("--json", o.json, "Print JSON");
}

std::optional<json> call(const ClientOptions& o, const std::string& method, const json& params,
                         std::chrono::milliseconds timeout) {
  auto path = agent::rpc_path(o.rpc, o.data_dir);
  if (!path) {
    std::fprintf(stderr, "weft: %s\n", path.error().message.c_str());
    return std::nullopt;
  }
  agent::RpcClient client(*path);
  auto r = client.call(method, params, timeout);
  if (!r) {
    std::fprintf(stderr, "weft: %s\n", r.error().message.c_str());
    return std::nullopt;
  }
  return *r;
}

void print_json(const json& j) { std::printf("%s\n", j.dump(2).c_str()); }

std::string tags_text(const json& tags) {
  std::string s;
  if (!tags.is_object()) return s;
  for (const auto& [k, v] : tags.items()) {
    if (!s.empty()) s += ",";
    s += k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return s;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w;
  for (const auto& r : rows) {
    if (w.size() < r.size()) w.resize(r.size());
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

std::optional<std::string> read_signed_document(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "weft: %s: cannot read it\n", path.c_str());
    return std::nullopt;
  }
  std::string text;
  text.resize(agent::kMaxRequestBytes);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (in.good() && in.peek() != std::char_traits<char>::eof()) {
    std::fprintf(stderr, "weft: %s: larger than %zu KiB: not a signed document\n", path.c_str(),
                 agent::kMaxRequestBytes / 1024);
    return std::nullopt;
  }
  return text;
}

bool write_new_text_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "weft: %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == text.size() && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok) {
    std::fprintf(stderr, "weft: %s: %s\n", path.c_str(), std::strerror(saved));
    ::unlink(path.c_str());
  }
  return ok;
}

}  // namespace weft::cli
