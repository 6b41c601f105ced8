// RAII owner of a ucp_ep with PEER error handling: a peer that dies or
// disconnects is reported once through the error handler, and closing never
// blocks for longer than the close timeout.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "stoker/result.h"
#include "transport/socket_address.h"
#include "transport/ucx/worker.h"

namespace stoker::ucx {

class Endpoint {
 public:
  // Called on the worker's thread, from progress(), when the peer fails.
  using ErrorHandler = std::function<void(ucs_status_t)>;

  static Result<std::unique_ptr<Endpoint>> connect(Worker& worker, const SocketAddress& address,
                                                   ErrorHandler on_error);
  // Connects straight to a worker address (from Worker::address()). Unlike a
  // sockaddr connection, this may use every transport both sides share. It
  // has no peer-failure handling (which in UCX 1.13 would rule out shared
  // memory and multi-rail): pair it with a sockaddr endpoint to the same peer
  // for liveness.
  static Result<std::unique_ptr<Endpoint>> connect_to_worker(Worker& worker,
                                                             std::span<const std::byte> address,
                                                             std::string peer);
  // Takes the request, whether it succeeds or not: when ucp_ep_create fails
  // on a connection request (a device UCX was not given, say), UCX has
  // already rejected the request and freed it, so it must not be rejected again.
  static Result<std::unique_ptr<Endpoint>> accept(Worker& worker, ucp_conn_request_h request,
                                                  ErrorHandler on_error);
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  // Closes: flushes outstanding operations if the peer is healthy, forces
  // otherwise; gives up after the close timeout.
  ~Endpoint();

  // The connection never became usable (its handshake failed or timed out):
  // close without flushing. UCX 1.13 cannot flush an endpoint whose wireup
  // never finished, and ucp_worker_destroy aborts on the sends still queued
  // on it ("pending request ... should have been flushed").
  void abandon() { failed_ = true; }

  ucp_ep_h get() const { return ep_; }
  bool failed() const { return failed_; }
  const std::string& peer() const { return peer_; }  // "127.0.0.1:4000"

  static constexpr std::chrono::milliseconds kCloseTimeout{1000};

 private:
  Endpoint(Worker& worker, std::string peer, ErrorHandler on_error)
      : worker_(worker), peer_(std::move(peer)), on_error_(std::move(on_error)) {}
  static void on_ucx_error(void* arg, ucp_ep_h ep, ucs_status_t status);
  static Result<std::unique_ptr<Endpoint>> create(std::unique_ptr<Endpoint> ep,
                                                  ucp_ep_params_t& params, bool peer_errors);

  Worker& worker_;
  ucp_ep_h ep_ = nullptr;
  std::string peer_;
  ErrorHandler on_error_;
  bool failed_ = false;
  bool closing_ = false;
};

}  // namespace stoker::ucx
