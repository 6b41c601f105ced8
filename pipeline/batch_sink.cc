// SendBuffer leases and the heap-backed MemoryBudgetSink.
#include "pipeline/batch_sink.h"

#include <fmt/format.h>

#include <utility>

namespace stoker::pipeline {

SendBuffer& SendBuffer::operator=(SendBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    bytes_ = std::exchange(other.bytes_, {});
    owner_ = std::exchange(other.owner_, nullptr);
    token_ = std::exchange(other.token_, 0);
  }
  return *this;
}

void SendBuffer::reset() {
  if (owner_ != nullptr) owner_->release_send_buffer(bytes_, token_);
  owner_ = nullptr;
  bytes_ = {};
  token_ = 0;
}

std::span<std::byte> SendBuffer::detach() {
  owner_ = nullptr;
  token_ = 0;
  return std::exchange(bytes_, {});
}

MemoryBudgetSink::MemoryBudgetSink(size_t budget_bytes, Consumer consumer)
    : budget_(budget_bytes), consumer_(std::move(consumer)) {}

MemoryBudgetSink::~MemoryBudgetSink() = default;

Result<SendBuffer> MemoryBudgetSink::acquire(size_t bytes) {
  if (bytes > budget_) {
    return resource_exhausted(
        fmt::format("a batch of {} bytes can never fit the {}-byte memory budget", bytes, budget_));
  }
  std::unique_lock lock(mu_);
  bool waited = false;
  for (;;) {
    if (cancelled_) return cancelled("the sink was cancelled");
    // A free block that is large enough, the smallest such.
    size_t best = blocks_.size();
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const Block& b = blocks_[i];
      if (!b.in_use && b.size >= bytes && (best == blocks_.size() || b.size < blocks_[best].size)) {
        best = i;
      }
    }
    if (best < blocks_.size() && in_use_ + blocks_[best].size <= budget_) {
      Block& b = blocks_[best];
      b.in_use = true;
      in_use_ += b.size;
      peak_ = std::max(peak_, in_use_);
      return SendBuffer(std::span(b.memory.get(), bytes), this, best);
    }
    if (in_use_ + bytes <= budget_) {
      // Make room by dropping free blocks until a new one fits.
      for (size_t i = 0; i < blocks_.size() && allocated_ + bytes > budget_; ++i) {
        if (!blocks_[i].in_use && blocks_[i].memory) {
          allocated_ -= blocks_[i].size;
          blocks_[i].memory.reset();
          blocks_[i].size = 0;
        }
      }
      size_t slot = blocks_.size();
      for (size_t i = 0; i < blocks_.size(); ++i) {
        if (!blocks_[i].in_use && !blocks_[i].memory) {
          slot = i;
          break;
        }
      }
      if (slot == blocks_.size()) blocks_.emplace_back();
      Block& b = blocks_[slot];
      // new[] without value-initialisation: the pipeline writes every byte it sends.
      b.memory.reset(new (std::nothrow) std::byte[bytes]);
      if (!b.memory) return resource_exhausted(fmt::format("allocating {} bytes failed", bytes));
      b.size = bytes;
      b.in_use = true;
      allocated_ += bytes;
      in_use_ += bytes;
      peak_ = std::max(peak_, in_use_);
      return SendBuffer(std::span(b.memory.get(), bytes), this, slot);
    }
    if (!waited) {
      ++waits_;
      waited = true;
    }
    freed_.wait(lock);
  }
}

Status MemoryBudgetSink::emit(BatchDescriptor descriptor, SendBuffer buffer) {
  if (!consumer_) return Status::ok();
  return consumer_(std::move(descriptor), std::move(buffer));
}

void MemoryBudgetSink::cancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  freed_.notify_all();
}

size_t MemoryBudgetSink::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}

size_t MemoryBudgetSink::peak_bytes_in_use() const {
  std::lock_guard lock(mu_);
  return peak_;
}

uint64_t MemoryBudgetSink::acquire_waits() const {
  std::lock_guard lock(mu_);
  return waits_;
}

void MemoryBudgetSink::release_send_buffer(std::span<std::byte> /*bytes*/,
                                           uint64_t token) noexcept {
  {
    std::lock_guard lock(mu_);
    Block& b = blocks_[token];
    b.in_use = false;
    in_use_ -= b.size;
  }
  freed_.notify_all();
}

}  // namespace stoker::pipeline
