// DLPack export (stoker/dlpack.h). Each exported tensor owns one heap block:
// the managed struct, its shape and strides, and the keep-alive; the deleter
// frees the block, which drops the keep-alive.
#include "stoker/dlpack.h"

#include <fmt/format.h>

#include <array>
#include <new>
#include <utility>

namespace stoker {
namespace {

template <typename Managed>
struct Export {
  Managed managed{};
  std::array<int64_t, kMaxTensorDims> shape{};
  std::array<int64_t, kMaxTensorDims> strides{};
  std::shared_ptr<void> keep_alive;

  static void destroy(Managed* self) {
    // The deleter is the tensor's last use; it may run on any thread.
    delete static_cast<Export*>(self->manager_ctx);
  }
};

template <typename Managed>
Result<Export<Managed>*> make_export(const TensorView& view, std::shared_ptr<void> keep_alive,
                                     bool legacy) {
  if (view.empty() && view.element_count() != 0) {
    return invalid_argument("DLPack export of an empty view");
  }
  auto* out = new (std::nothrow) Export<Managed>();
  if (out == nullptr) return resource_exhausted("DLPack export: out of host memory");
  for (int d = 0; d < view.ndim(); ++d) {
    out->shape[static_cast<size_t>(d)] = view.dim(d);
    out->strides[static_cast<size_t>(d)] = view.strides()[static_cast<size_t>(d)];
  }
  out->keep_alive = std::move(keep_alive);
  DLTensor& t = out->managed.dl_tensor;
  // byte_offset stays 0 and data points at the first element: consumers
  // such as torch 1.13 ignore byte_offset.
  t.data = view.data();
  t.device = dlpack_device(view);
  t.ndim = view.ndim();
  t.dtype = dlpack_dtype(view.dtype(), legacy);
  t.shape = out->shape.data();
  t.strides = out->strides.data();
  t.byte_offset = 0;
  out->managed.manager_ctx = out;
  out->managed.deleter = &Export<Managed>::destroy;
  return out;
}

}  // namespace

DLDataType dlpack_dtype(DType dtype, bool legacy) {
  const auto type = [](uint8_t code, size_t bytes) {
    return DLDataType{code, static_cast<uint8_t>(bytes * 8), 1};
  };
  const size_t bytes = dtype_size(dtype);
  switch (dtype) {
    case DType::kInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
      return type(kDLInt, bytes);
    case DType::kUInt8:
    case DType::kUInt16:
    case DType::kUInt32:
    case DType::kUInt64:
      return type(kDLUInt, bytes);
    case DType::kFloat16:
    case DType::kFloat32:
    case DType::kFloat64:
      return type(kDLFloat, bytes);
    case DType::kBFloat16:
      return type(kDLBfloat, bytes);
    case DType::kBool:
      return legacy ? type(kDLUInt, 1) : type(kDLPackBoolCode, 1);
  }
  return type(kDLOpaqueHandle, bytes);
}

DLDevice dlpack_device(const TensorView& view) {
  switch (view.memory()) {
    case MemoryKind::kDevice:
      return DLDevice{kDLCUDA, view.device()};
    case MemoryKind::kPinned:
      return DLDevice{kDLCUDAHost, 0};
    case MemoryKind::kHost:
      break;
  }
  return DLDevice{kDLCPU, 0};
}

Result<DLPackTensor> to_dlpack(const TensorView& view, std::shared_ptr<void> keep_alive,
                               bool read_only) {
  STOKER_ASSIGN_OR_RETURN(auto* out, make_export<DLManagedTensorVersioned>(
                                         view, std::move(keep_alive), /*legacy=*/false));
  out->managed.version = DLPackVersion{kDLPackExportMajor, kDLPackExportMinor};
  out->managed.flags = read_only ? DLPACK_FLAG_BITMASK_READ_ONLY : 0;
  return DLPackTensor(&out->managed);
}

Result<LegacyDLPackTensor> to_legacy_dlpack(const TensorView& view,
                                            std::shared_ptr<void> keep_alive) {
  STOKER_ASSIGN_OR_RETURN(auto* out,
                          make_export<DLManagedTensor>(view, std::move(keep_alive), true));
  return LegacyDLPackTensor(&out->managed);
}

}  // namespace stoker
