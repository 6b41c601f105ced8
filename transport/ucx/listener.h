// RAII owner of a ucp_listener accepting client-server connections.
#pragma once

#include <ucp/api/ucp.h>

#include <functional>
#include <memory>

#include "stoker/result.h"
#include "transport/socket_address.h"
#include "transport/ucx/worker.h"

namespace stoker::ucx {

class Listener {
 public:
  // Called on the worker's thread for every incoming connection; the handler
  // must accept (Endpoint::accept, which takes it even when it fails) or
  // reject() the request.
  using ConnectionHandler = std::function<void(ucp_conn_request_h)>;

  static Result<std::unique_ptr<Listener>> create(Worker& worker, const SocketAddress& address,
                                                  ConnectionHandler on_connection);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  const SocketAddress& address() const { return address_; }  // with the bound port
  void reject(ucp_conn_request_h request) const;

 private:
  Listener() = default;
  static void on_request(ucp_conn_request_h request, void* arg);

  ucp_listener_h listener_ = nullptr;
  SocketAddress address_;
  ConnectionHandler on_connection_;
};

}  // namespace stoker::ucx
