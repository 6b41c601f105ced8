// Where a running pipeline puts its batches. The worker daemon implements
// BatchSink over its registered send-buffer pool (the memory budget, and the
// backpressure from consumers without credit); tests and benchmarks use
// MemoryBudgetSink, a plain heap-backed one.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "stoker/batch_descriptor.h"
#include "stoker/result.h"

namespace stoker::pipeline {

// The pool a SendBuffer comes from. `token` is whatever the pool needs to
// find the memory again (a slot index, a registration handle).
class SendBufferOwner {
 public:
  // Returns the memory to the pool. Called once per lease, from any thread.
  virtual void release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept = 0;

 protected:
  ~SendBufferOwner() = default;
};

// A lease on part of a send-buffer pool. Move-only; returned to the pool when
// destroyed (or reset()).
class SendBuffer {
 public:
  SendBuffer() = default;
  SendBuffer(std::span<std::byte> bytes, SendBufferOwner* owner, uint64_t token)
      : bytes_(bytes), owner_(owner), token_(token) {}
  SendBuffer(SendBuffer&& other) noexcept { *this = std::move(other); }
  SendBuffer& operator=(SendBuffer&& other) noexcept;
  SendBuffer(const SendBuffer&) = delete;
  SendBuffer& operator=(const SendBuffer&) = delete;
  ~SendBuffer() { reset(); }

  std::span<std::byte> bytes() const { return bytes_; }
  uint64_t token() const { return token_; }
  SendBufferOwner* owner() const { return owner_; }
  bool valid() const { return owner_ != nullptr; }

  // Returns the memory to its pool now.
  void reset();
  // Gives up the lease without returning the memory: the caller must call
  // owner()->release_send_buffer(bytes, token) itself.
  std::span<std::byte> detach();

 private:
  std::span<std::byte> bytes_;
  SendBufferOwner* owner_ = nullptr;
  uint64_t token_ = 0;
};

class BatchSink {
 public:
  virtual ~BatchSink() = default;
  // A buffer of at least `bytes` bytes. Blocks while the memory budget is
  // used up (consumers hold no credit: this is the backpressure); returns
  // kCancelled when the run is cancelled, kResourceExhausted if `bytes` can
  // never fit the budget.
  virtual Result<SendBuffer> acquire(size_t bytes) = 0;
  // Hands over a filled batch. The descriptor is complete except job_id:
  // split_id, sequence (batch index within the split), iteration, flags
  // (kLastOfSplit on the split's last batch), payload_bytes and tensors.
  // Errors stop the run and are returned by run_split().
  virtual Status emit(BatchDescriptor descriptor, SendBuffer buffer) = 0;
};

// A BatchSink over heap memory with a byte budget: acquire() blocks while
// the buffers in use (emitted ones the consumer still holds included) would
// exceed it. Released buffers are kept for reuse, so a steady run allocates
// nothing. Emitted batches go to `consumer`, on the emitting thread; a
// consumer that keeps the SendBuffer keeps its memory charged to the budget.
class MemoryBudgetSink final : public BatchSink, private SendBufferOwner {
 public:
  using Consumer = std::function<Status(BatchDescriptor, SendBuffer)>;
  MemoryBudgetSink(size_t budget_bytes, Consumer consumer);
  ~MemoryBudgetSink() override;

  Result<SendBuffer> acquire(size_t bytes) override;
  Status emit(BatchDescriptor descriptor, SendBuffer buffer) override;

  // Wakes every blocked acquire() with kCancelled, now and from now on.
  void cancel();
  size_t budget() const { return budget_; }
  size_t bytes_in_use() const;
  size_t peak_bytes_in_use() const;
  uint64_t acquire_waits() const;  // acquire() calls that had to wait for memory

 private:
  void release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept override;

  struct Block {
    std::unique_ptr<std::byte[]> memory;
    size_t size = 0;
    bool in_use = false;
  };
  const size_t budget_;
  Consumer consumer_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::vector<Block> blocks_;  // token = index
  size_t in_use_ = 0;          // bytes of blocks in use
  size_t allocated_ = 0;       // bytes of all blocks
  size_t peak_ = 0;
  uint64_t waits_ = 0;
  bool cancelled_ = false;
};

}  // namespace stoker::pipeline
