// RAII owner of a ucp_context and what it reports about itself: which memory
// types the loaded UCX can move (host only for a UCX built without CUDA).
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "stoker/result.h"

namespace stoker::ucx {

class Context {
 public:
  // Features: active messages, RMA (for put mode) and wakeup (event-driven progress).
  static Result<std::shared_ptr<Context>> create();

  ucp_context_h get() const { return context_.get(); }
  bool supports_memory_type(ucs_memory_type_t type) const {
    return (memory_types_ & (uint64_t{1} << type)) != 0;
  }
  bool supports_cuda() const { return supports_memory_type(UCS_MEMORY_TYPE_CUDA); }
  // "UCX 1.13.1"
  static std::string version_string();

 private:
  struct Deleter {
    void operator()(ucp_context_h c) const { ucp_cleanup(c); }
  };
  std::unique_ptr<std::remove_pointer_t<ucp_context_h>, Deleter> context_;
  uint64_t memory_types_ = 0;
};

}  // namespace stoker::ucx
