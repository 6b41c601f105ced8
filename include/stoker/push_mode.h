// How a sender moves a batch into the receiver's landing slot.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace stoker {

enum class PushMode : uint8_t {
  // ucp_am_send_nbx; the receiver picks a slot when the message arrives and
  // pulls the payload into it (rendezvous for large batches). Best over TCP,
  // where put is emulated and 10-30x slower, and for large batches over
  // shared memory, where the receiver reads the sender's memory with cma.
  kActiveMessage = 0,
  // ucp_put_nbx into a slot the receiver advertised with its credit, then a
  // flush and a small "ready" message (NIXL's pattern). Best where RMA is
  // native (RDMA), and for small batches over shared memory, through which
  // UCX 1.13 carries puts in its FIFO. The receiver never reads from the
  // sender, so a sender that dies mid-transfer cannot stall or upset it.
  kPut = 1,
  // What auto_push_mode() picks at connect time. The default.
  kAuto = 2,
};

std::string_view push_mode_name(PushMode mode);  // "am", "put", "auto"
std::optional<PushMode> parse_push_mode(std::string_view name);

// Slots at least this large are filled by active messages even over shared
// memory: there the receiver reads a batch straight from the sender's
// memory (UCX's cma, one copy), where UCX 1.13 carries a put through its
// shared-memory FIFO (two copies, half on each side). On a 2-core VM active
// messages beat puts from 512 KiB, and four senders into one receiver moved
// 15.7-20.4 GB/s with them against 6.6 with puts (docs/perf.md).
inline constexpr uint64_t kSharedMemoryActiveMessageSlotBytes = uint64_t{512} << 10;

// kAuto resolved: put where the data goes over shared memory (same host,
// UCX_TLS allows it) into slots smaller than the threshold above; active
// messages otherwise.
PushMode auto_push_mode(bool shared_memory, uint64_t slot_bytes);

}  // namespace stoker
