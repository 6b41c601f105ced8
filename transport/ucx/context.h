// RAII owner of a ucp_context and what it reports about itself: which memory
// types the loaded UCX can move (host only for a UCX built without CUDA).
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "stoker/result.h"

namespace stoker::ucx {

// What a process moves through its context.
enum class Traffic {
  kSendAndReceive,
  // Batches only go out (a worker, a lone sender): over shared memory this
  // process receives little (handshake replies, acknowledgements), so its
  // shared-memory receive pool grows in small steps (kSendOnlyRxBufsGrow).
  // That pool is what a receiver on the host maps to write to it, and UCX
  // 1.13 keeps it mapped there until the receiver stops, after this process
  // has gone (docs/protocol.md, section 12).
  kSendOnly,
};

// Receive buffers added to a kSendOnly context's shared-memory pool at a
// time, instead of UCX's 512 (about 4 MiB, half of it resident once
// touched). A receiver kept 88 kB of shared memory per departed sender with
// 16 against 2072 kB with 512 (docs/perf.md).
inline constexpr const char* kSendOnlyRxBufsGrow = "16";

class Context {
 public:
  // Features: active messages, RMA (for put mode) and wakeup (event-driven
  // progress). The rest of the configuration comes from UCX's environment,
  // which also wins over what `traffic` would change.
  static Result<std::shared_ptr<Context>> create(Traffic traffic = Traffic::kSendAndReceive);

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
