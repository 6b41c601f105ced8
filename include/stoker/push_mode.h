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
  // shared memory into a pool the sender cannot map, where the receiver
  // reads the sender's memory with cma.
  kActiveMessage = 0,
  // ucp_put_nbx into a slot the receiver advertised with its credit, then a
  // flush and a small "ready" message (NIXL's pattern). Best where RMA is
  // native (RDMA), and on the receiver's own host when its pool is a
  // shared-memory segment (the default host pool): the put is then one copy
  // by the sender, straight into the slot. The receiver never reads from the
  // sender, so a sender that dies mid-transfer cannot stall or upset it.
  kPut = 1,
  // What auto_push_mode() picks at connect time. The default.
  kAuto = 2,
};

std::string_view push_mode_name(PushMode mode);  // "am", "put", "auto"
std::optional<PushMode> parse_push_mode(std::string_view name);

// Where a sender finds the receiver's landing slots, which decides kAuto.
enum class SlotReach : uint8_t {
  // Another host, or shared memory is off (UCX_TLS).
  kNetwork,
  // This host, but the pool is the receiver's private memory (a
  // MemoryResource's: pinned memory, say). UCX 1.13 carries a put there
  // through its shared-memory FIFO, a copy on each side.
  kSharedMemory,
  // This host, and the pool is a UCX shared-memory segment that the
  // receiver's remote key maps into the sender (RemoteKey::maps_locally).
  kMapped,
};

// Slots at least this large are filled by active messages over shared
// memory when the pool is not mapped (kSharedMemory): there the receiver
// reads a batch straight from the sender's memory (UCX's cma, one copy),
// where a put goes through UCX's FIFO (two copies, half on each side). On a
// 2-core VM active messages beat puts from 512 KiB (docs/perf.md).
inline constexpr uint64_t kSharedMemoryActiveMessageSlotBytes = uint64_t{512} << 10;

// kAuto resolved: put into mapped slots, of any size, and into unmapped
// shared-memory slots smaller than the threshold above; active messages
// otherwise.
PushMode auto_push_mode(SlotReach reach, uint64_t slot_bytes);

}  // namespace stoker
