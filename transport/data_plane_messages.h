// The control messages of the batch data plane (docs/protocol.md): the
// hello/welcome handshake, credits and the put-mode "ready" notice. Each has
// an encode() into bytes and a decode() that validates everything it reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "stoker/batch_descriptor.h"
#include "stoker/push_mode.h"
#include "stoker/result.h"

namespace stoker::wire {

// Version of the handshake, credit and ready messages. A peer with another
// version is refused with a message naming both.
inline constexpr uint16_t kDataPlaneVersion = 3;
inline constexpr uint32_t kHelloMagic = 0x4C454853;  // "SHEL"
inline constexpr size_t kMaxNameBytes = 64;
inline constexpr size_t kMaxAccessTokenBytes = 128;
inline constexpr size_t kMaxRkeyBytes = 4096;
inline constexpr size_t kMaxWorkerAddressBytes = 8192;
inline constexpr size_t kMaxRefusalBytes = 512;
inline constexpr size_t kMaxCreditsPerMessage = 1024;
inline constexpr size_t kMaxHostIdentityBytes = 256;
inline constexpr size_t kMaxReadyNoticeBytes = 4096;

// Active-message ids of the data plane. Ids below 16 are reserved for it.
enum class AmId : uint16_t {
  kHello = 1,       // sender -> receiver
  kWelcome = 2,     // receiver -> sender
  kRefuse = 3,      // receiver -> sender, then the receiver closes
  kCredit = 4,      // receiver -> sender
  kBatch = 5,       // sender -> receiver: descriptor header + payload
  kBatchReady = 6,  // sender -> receiver (put mode): u16 count, then that many BatchReady
  kGoodbye = 7,     // sender -> receiver (data endpoint): clean end of stream
  kAttach = 8,      // sender -> receiver (data endpoint): binds it to the handshake
};

struct Hello {
  uint16_t version = kDataPlaneVersion;
  uint64_t producer_id = 0;  // who produces the batches (a worker id), for the consumer
  std::string name;          // for logs: "worker-3"
  std::string access_token;  // must equal the receiver's, when it has one

  std::vector<std::byte> encode() const;
  static Result<Hello> decode(std::span<const std::byte> in);
};

struct Welcome {
  uint16_t version = kDataPlaneVersion;
  uint32_t sender_id = 0;
  uint64_t slot_bytes = 0;
  uint32_t slot_count = 0;
  uint64_t pool_address = 0;              // remote address of slot 0 (for put mode)
  std::vector<std::byte> pool_rkey;       // packed rkey of the pool (for put mode)
  std::vector<std::byte> worker_address;  // for the sender's data endpoint
  uint64_t attach_token = 0;              // the sender proves it is itself with it
  std::string host_identity;              // host_identity() of the receiver, if it allows shm
  uint8_t memory_kind = 0;                // MemoryKind of the landing pool

  std::vector<std::byte> encode() const;
  static Result<Welcome> decode(std::span<const std::byte> in);
};

// First message on the data endpoint: which handshake it belongs to, and
// the push mode the sender chose once it knew where the receiver is.
struct Attach {
  uint32_t sender_id = 0;
  uint64_t token = 0;
  PushMode mode = PushMode::kActiveMessage;  // never kAuto on the wire

  std::vector<std::byte> encode() const;
  static Result<Attach> decode(std::span<const std::byte> in);
};

struct Refusal {
  uint16_t version = kDataPlaneVersion;
  std::string reason;

  std::vector<std::byte> encode() const;
  static Result<Refusal> decode(std::span<const std::byte> in);
};

// One credit per slot id granted. The first credit message after an attach
// may be empty: it confirms the attach when the pool has no slot to spare.
// Every one carries the sender's current share of the receiver's byte
// window, and one may be sent empty just to change it.
struct Credit {
  uint64_t window_bytes = 0;  // 0: the receiver sets no limit
  std::vector<uint32_t> slots;

  std::vector<std::byte> encode() const;
  static Result<Credit> decode(std::span<const std::byte> in, uint32_t slot_count);
};

// Put mode: the payload is in `slot`; the descriptor says what it holds.
struct BatchReady {
  uint32_t slot = 0;
  BatchDescriptor descriptor;

  // Writes into `out` (at least 4 + descriptor.encoded_size() bytes).
  Result<size_t> encode(std::span<std::byte> out) const;
  static Result<BatchReady> decode(std::span<const std::byte> in);
  // Splits a kBatchReady message into its entries (each entry's size follows
  // from the tensor count in its descriptor).
  static Result<std::vector<BatchReady>> decode_list(std::span<const std::byte> in);
};

}  // namespace stoker::wire
