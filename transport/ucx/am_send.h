// Fire-and-forget sends of small active messages whose header bytes must live
// until UCX is done with them: the bytes are owned by the send and freed on
// completion.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "stoker/status.h"

namespace stoker::ucx {

// Runs once UCX is done with a message: UCS_OK once it is sent (handed to
// the transport), the error otherwise.
using SentCallback = std::function<void(ucs_status_t)>;

// Sends `header` and `payload` as eager active message `id`, owning both
// until UCX is done with them. Errors that surface later (a dead peer) are
// reported by the endpoint's error handler. `on_sent`, when given, runs
// exactly once: from a later progress call, or before this returns when the
// send completes or fails at once (a failure is also returned).
Status send_control_am(ucp_ep_h ep, uint16_t id, std::vector<std::byte> header,
                       std::vector<std::byte> payload = {}, SentCallback on_sent = nullptr);

}  // namespace stoker::ucx
