#pragma once
// Result<T>: a small std::expected look-alike (C++23's is not in GCC 12).
// Used for every fallible operation on untrusted input; exceptions never cross module APIs.

#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "weft/base/assert.h"

namespace weft {

struct Error {
  std::string message;
};

template <typename E = Error>
class Unexpected {
 public:
  explicit Unexpected(E e) : error_(std::move(e)) {}
  E& error() & { return error_; }
  E&& error() && { return std::move(error_); }

 private:
  E error_;
};

inline Unexpected<Error> fail(std::string message) { return Unexpected<Error>(Error{std::move(message)}); }

template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Unexpected<E> u) : v_(std::in_place_index<1>, std::move(u).error()) {}  // NOLINT

  [[nodiscard]] bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & {
    WEFT_CHECK(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    WEFT_CHECK(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    WEFT_CHECK(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const E& error() const {
    WEFT_CHECK(!has_value());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, E> v_;
};

// Result<void>
template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(Unexpected<E> u) : error_(std::move(u).error()), ok_(false) {}  // NOLINT
  [[nodiscard]] bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const {
    WEFT_CHECK(!ok_);
    return error_;
  }

 private:
  E error_{};
  bool ok_ = true;
};

}  // namespace weft
