#include <cstdio>
#include <cstdlib>

#include "weft/base/assert.h"

namespace weft::detail {

void check_failed(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "weft: internal check failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace weft::detail
