// SendArena: the worker's memory budget. One page-aligned host allocation
// (registered once with every consumer connection, so batches go out
// zero-copy), carved into send buffers by a first-fit allocator. acquire()
// blocks while the budget is used up: with consumers holding no credit, sent
// batches are not released, and the pipeline threads stop here instead of
// buffering without bound.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>

#include "pipeline/batch_sink.h"
#include "stoker/memory.h"
#include "stoker/result.h"

namespace stoker::workers {

class SendArena final : public pipeline::SendBufferOwner {
 public:
  static Result<std::unique_ptr<SendArena>> create(size_t bytes);
  ~SendArena() = default;
  SendArena(const SendArena&) = delete;
  SendArena& operator=(const SendArena&) = delete;

  // A buffer of at least `bytes` (rounded up to kAlignment). Waits for memory
  // while `cancel` stays false; kCancelled once it is set; kResourceExhausted
  // when `bytes` exceeds the whole arena.
  //
  // `limit`, when given, is the offset the buffer must end at or below (the
  // rest of the arena is kept for others: Task::Sink). It is asked again on
  // every attempt, so it may change while this waits (then call wake()); it
  // is called under the arena's lock, so it must take no lock that is held
  // while buffers are released. A buffer that does not fit below it waits.
  Result<pipeline::SendBuffer> acquire(size_t bytes, const std::atomic<bool>& cancel,
                                       const std::function<size_t()>& limit = nullptr);
  // Makes waiting acquire() calls look again (a limit of theirs changed).
  void wake();

  std::span<std::byte> memory() const { return {buffer_.data(), buffer_.size()}; }
  size_t capacity() const { return buffer_.size(); }
  size_t bytes_in_use() const;
  size_t peak_bytes_in_use() const;
  uint64_t waits() const;  // acquire() calls that had to wait

  // Buffers start on this boundary: a cache line multiple that suits DMA,
  // small enough that small batches do not waste the budget (the arena as a
  // whole is page-aligned and registered once).
  static constexpr size_t kAlignment = 256;

 private:
  explicit SendArena(Buffer buffer);
  void release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept override;

  Buffer buffer_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::map<size_t, size_t> free_;  // offset -> length, coalesced
  size_t in_use_ = 0;
  size_t peak_ = 0;
  uint64_t waits_ = 0;
};

}  // namespace stoker::workers
