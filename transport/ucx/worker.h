// RAII owner of a ucp_worker. Progress is event-driven: wait() arms the worker
// and sleeps on its wakeup fd, so an idle worker burns no CPU. A Worker is
// driven by one thread; only signal() may be called from others.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "stoker/result.h"
#include "transport/ucx/context.h"

namespace stoker::ucx {

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> create(std::shared_ptr<Context> context);

  ucp_worker_h get() const { return worker_.get(); }
  const Context& context() const { return *context_; }
  size_t max_am_header() const { return max_am_header_; }

  // One ucp_worker_progress; returns the number of events processed. Callers
  // loop; one call per turn keeps the per-call cost (an epoll_wait on TCP)
  // off the hot path.
  unsigned progress();

  // Sleeps until UCX has events, signal() is called, or `timeout` passes.
  // Returns immediately if events are already pending, or if `ready` (when
  // given) says so once the worker is armed. Arming drains the wakeup fd, so a
  // signal() sent just before it is lost: a caller that sleeps while another
  // thread hands it work must pass `ready` to look at that work after arming.
  Status wait(std::chrono::milliseconds timeout, const std::function<bool()>& ready = nullptr);

  // Wakes the thread blocked in wait(). Safe from any thread.
  void signal();

  Status set_am_handler(uint16_t id, ucp_am_recv_callback_t callback, void* arg);

  // This worker's address, which a peer passes to Endpoint::connect_to_worker.
  Result<std::vector<std::byte>> address() const;

  // Progresses until `request` (from a *_nbx call) completes or `timeout`
  // passes, then releases it. A timed-out request is cancelled.
  Status wait_for(ucs_status_ptr_t request, std::chrono::milliseconds timeout,
                  std::string_view what);

  // Progresses until every operation and connection-handshake message queued
  // on this worker's endpoints has gone out, or `timeout` passes. Owners that
  // accept connections call it after closing their endpoints and before
  // destroying the worker: UCX 1.13 aborts (an assertion in
  // ucp_request_send_state_ff) when it destroys an endpoint whose handshake
  // reply still waits for its TCP connection, as happens when a receiver
  // stops while a sender is connecting to it.
  Status flush(std::chrono::milliseconds timeout);

 private:
  struct Deleter {
    void operator()(ucp_worker_h w) const { ucp_worker_destroy(w); }
  };
  std::shared_ptr<Context> context_;  // outlives the worker
  std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, Deleter> worker_;
  int event_fd_ = -1;  // owned by UCX
  size_t max_am_header_ = 0;
};

// A progress loop polls for `busy_poll` after its last event before it
// sleeps in Worker::wait() (ReceiverOptions::busy_poll,
// SenderOptions::busy_poll). A negative duration is refused.
Status check_busy_poll(std::chrono::microseconds busy_poll);

}  // namespace stoker::ucx
