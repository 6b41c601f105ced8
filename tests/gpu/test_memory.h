// Test support for gpu/: the "backend" a collation test runs on (host
// threads, or a GPU with device memory) and the memory that goes with it:
// upload a vector as a tensor, allocate an output pre-filled with a poison
// byte (so an element the kernel forgot shows), download a tensor.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gpu/stream.h"
#include "stoker/landing.h"
#include "stoker/memory.h"
#include "stoker/tensor.h"

namespace stoker::testing {

enum class Backend { kHost, kDevice };

inline std::string backend_name(Backend backend) {
  return backend == Backend::kHost ? "Host" : "Device";
}
inline void PrintTo(Backend backend, std::ostream* os) { *os << backend_name(backend); }

// Why `backend` cannot run here, or "" when it can.
inline std::string unavailable_reason(Backend backend) {
  if (backend == Backend::kHost) return "";
  if (!build_has_cuda()) return "this build of stoker has no CUDA";
  if (cuda_device_count() == 0) return "no CUDA device on this machine";
  return "";
}

inline constexpr std::byte kPoison{0xA5};

class TestMemory {
 public:
  explicit TestMemory(Backend backend) : backend_(backend) {
    const MemoryKind kind = backend == Backend::kHost ? MemoryKind::kHost : MemoryKind::kDevice;
    auto resource = make_memory_resource(kind, 0);
    EXPECT_TRUE(resource.is_ok()) << resource.status().to_string();
    if (resource.is_ok()) resource_ = *resource;
    if (backend == Backend::kDevice) {
      auto stream = CudaStream::create(0);
      EXPECT_TRUE(stream.is_ok()) << stream.status().to_string();
      if (stream.is_ok()) stream_ = std::move(*stream);
    }
  }

  StreamRef stream() const { return stream_.ref(); }
  MemoryKind kind() const { return resource_->kind(); }
  int device() const { return backend_ == Backend::kHost ? -1 : 0; }

  // A tensor holding `values`, `offset_bytes` past a page-aligned start (to
  // exercise unaligned paths).
  template <typename T>
  TensorView upload(const std::vector<T>& values, DType dtype, std::vector<int64_t> shape,
                    size_t offset_bytes = 0) {
    std::byte* data = allocate_bytes(values.size() * sizeof(T) + offset_bytes) + offset_bytes;
    copy(data, values.data(), values.size() * sizeof(T));
    return view(data, dtype, shape);
  }

  // An output tensor of `spec`, every byte kPoison.
  TensorView allocate(const TensorSpec& spec, size_t offset_bytes = 0) {
    std::byte* data = allocate_bytes(spec.byte_size() + offset_bytes) + offset_bytes;
    std::vector<std::byte> poison(spec.byte_size(), kPoison);
    copy(data, poison.data(), poison.size());
    return view(data, spec.dtype, spec.shape);
  }

  template <typename T>
  std::vector<T> download(const TensorView& tensor) {
    std::vector<T> out(tensor.byte_size() / sizeof(T));
    if (!out.empty()) copy(out.data(), tensor.data(), tensor.byte_size());
    return out;
  }

  // Waits for work enqueued on stream() (host work is done when its call returns).
  void finish() {
    if (backend_ == Backend::kHost) return;
    auto synced = synchronize_stream(stream());
    EXPECT_TRUE(synced.is_ok()) << synced.to_string();
  }

 private:
  std::byte* allocate_bytes(size_t bytes) {
    auto buffer = resource_->allocate(bytes == 0 ? 1 : bytes);
    EXPECT_TRUE(buffer.is_ok()) << buffer.status().to_string();
    buffers_.push_back(std::move(*buffer));
    return buffers_.back().data();
  }
  // Host memory is copied without CUDA, so the host backend runs in a CUDA
  // build on a machine without a GPU or driver.
  void copy(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    if (backend_ == Backend::kHost) {
      std::memcpy(dst, src, bytes);
      return;
    }
    auto copied = copy_async(dst, src, bytes, stream());
    EXPECT_TRUE(copied.is_ok()) << copied.to_string();
    auto synced = synchronize_stream(stream());
    EXPECT_TRUE(synced.is_ok()) << synced.to_string();
  }
  TensorView view(std::byte* data, DType dtype, const std::vector<int64_t>& shape) {
    auto v = TensorView::contiguous(data, dtype, shape, kind(), device());
    EXPECT_TRUE(v.is_ok()) << v.status().to_string();
    return *v;
  }

  Backend backend_;
  std::shared_ptr<MemoryResource> resource_;
  CudaStream stream_;
  std::vector<Buffer> buffers_;
};

// Base of the tests parameterised over Backend: skips where the backend
// cannot run, and gives each test its memory.
class BackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (auto reason = unavailable_reason(GetParam()); !reason.empty()) GTEST_SKIP() << reason;
    memory_ = std::make_unique<TestMemory>(GetParam());
  }
  TestMemory& memory() { return *memory_; }

 private:
  std::unique_ptr<TestMemory> memory_;
};

inline std::string backend_param_name(const ::testing::TestParamInfo<Backend>& info) {
  return backend_name(info.param);
}

}  // namespace stoker::testing
