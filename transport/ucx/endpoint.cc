// Endpoint creation (client and server side) and bounded close.
#include "transport/ucx/endpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {

void Endpoint::on_ucx_error(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* self = static_cast<Endpoint*>(arg);
  if (self->failed_) return;
  self->failed_ = true;
  if (!self->closing_ && self->on_error_) self->on_error_(status);
}

Result<std::unique_ptr<Endpoint>> Endpoint::create(std::unique_ptr<Endpoint> ep,
                                                   ucp_ep_params_t& params, bool peer_errors) {
  params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.err_mode = peer_errors ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  params.err_handler.cb = &Endpoint::on_ucx_error;
  params.err_handler.arg = ep.get();
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_ep_create(ep->worker_.get(), &params, &ep->ep_),
                                  fmt::format("creating an endpoint to {}", ep->peer_)));
  return ep;
}

Result<std::unique_ptr<Endpoint>> Endpoint::connect(Worker& worker, const SocketAddress& address,
                                                    ErrorHandler on_error) {
  std::unique_ptr<Endpoint> ep(new Endpoint(worker, address.to_string(), std::move(on_error)));
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = address.get();
  params.sockaddr.addrlen = address.length;
  return create(std::move(ep), params, /*peer_errors=*/true);
}

Result<std::unique_ptr<Endpoint>> Endpoint::connect_to_worker(Worker& worker,
                                                              std::span<const std::byte> address,
                                                              std::string peer) {
  std::unique_ptr<Endpoint> ep(new Endpoint(worker, std::move(peer), nullptr));
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  return create(std::move(ep), params, /*peer_errors=*/false);
}

Result<std::unique_ptr<Endpoint>> Endpoint::accept(Worker& worker, ucp_conn_request_h request,
                                                   ErrorHandler on_error) {
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  std::string peer = "unknown peer";
  if (ucp_conn_request_query(request, &attr) == UCS_OK) {
    peer = SocketAddress::to_string(attr.client_address);
  }
  std::unique_ptr<Endpoint> ep(new Endpoint(worker, std::move(peer), std::move(on_error)));
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST;
  params.conn_request = request;
  return create(std::move(ep), params, /*peer_errors=*/true);
}

Endpoint::~Endpoint() {
  if (ep_ == nullptr) return;
  closing_ = true;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = failed_ ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  Status st = worker_.wait_for(ucp_ep_close_nbx(ep_, &param), kCloseTimeout,
                               fmt::format("closing the endpoint to {}", peer_));
  if (!st.is_ok() && !failed_) {
    spdlog::debug("{}", st.to_string());
  }
}

}  // namespace stoker::ucx
