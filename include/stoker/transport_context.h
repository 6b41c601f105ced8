// TransportContext: one UCX context a process's endpoints share — its
// receivers and senders of batches and its control connection — so that
// transports are opened and memory registrations cached once per process,
// not once per connection. Cheap to copy (a shared handle); a default-made
// one is empty, and a component given an empty one creates its own.
#pragma once

#include <memory>

#include "stoker/result.h"

namespace stoker {

namespace ucx {
class Context;
}

class TransportContext {
 public:
  TransportContext() = default;
  // Initialises UCX (transports from UCX_TLS and the rest of UCX's environment).
  static Result<TransportContext> create();
  // The same, for a process that sends batches and receives none (a
  // worker): its shared-memory receive pool stays small. A receiver on the
  // same host keeps each sender's pool mapped until it stops (UCX 1.13), so
  // this bounds what departed senders cost it.
  static Result<TransportContext> create_for_sending();

  explicit operator bool() const { return context_ != nullptr; }
  // For stoker's own components.
  const std::shared_ptr<ucx::Context>& ucx() const { return context_; }

 private:
  explicit TransportContext(std::shared_ptr<ucx::Context> c) : context_(std::move(c)) {}
  std::shared_ptr<ucx::Context> context_;
};

}  // namespace stoker
