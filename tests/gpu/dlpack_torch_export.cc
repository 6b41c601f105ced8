// A small shared library for dlpack_torch_test.py: exports known tensors as
// legacy DLManagedTensors (torch 1.13 takes only those) through stoker's
// DLPack export, and on a GPU a versioned one in device memory; it counts how
// many of their keep-alives have been dropped, so the test can prove that
// torch's release of a tensor ran our deleter.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "gpu/collate/numeric.h"
#include "gpu/stream.h"
#include "stoker/dlpack.h"
#include "stoker/memory.h"

namespace {

std::atomic<int>& released() {
  static std::atomic<int> count{0};
  return count;
}

// The memory of one exported tensor; its destruction is a released slot.
struct Storage {
  std::vector<std::byte> bytes;
  ~Storage() { released().fetch_add(1); }
};

// GPU memory of one exported tensor.
struct DeviceStorage {
  explicit DeviceStorage(stoker::Buffer b) : buffer(std::move(b)) {}
  stoker::Buffer buffer;
  ~DeviceStorage() { released().fetch_add(1); }
};

template <typename T>
std::shared_ptr<Storage> storage_of(const std::vector<T>& values) {
  auto storage = std::make_shared<Storage>();
  storage->bytes.resize(values.size() * sizeof(T));
  std::memcpy(storage->bytes.data(), values.data(), storage->bytes.size());
  return storage;
}

}  // namespace

extern "C" {

// Tensor `which`: 0 float32 [2, 3] = 0, 0.5, ..., 2.5; 1 int64 [4] = -2, -1, 0, 1;
// 2 bfloat16 [3] = 1, -2, 0.5; 3 bool [3] = 1, 0, 1 (uint8 in a legacy tensor).
// Stores the data address in *data. Returns null on failure.
__attribute__((visibility("default"))) DLManagedTensor* stoker_test_export(int which, void** data) {
  std::shared_ptr<Storage> storage;
  stoker::DType dtype = stoker::DType::kFloat32;
  std::vector<int64_t> shape;
  switch (which) {
    case 0:
      storage = storage_of(std::vector<float>{0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 2.5f});
      shape = {2, 3};
      break;
    case 1:
      storage = storage_of(std::vector<int64_t>{-2, -1, 0, 1});
      dtype = stoker::DType::kInt64;
      shape = {4};
      break;
    case 2:
      storage =
          storage_of(std::vector<uint16_t>{stoker::collate_detail::float_to_bfloat16_bits(1.0f),
                                           stoker::collate_detail::float_to_bfloat16_bits(-2.0f),
                                           stoker::collate_detail::float_to_bfloat16_bits(0.5f)});
      dtype = stoker::DType::kBFloat16;
      shape = {3};
      break;
    case 3:
      storage = storage_of(std::vector<uint8_t>{1, 0, 1});
      dtype = stoker::DType::kBool;
      shape = {3};
      break;
    default:
      return nullptr;
  }
  auto view = stoker::TensorView::contiguous(storage->bytes.data(), dtype, shape);
  if (!view.is_ok()) return nullptr;
  *data = view->data();
  auto exported = stoker::to_legacy_dlpack(*view, std::move(storage));
  if (!exported.is_ok()) return nullptr;
  return exported->release();
}

// A versioned kDLCUDA export of float32 [2, 3] = 0, 0.5, ..., 2.5 in the
// memory of GPU 0. Returns null (and sets *data to null) without a GPU.
__attribute__((visibility("default"))) DLManagedTensorVersioned* stoker_test_export_device(
    void** data) {
  *data = nullptr;
  if (stoker::cuda_device_count() == 0) return nullptr;
  const std::vector<float> values{0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 2.5f};
  auto resource = stoker::make_memory_resource(stoker::MemoryKind::kDevice, 0);
  if (!resource.is_ok()) return nullptr;
  auto buffer = (*resource)->allocate(values.size() * sizeof(float));
  if (!buffer.is_ok()) return nullptr;
  if (!stoker::copy_async(buffer->data(), values.data(), buffer->size(), stoker::StreamRef())
           .is_ok() ||
      !stoker::synchronize_stream(stoker::StreamRef()).is_ok()) {
    return nullptr;
  }
  auto storage = std::make_shared<DeviceStorage>(std::move(*buffer));
  const int64_t shape[] = {2, 3};
  auto view = stoker::TensorView::contiguous(storage->buffer.data(), stoker::DType::kFloat32, shape,
                                             stoker::MemoryKind::kDevice, 0);
  if (!view.is_ok()) return nullptr;
  auto exported = stoker::to_dlpack(*view, std::move(storage));
  if (!exported.is_ok()) return nullptr;
  *data = view->data();
  return exported->release();
}

__attribute__((visibility("default"))) int stoker_test_released() { return released().load(); }

}  // extern "C"
