// BatchReceiver: the landing side of the data plane. It listens for senders,
// grants each of them credits (one credit = one landing slot), lands their
// batches in a pool of slots of one memory kind, and hands landed batches to
// the consumer. Descriptors that lie are rejected and counted; a sender that
// dies has its slots returned; other senders are served throughout.
//
// Threading: a BatchReceiver runs its own progress threads (one by default;
// ReceiverOptions::progress_threads), each serving some of the senders.
// next(), stats() and LandedBatch::release() may be called from any thread.
// on_peer_event runs on a progress thread, with several of them possibly at
// the same time, and must not block.
//
// Lifetime: a LandedBatch keeps the landing memory alive, so it may outlive
// the receiver; releasing it after the receiver stopped just frees the slot.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stoker/batch_descriptor.h"
#include "stoker/memory.h"
#include "stoker/result.h"
#include "stoker/transport_context.h"

namespace stoker {

// Why a receiver dropped a message. Each is counted in ReceiverStats.
enum class RejectReason : uint8_t {
  kMalformedDescriptor,  // bad magic, sizes, dtype, shape, names or offsets
  kUnsupportedVersion,   // descriptor or handshake version this build does not speak
  kPayloadMismatch,      // payload length differs from what the descriptor declares
  kOversizedBatch,       // payload larger than a landing slot
  kNoCredit,             // a sender sent without holding a credit (or a slot not granted to it)
  kUnknownSender,        // a batch from a peer that never completed the handshake
  kLandingFailed,        // the transfer into the slot failed (usually: the sender died)
  kUnauthorized,         // a hello without the receiver's access token
};
inline constexpr size_t kRejectReasonCount = 8;
std::string_view reject_reason_name(RejectReason reason);

struct ReceiverStats {
  uint64_t batches_landed = 0;
  uint64_t bytes_landed = 0;
  std::array<uint64_t, kRejectReasonCount> rejected{};
  uint64_t senders_connected = 0;  // handshakes completed, ever
  uint64_t senders_finished = 0;   // said goodbye
  uint64_t senders_failed = 0;     // died or disconnected without goodbye
  uint32_t slots_free = 0;         // neither granted nor holding a batch
  // Senders each progress thread serves now (ReceiverOptions::progress_threads).
  std::vector<uint32_t> senders_by_thread;

  uint64_t rejected_total() const;
  uint64_t rejected_for(RejectReason r) const { return rejected[static_cast<size_t>(r)]; }
};

struct PeerEvent {
  enum class Kind { kConnected, kFinished, kFailed };
  Kind kind;
  uint32_t sender_id;
  uint64_t producer_id;  // as the sender declared it (SenderOptions::producer_id)
  std::string peer;      // "sender 3 (127.0.0.1:41234) worker-3"
  Status status;         // why, for kFailed
};

struct ReceiverOptions {
  std::string listen_address = "0.0.0.0:0";  // port 0: pick a free port
  size_t slot_bytes = size_t{4} << 20;
  uint32_t slot_count = 32;
  uint32_t credits_per_sender = 8;
  // Payload bytes in flight to this receiver, shared equally by the senders
  // streaming to it: each is told its share with its credits and posts no
  // more than that at once (at least one batch always goes). Fewer bytes in
  // flight mean fewer slots written in turn, likelier still in the CPU's
  // cache; too few leave a sender's connection idle. On a 2-core VM four TCP
  // senders of 1 MiB batches sharing 16 MiB moved more than with 16 MiB each
  // in 3 of 4 paired runs, and more than sharing 8 MiB in 6 of 7
  // (docs/perf.md). 0: no limit from the receiver.
  size_t max_bytes_in_flight = size_t{16} << 20;
  // Threads receiving, each with its own UCX worker and an equal part of the
  // slots; each new sender goes to the one serving the fewest. One thread
  // lands a few GB/s (docs/perf.md); more help a receiver fed by many
  // senders on a host with cores to spare. Each part must hold
  // credits_per_sender slots.
  uint32_t progress_threads = 1;
  // How long a progress thread keeps polling UCX after its last event before
  // it sleeps on the worker's wakeup fd. Polling bridges the gaps of a busy
  // stream without a wakeup for each; a longer poll holds a core while
  // traffic flows (never while idle) and lowers latency. On a VM whose host
  // is shared, a vCPU that sleeps may wait for the hypervisor to run it
  // again (steal time): there a poll of a few milliseconds keeps the core
  // (docs/perf.md, "Busy polling and steal time"). Must not be negative.
  std::chrono::microseconds busy_poll{50};
  // When set, only senders presenting this token are served; others are
  // refused and counted as kUnauthorized. The coordinator hands a job's
  // token to the job's workers and consumers.
  std::string access_token;
  // Landing memory; null means pageable host memory that UCX allocates: a
  // shared-memory segment when UCX_TLS allows shared memory, into which
  // senders on this host put their batches with one copy of their own
  // (SlotReach::kMapped). A resource's memory, host memory included, is
  // private to the receiver. Device memory needs a UCX with CUDA support (see
  // plan_landing() in gpu/ for the fallback).
  std::shared_ptr<MemoryResource> landing_memory;
  std::function<void(const PeerEvent&)> on_peer_event;
  // The process's shared UCX context; empty: the receiver creates its own.
  TransportContext context;
};

class BatchReceiver;
namespace detail {
class ReceiverCore;
class LandedQueue;
}  // namespace detail

// A batch that has fully landed in a slot. Move-only; releasing it (or
// destroying it) returns the slot and the sender's credit.
class LandedBatch {
 public:
  LandedBatch() = default;
  LandedBatch(LandedBatch&& other) noexcept;
  LandedBatch& operator=(LandedBatch&& other) noexcept;
  LandedBatch(const LandedBatch&) = delete;
  LandedBatch& operator=(const LandedBatch&) = delete;
  ~LandedBatch() { release(); }

  const BatchDescriptor& descriptor() const { return descriptor_; }
  std::span<std::byte> payload() const { return payload_; }
  // The bytes of tensor i (i < descriptor().tensor_count).
  std::span<std::byte> tensor_bytes(size_t i) const;
  uint32_t sender_id() const { return sender_id_; }
  uint64_t producer_id() const { return producer_id_; }  // SenderOptions::producer_id
  MemoryKind memory_kind() const { return memory_kind_; }
  bool valid() const { return core_ != nullptr; }

  // Returns the slot. Idempotent: a second call does nothing.
  void release();

 private:
  friend class detail::ReceiverCore;
  std::shared_ptr<detail::ReceiverCore> core_;
  uint32_t slot_ = 0;
  uint32_t sender_id_ = 0;
  uint64_t producer_id_ = 0;
  MemoryKind memory_kind_ = MemoryKind::kHost;
  BatchDescriptor descriptor_;
  std::span<std::byte> payload_;
};

class BatchReceiver {
 public:
  static Result<std::unique_ptr<BatchReceiver>> start(ReceiverOptions options);
  // Stops the progress threads and closes every sender's endpoint.
  ~BatchReceiver();
  BatchReceiver(const BatchReceiver&) = delete;
  BatchReceiver& operator=(const BatchReceiver&) = delete;

  // "127.0.0.1:41234": where senders connect.
  std::string address() const;
  uint16_t port() const;
  MemoryKind memory_kind() const;

  // The next landed batch, in landing order. kTimedOut when none lands within
  // `timeout`; kCancelled once the receiver is stopping.
  Result<LandedBatch> next(std::chrono::milliseconds timeout);

  ReceiverStats stats() const;

 private:
  BatchReceiver(std::vector<std::shared_ptr<detail::ReceiverCore>> shards,
                std::shared_ptr<detail::LandedQueue> landed);
  std::vector<std::shared_ptr<detail::ReceiverCore>> shards_;  // shards_[0] listens
  std::shared_ptr<detail::LandedQueue> landed_;
};

}  // namespace stoker
