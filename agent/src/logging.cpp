#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace weft::agent {

namespace {

// %* : the message as a JSON string body (quotes, backslashes and control bytes escaped).
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static const char* const kHex = "0123456789abcdef";
    for (char c : msg.payload) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (u < 0x20) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.push_back(c);
      }
    }
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return spdlog::details::make_unique<JsonEscapedMessage>();
  }
};

}  // namespace

void set_level(spdlog::logger& log, const std::string& level) { log.set_level(spdlog::level::from_str(level)); }

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& level, bool json) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto log = std::make_shared<spdlog::logger>(name, sink);
  if (json) {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%f%z","level":"%l","logger":"%n","msg":"%*"})");
    log->set_formatter(std::move(f));
  } else {
    log->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L %n: %v");
  }
  set_level(*log, level);
  log->flush_on(spdlog::level::info);
  return log;
}

}  // namespace weft::agent
