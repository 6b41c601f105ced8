// Tensor-parallel fan-out: rank 0 of a group receives a batch from stoker and
// broadcasts it to the other ranks over NCCL, so a group of k GPUs pulls one
// copy over the network instead of k. As Megatron-LM does it: a fixed-size
// header first (tensor count, names, dtypes, shapes, offsets, byte sizes),
// from which receivers allocate, then the whole payload as one flat buffer.
// Built only when CUDA and NCCL are found (STOKER_HAVE_NCCL).
//
// Ordering and lifetimes: every broadcast is enqueued on the caller's stream
// (which must belong to the rank's GPU). A receiver must read the header
// before it can allocate, so the second phase blocks the calling thread until
// the header broadcast on that stream is done (a stream synchronisation, never
// a device-wide one). The batch a receiver gets is ready on the stream when
// the payload broadcast ends; its memory comes from CUDA's stream-ordered
// allocator and is freed on that stream when the FanoutBatch is destroyed, so
// work on other streams that reads it must be ordered before that (events).
// Rank 0 keeps its payload alive until the broadcast has completed on its
// stream.
#pragma once

#include <nccl.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "gpu/stream.h"
#include "stoker/batch_descriptor.h"
#include "stoker/memory.h"
#include "stoker/result.h"
#include "stoker/stream.h"
#include "stoker/tensor.h"

namespace stoker {

// An NCCL communicator (ncclCommDestroy on destruction).
class NcclCommunicator {
 public:
  NcclCommunicator() = default;
  // Every rank of a group in this process, rank i on devices[i] (ncclCommInitAll).
  static Result<std::vector<NcclCommunicator>> create_local_group(std::span<const int> devices);
  // The id rank 0 creates and shares out of band with the other ranks.
  static Result<ncclUniqueId> new_unique_id();
  // One rank of a group that spans threads or processes; every rank calls it
  // with the same id and size.
  static Result<NcclCommunicator> join(const ncclUniqueId& id, int size, int rank, int device);

  NcclCommunicator(NcclCommunicator&& other) noexcept;
  NcclCommunicator& operator=(NcclCommunicator&& other) noexcept;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  ~NcclCommunicator();

  ncclComm_t get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

 private:
  static Result<NcclCommunicator> adopt(ncclComm_t comm);
  void reset();
  ncclComm_t comm_ = nullptr;
  int rank_ = -1;
  int size_ = 0;
  int device_ = -1;
};

// The header broadcast before every payload: fixed size, trivially copyable.
struct FanoutTensor {
  std::array<char, kMaxTensorName + 1> name{};  // NUL-terminated
  uint8_t dtype = 0;                            // a DType code
  uint8_t ndim = 0;
  std::array<int64_t, kMaxTensorDims> shape{};
  uint64_t offset = 0;  // in the payload
  uint64_t bytes = 0;
};
struct FanoutHeader {
  static constexpr uint32_t kMagic = 0x4E465453;  // "STFN"
  static constexpr uint16_t kVersion = 1;
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t tensor_count = 0;
  uint64_t payload_bytes = 0;
  std::array<FanoutTensor, kMaxTensors> tensors{};
};

// A tensor of rank 0's batch, lying inside its flat payload.
struct NamedTensor {
  std::string_view name;
  TensorView view;
};

// What rank 0 broadcasts: one flat device buffer and the tensors inside it.
struct FanoutSource {
  const void* payload = nullptr;
  uint64_t payload_bytes = 0;
  std::span<const NamedTensor> tensors;
};

// The batch every rank ends up with. On rank 0 the views point into the
// source payload; on the others into `storage`.
struct FanoutBatch {
  FanoutHeader header;
  Buffer storage;  // receivers only
  std::vector<TensorView> tensors;
  std::string_view name(size_t i) const { return header.tensors[i].name.data(); }
};

// Broadcasts batches from rank 0 of `comm` to every rank. One per rank; the
// communicator must outlive it. Not thread-safe: one thread per rank.
class BatchFanout {
 public:
  static Result<BatchFanout> create(const NcclCommunicator& comm);
  BatchFanout(BatchFanout&&) noexcept = default;
  BatchFanout& operator=(BatchFanout&&) noexcept = default;
  BatchFanout(const BatchFanout&) = delete;
  BatchFanout& operator=(const BatchFanout&) = delete;
  ~BatchFanout() = default;

  // Both phases: what a rank with its own thread or process calls.
  Result<FanoutBatch> broadcast(const FanoutSource* source, StreamRef stream);

  // Phase 1, every rank: enqueues the header broadcast. Rank 0 passes its
  // batch (validated here), the others nullptr. When one thread drives
  // several ranks, call it for all of them inside ncclGroupStart/End.
  Status enqueue_header(const FanoutSource* source, StreamRef stream);
  // Phase 2, every rank: waits for the header, allocates (receivers) and
  // enqueues the payload broadcast; the batch is ready on `stream` when it
  // ends. With one thread driving several ranks, call it for all of them
  // inside one ncclGroupStart/End as well.
  Result<FanoutBatch> enqueue_payload(StreamRef stream);

 private:
  BatchFanout() = default;
  const NcclCommunicator* comm_ = nullptr;
  Buffer device_header_;     // the header's broadcast buffer
  Buffer pinned_header_;     // its host side: rank 0 copies from it, receivers into it
  CudaEvent header_copied_;  // the last copy between the two has completed
  FanoutHeader header_;      // rank 0: what it sends; receivers: what arrived
  const void* root_payload_ = nullptr;
  bool header_pending_ = false;
};

}  // namespace stoker
