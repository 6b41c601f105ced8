// Owned-header active-message sends.
#include "transport/ucx/am_send.h"

#include <fmt/format.h>

#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {
namespace {

struct OwnedMessage {
  std::vector<std::byte> header;
  std::vector<std::byte> payload;
};

void free_message(void* request, ucs_status_t /*status*/, void* user_data) {
  delete static_cast<OwnedMessage*>(user_data);
  ucp_request_free(request);
}

}  // namespace

Status send_control_am(ucp_ep_h ep, uint16_t id, std::vector<std::byte> header,
                       std::vector<std::byte> payload) {
  auto* owned = new OwnedMessage{std::move(header), std::move(payload)};
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &free_message;
  param.user_data = owned;
  param.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
  ucs_status_ptr_t request = ucp_am_send_nbx(
      ep, id, owned->header.data(), owned->header.size(),
      owned->payload.empty() ? nullptr : owned->payload.data(), owned->payload.size(), &param);
  if (request == nullptr || UCS_PTR_IS_ERR(request)) {
    delete owned;
    return request == nullptr
               ? Status::ok()
               : from_ucs(UCS_PTR_STATUS(request), fmt::format("sending active message {}", id));
  }
  return Status::ok();
}

}  // namespace stoker::ucx
