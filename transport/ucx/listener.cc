// Listener creation and the bound-address query (for port 0).
#include "transport/ucx/listener.h"

#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {

void Listener::on_request(ucp_conn_request_h request, void* arg) {
  static_cast<Listener*>(arg)->on_connection_(request);
}

Result<std::unique_ptr<Listener>> Listener::create(Worker& worker, const SocketAddress& address,
                                                   ConnectionHandler on_connection) {
  std::unique_ptr<Listener> listener(new Listener());
  listener->on_connection_ = std::move(on_connection);
  ucp_listener_params_t params{};
  params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  params.sockaddr.addr = address.get();
  params.sockaddr.addrlen = address.length;
  params.conn_handler.cb = &Listener::on_request;
  params.conn_handler.arg = listener.get();
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_listener_create(worker.get(), &params, &listener->listener_),
                                  "listening on " + address.to_string()));

  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_listener_query(listener->listener_, &attr), "ucp_listener_query"));
  listener->address_.storage = attr.sockaddr;
  listener->address_.length = address.length;
  return listener;
}

void Listener::reject(ucp_conn_request_h request) const { ucp_listener_reject(listener_, request); }

Listener::~Listener() {
  if (listener_ != nullptr) ucp_listener_destroy(listener_);
}

}  // namespace stoker::ucx
