// SendArena: the worker's memory budget. One page-aligned host allocation
// (registered once with every consumer connection, so batches go out
// zero-copy), carved into send buffers by a first-fit allocator. acquire()
// blocks while the budget is used up: with consumers holding no credit, sent
// batches are not released, and the pipeline threads stop here instead of
// buffering without bound.
//
// The jobs a worker runs share the arena as tenants, each with a reserve:
// the memory its pipeline threads need to make progress (one batch each).
// No tenant takes memory that would leave another, below its reserve, less
// than the difference. A job whose readers stop reading keeps its finished
// batches, and so its memory, until they read again; without reserves it
// would take the whole budget and stop every other job on the worker.
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
  class Tenant;

  // At most kMaxBytes: a buffer's token holds its offset in kOffsetBits.
  static Result<std::unique_ptr<SendArena>> create(size_t bytes);
  ~SendArena() = default;
  SendArena(const SendArena&) = delete;
  SendArena& operator=(const SendArena&) = delete;

  // A new tenant that is guaranteed `reserve` bytes (capped at the capacity).
  // When the tenants' reserves add up to more than the arena, each is scaled
  // down in proportion.
  std::unique_ptr<Tenant> join(size_t reserve);
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
  static constexpr unsigned kOffsetBits = 40;
  static constexpr size_t kMaxBytes = size_t{1} << kOffsetBits;

 private:
  struct Account {
    size_t reserve = 0;
    size_t in_use = 0;
    bool joined = true;  // false once its Tenant is gone; erased when in_use is 0
  };

  explicit SendArena(Buffer buffer);
  Result<pipeline::SendBuffer> acquire(uint32_t tenant, size_t bytes,
                                       const std::atomic<bool>& cancel,
                                       const std::function<size_t()>& limit);
  // Under mu_: whether `tenant` may take `want` more bytes now.
  bool leaves_the_reserves_locked(uint32_t tenant, size_t want) const;
  void leave(uint32_t tenant);
  void release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept override;

  Buffer buffer_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::map<size_t, size_t> free_;  // offset -> length, coalesced
  std::map<uint32_t, Account> tenants_;
  uint32_t next_tenant_ = 1;
  size_t in_use_ = 0;
  size_t peak_ = 0;
  uint64_t waits_ = 0;
};

// One job's tenancy; leaves the arena when destroyed (buffers it still has
// out return as usual).
class SendArena::Tenant {
 public:
  ~Tenant() { arena_.leave(id_); }
  Tenant(const Tenant&) = delete;
  Tenant& operator=(const Tenant&) = delete;

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
                                       const std::function<size_t()>& limit = nullptr) {
    return arena_.acquire(id_, bytes, cancel, limit);
  }
  size_t bytes_in_use() const;

 private:
  friend class SendArena;
  Tenant(SendArena& arena, uint32_t id) : arena_(arena), id_(id) {}
  SendArena& arena_;
  const uint32_t id_;
};

}  // namespace stoker::workers
