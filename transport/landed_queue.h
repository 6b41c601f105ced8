// The hand-off between a receiver's progress threads and its consumer: landed
// slots, in landing order, each tagged with the progress thread (shard) whose
// pool holds it. One queue serves every shard of a BatchReceiver, so the
// consumer waits in one place however many progress threads feed it.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

#include "stoker/result.h"

namespace stoker::detail {

class LandedQueue {
 public:
  struct Landed {
    uint32_t shard = 0;
    uint32_t slot = 0;
  };

  // Queues a landed slot without waking the consumer: a progress thread
  // lands several batches in one turn of its UCX worker and calls wake()
  // once, after the turn. Waking it per batch cost a context switch per
  // batch where both share a core.
  void push(Landed landed) {
    std::lock_guard lock(mu_);
    landed_.push_back(landed);
  }

  // Wakes a consumer waiting in pop(), if there is one.
  void wake() {
    bool waiting;
    {
      std::lock_guard lock(mu_);
      waiting = waiting_ > 0;
    }
    if (waiting) cv_.notify_one();  // a futex call only when someone sleeps
  }

  // The oldest landed slot. kTimedOut when none lands within `timeout`;
  // kCancelled once stopped and empty.
  Result<Landed> pop(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    ++waiting_;
    const bool ready = cv_.wait_for(lock, timeout, [&] { return !landed_.empty() || stopped_; });
    --waiting_;
    if (!ready) return timed_out(fmt::format("no batch landed within {} ms", timeout.count()));
    if (landed_.empty()) return cancelled("the receiver is stopping");
    const Landed front = landed_.front();
    landed_.pop_front();
    return front;
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Landed> landed_;
  int waiting_ = 0;
  bool stopped_ = false;
};

}  // namespace stoker::detail
