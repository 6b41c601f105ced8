// Memory kinds, owning buffers and the resources that allocate them (Arrow's
// MemoryManager idea, reduced to what landing and send pools need).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "stoker/result.h"

namespace stoker {

enum class MemoryKind : uint8_t {
  kHost = 0,    // pageable host memory
  kPinned = 1,  // page-locked host memory (cudaHostAlloc), DMA-able by the GPU
  kDevice = 2,  // GPU memory (cudaMalloc)
};

std::string_view memory_kind_name(MemoryKind kind);  // "host", "pinned", "device"
std::optional<MemoryKind> parse_memory_kind(std::string_view name);

// An owning, move-only allocation of one memory kind. The memory is freed by
// the function its resource supplied when the Buffer is destroyed.
class Buffer {
 public:
  using Deleter = std::function<void(void*)>;

  Buffer() = default;
  Buffer(void* data, size_t size, MemoryKind kind, int device, Deleter deleter)
      : data_(data), size_(size), kind_(kind), device_(device), deleter_(std::move(deleter)) {}
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      kind_ = other.kind_;
      device_ = other.device_;
      deleter_ = std::move(other.deleter_);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  std::byte* data() const { return static_cast<std::byte*>(data_); }
  size_t size() const { return size_; }
  MemoryKind kind() const { return kind_; }
  int device() const { return device_; }  // CUDA ordinal; -1 for host memory

 private:
  void reset() {
    if (data_ != nullptr && deleter_) deleter_(data_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data_ = nullptr;
  size_t size_ = 0;
  MemoryKind kind_ = MemoryKind::kHost;
  int device_ = -1;
  Deleter deleter_;
};

// Allocates Buffers of one kind. Thread-safe.
class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  virtual MemoryKind kind() const = 0;
  virtual int device() const { return -1; }
  // Page-aligned memory of at least `bytes` bytes.
  virtual Result<Buffer> allocate(size_t bytes) = 0;
};

// Pageable host memory. Always available. An allocation of kHugePageBytes
// or more starts on a huge-page boundary, so that all of it can be huge
// pages; every page is faulted in before allocate() returns.
std::shared_ptr<MemoryResource> host_memory_resource();
inline constexpr size_t kHugePageBytes = size_t{2} << 20;  // x86-64 transparent huge page

// A resource of `kind` on CUDA device `device` (ignored for host). Pinned and
// device memory need a CUDA build of stoker and a GPU; otherwise the error
// says which is missing. Implemented in stoker_gpu.
Result<std::shared_ptr<MemoryResource>> make_memory_resource(MemoryKind kind, int device = 0);

}  // namespace stoker
