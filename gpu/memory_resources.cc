// Pinned (cudaHostAlloc) and device (cudaMalloc) memory resources. In a build
// without CUDA they do not exist and make_memory_resource() says so.
#include <fmt/format.h>

#include "gpu/cuda_status.h"
#include "stoker/landing.h"
#include "stoker/memory.h"

#ifdef STOKER_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace stoker {
namespace {

#ifdef STOKER_HAVE_CUDA
class CudaMemoryResource final : public MemoryResource {
 public:
  CudaMemoryResource(MemoryKind kind, int device) : kind_(kind), device_(device) {}
  MemoryKind kind() const override { return kind_; }
  int device() const override { return device_; }

  Result<Buffer> allocate(size_t bytes) override {
    if (bytes == 0) return invalid_argument("cannot allocate 0 bytes");
    STOKER_RETURN_IF_ERROR(
        cuda_status(cudaSetDevice(device_), fmt::format("selecting CUDA device {}", device_)));
    void* p = nullptr;
    if (kind_ == MemoryKind::kPinned) {
      STOKER_RETURN_IF_ERROR(cuda_status(cudaHostAlloc(&p, bytes, cudaHostAllocPortable),
                                         fmt::format("cudaHostAlloc of {} bytes", bytes)));
      return Buffer(p, bytes, kind_, -1, [](void* q) { cudaFreeHost(q); });
    }
    STOKER_RETURN_IF_ERROR(cuda_status(
        cudaMalloc(&p, bytes), fmt::format("cudaMalloc of {} bytes on device {}", bytes, device_)));
    return Buffer(p, bytes, kind_, device_, [](void* q) { cudaFree(q); });
  }

 private:
  MemoryKind kind_;
  int device_;
};
#endif

}  // namespace

Result<std::shared_ptr<MemoryResource>> make_memory_resource(MemoryKind kind, int device) {
  if (kind == MemoryKind::kHost) return host_memory_resource();
  if (device < 0) return invalid_argument(fmt::format("CUDA device {} does not exist", device));
#ifdef STOKER_HAVE_CUDA
  int count = 0;
  STOKER_RETURN_IF_ERROR(cuda_status(cudaGetDeviceCount(&count), "looking for a CUDA device"));
  if (device >= count) {
    return invalid_argument(
        fmt::format("CUDA device {} does not exist: this machine has {}", device, count));
  }
  return std::shared_ptr<MemoryResource>(std::make_shared<CudaMemoryResource>(kind, device));
#else
  return unsupported(
      fmt::format("{} memory needs CUDA, and this build of stoker has none (configured with "
                  "STOKER_CUDA=OFF or without nvcc)",
                  memory_kind_name(kind)));
#endif
}

}  // namespace stoker
