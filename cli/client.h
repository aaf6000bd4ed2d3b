#pragma once
// What every client subcommand shares: finding and calling the local agent, and rendering.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace weft::cli {

using nlohmann::json;

struct ClientOptions {
  std::string rpc;
  std::string data_dir;
  bool json = false;
};

// --rpc, --data-dir and (with_json) --json.
void add_client_options(CLI::App* app, ClientOptions& o, bool with_json);
// Calls the agent; prints "weft: <error>" and returns nullopt on failure.
std::optional<json> call(const ClientOptions& o, const std::string& method, const json& params,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));
void print_json(const json& j);
// Columns padded to the widest cell, two spaces apart.
void print_table(const std::vector<std::vector<std::string>>& rows);
// "k=v,k2=v2" of a JSON object of strings.
std::string tags_text(const json& tags);

// A signed document's text as it is (policy, key step): the agent unarmors and verifies it.
// Bounded by what one RPC request carries; nullopt after printing "weft: <path>: why".
std::optional<std::string> read_signed_document(const std::string& path);
// Writes `text` to a new file `path` (mode 0644, fsynced; an existing file is an error and is
// left alone); false after printing "weft: <path>: why".
bool write_new_text_file(const std::string& path, const std::string& text);

}  // namespace weft::cli
