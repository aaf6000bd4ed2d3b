#include "msgpack_json.h"

#include <cstdint>
#include <cstring>
#include <string>

namespace weft::agent {

using nlohmann::json;

namespace {

// nlohmann's msgpack reader recurses once per nested array or map: a few KiB of 0x91 bytes
// (arrays of one array of ...) overflow the stack. This SAX handler builds the same DOM but stops
// the parse at the first container deeper than `max_depth`, before the reader recurses into it.
class DepthLimitedSax {
 public:
  DepthLimitedSax(json& out, std::size_t max_depth) : dom_(out, /*allow_exceptions=*/false), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return dom_.number_float(v, s); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return ++depth_ <= max_depth_ && dom_.start_object(n); }
  bool key(json::string_t& k) { return dom_.key(k); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return ++depth_ <= max_depth_ && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/, const Exception& /*e*/) {
    return false;
  }

 private:
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::size_t max_depth_;
  std::size_t depth_ = 0;
};

}  // namespace

std::vector<std::byte> to_msgpack_bytes(const json& j) {
  const std::vector<std::uint8_t> m = json::to_msgpack(j);
  std::vector<std::byte> out(m.size());
  if (!m.empty()) std::memcpy(out.data(), m.data(), m.size());
  return out;
}

std::optional<json> msgpack_object(std::span<const std::byte> bytes, std::size_t max_bytes) {
  if (bytes.empty() || bytes.size() > max_bytes) return std::nullopt;
  try {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    json j;
    DepthLimitedSax sax(j, kMaxMsgpackDepth);
    if (!json::sax_parse(p, p + bytes.size(), &sax, json::input_format_t::msgpack)) return std::nullopt;
    if (j.is_object()) return j;
  } catch (const json::exception&) {
  }
  return std::nullopt;
}

}  // namespace weft::agent
