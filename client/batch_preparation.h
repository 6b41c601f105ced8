// BatchPreparer: turns a landed batch into the tensors the trainer gets.
// It copies the payload to the GPU when the batch landed in pinned memory but
// is wanted on the device (asynchronously, on a copy stream of its own, so the
// copy overlaps the trainer's compute and the next transfer; the slot goes
// back once the copy is done), runs the collation on the trainer's stream,
// and records the event that marks the batch ready. Without a collation and
// a copy, tensors are handed out where they landed: zero copies.
//
// A large image tensor is copied in slices of whole images, each followed by
// an event, and collated slice by slice behind those events: the collation of
// the first slices overlaps the copy of the last, so the batch is ready soon
// after its last byte reaches the GPU.
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
  // Where the copy to the GPU is cut: each piece ends at `end` (bytes of
  // the payload), when the first `images_end` images of the image tensor are
  // on the GPU. One piece (images_end 0) when the copy is not sliced.
  struct CopyPiece {
    size_t end = 0;
    int64_t images_end = 0;
  };
  std::vector<CopyPiece> plan_copy(const BatchDescriptor& descriptor, size_t bytes) const;
  // The copy's pieces and the events recorded after each (the last is the
  // whole copy's): the image collation waits for them slice by slice.
  struct SlicedCopy {
    std::vector<CopyPiece> pieces;
    std::vector<const CudaEvent*> events;
  };
  Status collate(BatchState& state, std::vector<std::pair<std::string, TensorView>> inputs,
                 const SlicedCopy* sliced);
  Status collate_image_slices(const TensorView& image, const TensorView& out,
                              const SlicedCopy& sliced);

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
  std::vector<CudaEvent> slice_events_;  // re-recorded for each sliced copy
};

}  // namespace stoker::detail
