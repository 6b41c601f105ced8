// SendArena: first-fit allocation with coalescing over one host buffer.
#include "workers/send_arena.h"

#include <fmt/format.h>

namespace stoker::workers {

Result<std::unique_ptr<SendArena>> SendArena::create(size_t bytes) {
  constexpr size_t kPage = 4096;
  if (bytes < kPage) {
    return invalid_argument(fmt::format("a memory budget of {} bytes is below one page", bytes));
  }
  bytes = (bytes + kPage - 1) / kPage * kPage;
  STOKER_ASSIGN_OR_RETURN(auto buffer, host_memory_resource()->allocate(bytes));
  return std::unique_ptr<SendArena>(new SendArena(std::move(buffer)));
}

SendArena::SendArena(Buffer buffer) : buffer_(std::move(buffer)) { free_[0] = buffer_.size(); }

Result<pipeline::SendBuffer> SendArena::acquire(size_t bytes, const std::atomic<bool>& cancel,
                                                const std::function<size_t()>& limit) {
  const size_t want = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  if (want > buffer_.size()) {
    return resource_exhausted(
        fmt::format("a {}-byte batch cannot fit the {}-byte memory budget (--memory-budget)", bytes,
                    buffer_.size()));
  }
  std::unique_lock lock(mu_);
  bool waited = false;
  while (true) {
    if (cancel.load()) return cancelled("the task is stopping");
    const size_t end = limit ? limit() : buffer_.size();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->first + want > end) break;  // free_ is by offset: none further fits
      if (it->second < want) continue;
      const size_t offset = it->first;
      const size_t rest = it->second - want;
      free_.erase(it);
      if (rest > 0) free_[offset + want] = rest;
      in_use_ += want;
      peak_ = std::max(peak_, in_use_);
      return pipeline::SendBuffer(std::span(buffer_.data() + offset, want), this, offset);
    }
    if (!waited) {
      waited = true;
      ++waits_;
    }
    // Bounded waits: a cancellation is noticed even if no buffer is freed.
    freed_.wait_for(lock, std::chrono::milliseconds(50));
  }
}

void SendArena::release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept {
  {
    std::lock_guard lock(mu_);
    size_t offset = token;
    size_t length = bytes.size();
    in_use_ -= length;
    auto next = free_.lower_bound(offset);
    if (next != free_.end() && next->first == offset + length) {
      length += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += length;
        freed_.notify_all();
        return;
      }
    }
    free_[offset] = length;
  }
  freed_.notify_all();
}

void SendArena::wake() {
  // Under the lock: a waiter between its attempt and its wait is not missed.
  std::lock_guard lock(mu_);
  freed_.notify_all();
}

size_t SendArena::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}
size_t SendArena::peak_bytes_in_use() const {
  std::lock_guard lock(mu_);
  return peak_;
}
uint64_t SendArena::waits() const {
  std::lock_guard lock(mu_);
  return waits_;
}

}  // namespace stoker::workers
