// Status: the one error model of stoker. Every fallible call returns a Status
// or a Result<T> (result.h); nothing throws across the public API.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace stoker {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something wrong
  kProtocolError,       // a peer sent something malformed or out of order
  kVersionMismatch,     // a peer speaks an incompatible protocol version
  kUnavailable,         // a peer is unreachable or has failed
  kTimedOut,            // a deadline passed
  kResourceExhausted,   // out of memory, slots or credits
  kUnsupported,         // this build, UCX or device cannot do it
  kCancelled,           // the operation was shut down before it completed
  kIoError,             // the OS or a library failed
  kInternal,            // a stoker bug
  kUnauthorized,        // a peer could not prove it may talk to us
  kNotFound,            // the named thing (job, tensor, worker) does not exist
  kAlreadyExists,       // the name is taken by something different
  kFailedPrecondition,  // the call is wrong in the current state (released twice, ...)
  kDataLoss,            // stored or received data is corrupt
  kOutOfRange,          // iterated past the end (every epoch has been read)
};

std::string_view to_string(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "protocol error: descriptor version 9 is not supported (this build speaks 1)"
  std::string to_string() const;

  // Prefixes the message with what was being done: "connecting to X: ...".
  Status with_context(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status protocol_error(std::string m) { return {StatusCode::kProtocolError, std::move(m)}; }
inline Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status timed_out(std::string m) { return {StatusCode::kTimedOut, std::move(m)}; }
inline Status resource_exhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status io_error(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status unauthorized(std::string m) { return {StatusCode::kUnauthorized, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status already_exists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status failed_precondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status data_loss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status out_of_range(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }

}  // namespace stoker

// Returns early from the enclosing function when `expr` yields a failed Status.
#define STOKER_RETURN_IF_ERROR(expr)                   \
  do {                                                 \
    if (::stoker::Status _st = (expr); !_st.is_ok()) { \
      return _st;                                      \
    }                                                  \
  } while (false)
