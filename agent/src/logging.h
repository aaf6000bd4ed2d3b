#pragma once
// One named spdlog logger per module, to stderr; text or one JSON object per line (--log-json).

#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace weft::agent {

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const std::string& level, bool json);
void set_level(spdlog::logger& log, const std::string& level);

}  // namespace weft::agent
