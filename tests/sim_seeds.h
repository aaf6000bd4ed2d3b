#pragma once
// Seeds for simulator tests: a fixed set, or the one in WEFT_SIM_SEED to rerun a failure.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace weft::sim::test {

inline std::vector<std::uint64_t> seeds(std::size_t count) {
  if (const char* env = std::getenv("WEFT_SIM_SEED")) return {std::strtoull(env, nullptr, 10)};
  std::vector<std::uint64_t> out;
  for (std::uint64_t s = 1; s <= count; ++s) out.push_back(s * 7919);
  return out;
}

// What a failing scenario prints: the seed and how to rerun with it.
inline std::string seed_text(std::uint64_t seed) {
  return "seed=" + std::to_string(seed) + " (rerun: WEFT_SIM_SEED=" + std::to_string(seed) + ")";
}

}  // namespace weft::sim::test
