// BatchPreparer: turns a landed batch into the tensors the trainer gets.
// It copies the payload to the GPU when the batch landed in pinned memory but
// is wanted on the device (asynchronously, on a copy stream of its own, so the
// copy overlaps the trainer's compute and the next transfer; the slot goes
// back once the copy is done), runs the collation on the trainer's stream,
// and records the event that marks the batch ready. Without a collation and
// a copy, tensors are handed out where they landed: zero copies.
//
// Threading: prepare() and poll() on the reader's thread.
#pragma once

#include <deque>
#include <memory>

#include "client/batch_state.h"
#include "client/buffer_pool.h"
#include "gpu/stream.h"
#include "stoker/reader.h"

namespace stoker::detail {

class BatchPreparer {
 public:
  // `landed`: the memory batches land in; `copy_to_device`: they land in
  // pinned memory and are wanted on `options.device`.
  static Result<std::unique_ptr<BatchPreparer>> create(const ReaderOptions& options,
                                                       MemoryKind landed, bool copy_to_device);

  Result<std::shared_ptr<BatchState>> prepare(LandedBatch landed);
  // Returns the slots whose copies to the GPU have completed. Never blocks.
  void poll();
  MemoryKind output_kind() const { return output_; }

 private:
  BatchPreparer(const ReaderOptions& options, MemoryKind output);
  // The landed tensors as views of `base` (the slot, or its device copy).
  Result<std::vector<std::pair<std::string, TensorView>>> views_of(
      const BatchDescriptor& descriptor, std::byte* base, MemoryKind memory, int device) const;
  Status collate(BatchState& state, std::vector<std::pair<std::string, TensorView>> inputs);

  Collation collation_;
  MemoryKind output_;
  int device_;
  StreamRef stream_;                     // the trainer's
  CudaStream copy_stream_;               // copies to the GPU
  std::shared_ptr<BufferPool> staging_;  // device copies of payloads
  std::shared_ptr<BufferPool> outputs_;  // collated tensors
  struct CopyInFlight {
    LandedBatch slot;
    CudaEvent copied;
  };
  std::deque<CopyInFlight> copies_;  // slots to return once copied
  std::deque<CudaEvent> spare_events_;
};

}  // namespace stoker::detail
