// BufferPool: recycled buffers of one memory kind for a reader's staging
// copies and collated outputs, so the steady state allocates nothing (no
// cudaMalloc on the hot path). A buffer's return records, on the reader's
// stream, the point after which it is free; whoever takes it next waits for
// that point on its own stream before writing, so a buffer is never reused
// while the trainer's kernels may still read it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "gpu/stream.h"
#include "stoker/memory.h"
#include "stoker/result.h"

namespace stoker::detail {

class BufferPool;

// A buffer on loan from a pool; returned when destroyed.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(std::shared_ptr<BufferPool> pool, Buffer buffer, std::optional<CudaEvent> released)
      : pool_(std::move(pool)), buffer_(std::move(buffer)), released_(std::move(released)) {}
  PooledBuffer(PooledBuffer&&) noexcept = default;
  PooledBuffer& operator=(PooledBuffer&& other) noexcept;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer() { reset(); }

  std::byte* data() const { return buffer_.data(); }
  size_t size() const { return buffer_.size(); }
  explicit operator bool() const { return buffer_.data() != nullptr; }
  void reset();

 private:
  std::shared_ptr<BufferPool> pool_;
  Buffer buffer_;
  std::optional<CudaEvent> released_;  // reused with the buffer: created once
};

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  // `stream`: where the pool's buffers are used (the reader's stream).
  BufferPool(std::shared_ptr<MemoryResource> resource, StreamRef stream)
      : resource_(std::move(resource)), stream_(stream) {}

  // A buffer of at least `bytes`. Work enqueued on `user` afterwards runs
  // only once the buffer's previous users (on the pool's stream) are done.
  Result<PooledBuffer> acquire(size_t bytes, StreamRef user);
  MemoryKind kind() const { return resource_->kind(); }
  int device() const { return resource_->device(); }
  size_t allocated_bytes() const;

 private:
  friend class PooledBuffer;
  void give_back(Buffer buffer, std::optional<CudaEvent> released);

  struct Free {
    Buffer buffer;
    std::optional<CudaEvent> released;  // recorded on the pool's stream when it came back
  };
  std::shared_ptr<MemoryResource> resource_;
  StreamRef stream_;
  mutable std::mutex mu_;
  std::multimap<size_t, Free> free_;
  size_t allocated_ = 0;
};

}  // namespace stoker::detail
