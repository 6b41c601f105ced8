// Owned-header active-message sends.
#include "transport/ucx/am_send.h"

#include <fmt/format.h>

#include <memory>

#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {
namespace {

struct OwnedMessage {
  std::vector<std::byte> header;
  std::vector<std::byte> payload;
  SentCallback on_sent;
};

void free_message(void* request, ucs_status_t status, void* user_data) {
  std::unique_ptr<OwnedMessage> owned(static_cast<OwnedMessage*>(user_data));
  if (owned->on_sent) owned->on_sent(status);
  if (request != nullptr) ucp_request_free(request);
}

}  // namespace

Status send_control_am(ucp_ep_h ep, uint16_t id, std::vector<std::byte> header,
                       std::vector<std::byte> payload, SentCallback on_sent) {
  auto* owned = new OwnedMessage{std::move(header), std::move(payload), std::move(on_sent)};
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &free_message;
  param.user_data = owned;
  param.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t request = ucp_am_send_nbx(
      ep, id, owned->header.data(), owned->header.size(),
      owned->payload.empty() ? nullptr : owned->payload.data(), owned->payload.size(), &param);
  if (UCS_PTR_IS_PTR(request)) return Status::ok();  // free_message runs on completion
  // Completed or failed at once: UCX will not call back.
  const ucs_status_t status = UCS_PTR_STATUS(request);
  free_message(nullptr, status, owned);
  return status == UCS_OK ? Status::ok()
                          : from_ucs(status, fmt::format("sending active message {}", id));
}

}  // namespace stoker::ucx
