#pragma once
// libsodium must be initialised once before use; sodium_init() is thread-safe and idempotent, and
// a function-local static makes every caller after the first pay only a load.

#include <sodium.h>

#include "weft/base/assert.h"

namespace weft::transport::detail {

inline void ensure_sodium() {
  // sodium_init() returns 0 on success, 1 if already initialised, -1 if it cannot work at all
  // (no usable randomness): the process cannot seal anything, so that is fatal.
  static const int rc = sodium_init();
  WEFT_CHECK(rc >= 0);
}

}  // namespace weft::transport::detail
