// Fire-and-forget sends of small active messages whose header bytes must live
// until UCX is done with them: the bytes are owned by the send and freed on
// completion.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "stoker/status.h"

namespace stoker::ucx {

// Sends `header` and `payload` as eager active message `id`, owning both
// until UCX is done with them. Errors that surface later (a dead peer) are
// reported by the endpoint's error handler.
Status send_control_am(ucp_ep_h ep, uint16_t id, std::vector<std::byte> header,
                       std::vector<std::byte> payload = {});

}  // namespace stoker::ucx
