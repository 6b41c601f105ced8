// BufferPool: reuse by size, ordered by events on the reader's stream.
#include "client/buffer_pool.h"

#include <spdlog/spdlog.h>

namespace stoker::detail {

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::move(other.pool_);
    buffer_ = std::move(other.buffer_);
    released_ = std::move(other.released_);
  }
  return *this;
}

void PooledBuffer::reset() {
  if (pool_ && buffer_.data() != nullptr)
    pool_->give_back(std::move(buffer_), std::move(released_));
  pool_.reset();
  buffer_ = Buffer();
  released_.reset();
}

Result<PooledBuffer> BufferPool::acquire(size_t bytes, StreamRef user) {
  bytes = std::max<size_t>(bytes, 1);
  {
    std::lock_guard lock(mu_);
    // The smallest free buffer that fits, unless it wastes more than half.
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= 2 * bytes) {
      Free found = std::move(it->second);
      free_.erase(it);
      if (found.released && user != stream_) {
        STOKER_RETURN_IF_ERROR(found.released->enqueue_wait(user));
      }
      return PooledBuffer(shared_from_this(), std::move(found.buffer), std::move(found.released));
    }
  }
  STOKER_ASSIGN_OR_RETURN(auto buffer, resource_->allocate(bytes));
  std::lock_guard lock(mu_);
  allocated_ += buffer.size();
  return PooledBuffer(shared_from_this(), std::move(buffer), std::nullopt);
}

void BufferPool::give_back(Buffer buffer, std::optional<CudaEvent> released) {
  Free f{std::move(buffer), std::move(released)};
  // The point on the pool's stream after which the buffer's old contents are
  // no longer read. In a build without CUDA work is synchronous: no event.
  if (cuda_device_count() > 0 && resource_->kind() != MemoryKind::kHost) {
    if (!f.released) {
      auto event = CudaEvent::create(resource_->device() < 0 ? 0 : resource_->device());
      if (event.is_ok()) f.released = std::move(event).value();
    }
    if (f.released && !f.released->record(stream_).is_ok()) f.released.reset();
  }
  std::lock_guard lock(mu_);
  const size_t size = f.buffer.size();
  free_.emplace(size, std::move(f));
}

size_t BufferPool::allocated_bytes() const {
  std::lock_guard lock(mu_);
  return allocated_;
}

}  // namespace stoker::detail
