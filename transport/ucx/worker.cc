// UCX worker: creation, event-driven progress, request completion.
#include "transport/ucx/worker.h"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {

Result<std::unique_ptr<Worker>> Worker::create(std::shared_ptr<Context> context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h handle = nullptr;
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_worker_create(context->get(), &params, &handle), "ucp_worker_create"));
  auto worker = std::unique_ptr<Worker>(new Worker());
  worker->context_ = std::move(context);
  worker->worker_.reset(handle);
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_worker_get_efd(handle, &worker->event_fd_), "ucp_worker_get_efd"));

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_worker_query(handle, &attr), "ucp_worker_query"));
  worker->max_am_header_ = attr.max_am_header;
  return worker;
}

unsigned Worker::progress() { return ucp_worker_progress(worker_.get()); }

Status Worker::wait(std::chrono::milliseconds timeout, const std::function<bool()>& ready) {
  const ucs_status_t armed = ucp_worker_arm(worker_.get());
  if (armed == UCS_ERR_BUSY) return Status::ok();  // events pending: no sleep
  STOKER_RETURN_IF_ERROR(from_ucs(armed, "ucp_worker_arm"));
  if (ready && ready()) return Status::ok();  // work arrived while we armed
  pollfd pfd{event_fd_, POLLIN, 0};
  const int rc = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (rc < 0 && errno != EINTR) {
    return io_error(fmt::format("poll on the UCX wakeup fd: {}", std::strerror(errno)));
  }
  return Status::ok();
}

void Worker::signal() { ucp_worker_signal(worker_.get()); }

Status Worker::set_am_handler(uint16_t id, ucp_am_recv_callback_t callback, void* arg) {
  ucp_am_handler_param_t param{};
  param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                     UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  param.id = id;
  param.cb = callback;
  param.arg = arg;
  param.flags = UCP_AM_FLAG_WHOLE_MSG;
  return from_ucs(ucp_worker_set_am_recv_handler(worker_.get(), &param),
                  fmt::format("registering active-message handler {}", id));
}

Result<std::vector<std::byte>> Worker::address() const {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_worker_get_address(worker_.get(), &address, &length), "ucp_worker_get_address"));
  const auto* bytes = reinterpret_cast<const std::byte*>(address);
  std::vector<std::byte> out(bytes, bytes + length);
  ucp_worker_release_address(worker_.get(), address);
  return out;
}

Status Worker::wait_for(ucs_status_ptr_t request, std::chrono::milliseconds timeout,
                        std::string_view what) {
  if (request == nullptr) return Status::ok();
  if (UCS_PTR_IS_ERR(request)) return from_ucs(UCS_PTR_STATUS(request), what);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ucs_status_t status;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    if (progress() != 0) continue;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      // Never hang: cancel, and let UCX release the request when it finishes.
      ucp_request_cancel(worker_.get(), request);
      ucp_request_free(request);
      return timed_out(fmt::format("{}: no completion within {} ms", what, timeout.count()));
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    STOKER_RETURN_IF_ERROR(
        wait(std::clamp(left, std::chrono::milliseconds(1), std::chrono::milliseconds(100))));
  }
  ucp_request_free(request);
  return from_ucs(status, what);
}

Status Worker::flush(std::chrono::milliseconds timeout) {
  ucp_request_param_t param{};
  return wait_for(ucp_worker_flush_nbx(worker_.get(), &param), timeout, "flushing the worker");
}

Status check_busy_poll(std::chrono::microseconds busy_poll) {
  if (busy_poll.count() >= 0) return Status::ok();
  return invalid_argument(
      fmt::format("busy_poll of {} us: it must not be negative", busy_poll.count()));
}

}  // namespace stoker::ucx
