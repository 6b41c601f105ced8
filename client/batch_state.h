// BatchState: what one handed-out batch holds, shared by the Batch and
// every DLPack export of its tensors. Destroying it (the last holder let go)
// returns its landing slot and its buffers to their pools.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "client/buffer_pool.h"
#include "gpu/stream.h"
#include "stoker/reader.h"

namespace stoker::detail {

struct BatchState {
  BatchDescriptor descriptor;
  uint64_t producer = 0;
  MemoryKind memory = MemoryKind::kHost;
  int device = -1;
  std::vector<std::pair<std::string, TensorView>> tensors;
  // What the views point into: the landing slot (when tensors are handed out
  // where they landed), a device copy of the payload, collated outputs.
  LandedBatch landed;
  PooledBuffer staging;
  PooledBuffer output;
  // Recorded on the reader's stream after the last write: the batch is ready.
  CudaEvent ready;
  bool released = false;

  ~BatchState();
};

}  // namespace stoker::detail
