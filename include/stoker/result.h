// Result<T>: a value or the Status that explains why there is none (Arrow's
// Result, std::expected's shape). Accessing the value of a failed Result is a
// programming error and aborts with the status message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <utility>
#include <variant>

#include "stoker/status.h"

namespace stoker {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value)
      : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : state_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    if (std::get<1>(state_).is_ok()) {
      std::get<1>(state_) = internal_error("Result constructed from an OK status without a value");
    }
  }

  bool is_ok() const { return state_.index() == 0; }
  explicit operator bool() const { return is_ok(); }

  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<1>(state_);
  }

  T& value() & {
    check();
    return std::get<0>(state_);
  }
  const T& value() const& {
    check();
    return std::get<0>(state_);
  }
  T&& value() && {
    check();
    return std::get<0>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const {
    if (!is_ok()) {
      std::fprintf(stderr, "stoker: value of a failed Result: %s\n",
                   std::get<1>(state_).to_string().c_str());
      std::abort();
    }
  }
  std::variant<T, Status> state_;
};

}  // namespace stoker

#define STOKER_CONCAT_INNER(a, b) a##b
#define STOKER_CONCAT(a, b) STOKER_CONCAT_INNER(a, b)
#define STOKER_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.is_ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
// `STOKER_ASSIGN_OR_RETURN(auto x, f());` declares x from f()'s value or
// returns f()'s status from the enclosing function.
#define STOKER_ASSIGN_OR_RETURN(lhs, expr) \
  STOKER_ASSIGN_OR_RETURN_IMPL(STOKER_CONCAT(_stoker_result_, __LINE__), lhs, expr)
