// How a sender moves a batch into the receiver's landing slot.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace stoker {

enum class PushMode : uint8_t {
  // ucp_am_send_nbx; the receiver picks a slot when the message arrives and
  // pulls the payload into it (rendezvous for large batches). Best over TCP,
  // where put is emulated and 10-30x slower.
  kActiveMessage = 0,
  // ucp_put_nbx into a slot the receiver advertised with its credit, then a
  // flush and a small "ready" message (NIXL's pattern). Best where RMA is
  // native: shared memory (cma) and RDMA. The receiver never reads from the
  // sender, so a sender that dies mid-transfer cannot stall or upset it.
  kPut = 1,
  // Put when the data goes over shared memory (same host, UCX_TLS allows it),
  // active messages otherwise. The default; docs/perf.md has the figures.
  kAuto = 2,
};

std::string_view push_mode_name(PushMode mode);  // "am", "put", "auto"
std::optional<PushMode> parse_push_mode(std::string_view name);

}  // namespace stoker
