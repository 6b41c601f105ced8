// TensorView: a non-owning, typed view of a tensor in host, pinned or device
// memory (data pointer, dtype, shape, strides, memory kind and GPU ordinal),
// and TensorSpec: the dtype and shape of a tensor still to be allocated.
// Views are what the collation functions (collate.h) read and write and what
// DLPack export (dlpack.h) hands out; whoever creates a view keeps its memory
// alive for as long as the view is used.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "stoker/batch_descriptor.h"
#include "stoker/dtype.h"
#include "stoker/memory.h"
#include "stoker/result.h"

namespace stoker {

// As many dimensions as a batch descriptor can carry.
inline constexpr int kMaxTensorDims = static_cast<int>(kMaxDims);

// The dtype and contiguous shape of a tensor to allocate (what the
// *_output_shape functions of collate.h return).
struct TensorSpec {
  DType dtype = DType::kUInt8;
  std::vector<int64_t> shape;

  int64_t element_count() const;
  size_t byte_size() const;  // element_count() * dtype_size(dtype)
  friend bool operator==(const TensorSpec&, const TensorSpec&) = default;
};

class TensorView {
 public:
  // An empty view: no data, zero dimensions, host memory.
  TensorView() = default;

  // A row-major view of `shape`. Fails on more than kMaxTensorDims
  // dimensions, a negative extent, a byte size that overflows, an unknown
  // dtype, a null `data` with a non-zero size, or device memory without a
  // GPU ordinal (>= 0). The ordinal of host and pinned memory is -1.
  static Result<TensorView> contiguous(void* data, DType dtype, std::span<const int64_t> shape,
                                       MemoryKind memory = MemoryKind::kHost, int device = -1);
  static Result<TensorView> contiguous(void* data, const TensorSpec& spec,
                                       MemoryKind memory = MemoryKind::kHost, int device = -1);
  // A view with explicit strides, in elements (not bytes), one per dimension.
  static Result<TensorView> strided(void* data, DType dtype, std::span<const int64_t> shape,
                                    std::span<const int64_t> strides,
                                    MemoryKind memory = MemoryKind::kHost, int device = -1);
  // The tensor a batch descriptor entry describes, inside a landed payload
  // that starts at `payload` and lies in `memory`.
  static Result<TensorView> of_descriptor(const TensorDescriptor& tensor, std::byte* payload,
                                          MemoryKind memory = MemoryKind::kHost, int device = -1);

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  int ndim() const { return ndim_; }
  std::span<const int64_t> shape() const { return {shape_.data(), static_cast<size_t>(ndim_)}; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  // Strides in elements, one per dimension.
  std::span<const int64_t> strides() const { return {strides_.data(), static_cast<size_t>(ndim_)}; }
  MemoryKind memory() const { return memory_; }
  int device() const { return device_; }  // GPU ordinal of device memory; -1 otherwise

  int64_t element_count() const;
  // element_count() * dtype_size(dtype()): the bytes a contiguous view spans.
  size_t byte_size() const;
  bool is_contiguous() const;
  bool empty() const { return data_ == nullptr; }
  TensorSpec spec() const;
  // Rows [first, first + count) of the first dimension of a contiguous view:
  // a view of the same memory (e.g. a slice of a batch's samples).
  Result<TensorView> rows(int64_t first, int64_t count) const;

  // "uint8[4, 32, 32, 3] in device memory of GPU 0", for error messages.
  std::string to_string() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kUInt8;
  int ndim_ = 0;
  std::array<int64_t, kMaxTensorDims> shape_{};
  std::array<int64_t, kMaxTensorDims> strides_{};
  MemoryKind memory_ = MemoryKind::kHost;
  int device_ = -1;
};

}  // namespace stoker
