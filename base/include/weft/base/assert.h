#pragma once
// WEFT_CHECK: always on, for states that must never happen (never for untrusted input).
// WEFT_ASSERT: debug builds only.

namespace weft::detail {
[[noreturn]] void check_failed(const char* expr, const char* file, int line) noexcept;
}  // namespace weft::detail

#define WEFT_CHECK(cond)                                                           \
  do {                                                                             \
    if (!(cond)) [[unlikely]] ::weft::detail::check_failed(#cond, __FILE__, __LINE__); \
  } while (false)

#ifdef NDEBUG
#define WEFT_ASSERT(cond) \
  do {                    \
  } while (false)
#else
#define WEFT_ASSERT(cond) WEFT_CHECK(cond)
#endif
