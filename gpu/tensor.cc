// TensorView and TensorSpec: construction with every check that keeps later
// size arithmetic from overflowing, and descriptions for error messages.
#include "stoker/tensor.h"

#include <fmt/format.h>

#include <limits>

namespace stoker {
namespace {

// The bytes `shape` of `dtype` needs, or an error naming what is wrong.
Result<size_t> checked_byte_size(DType dtype, std::span<const int64_t> shape) {
  const size_t item = dtype_size(dtype);
  if (item == 0) {
    return invalid_argument(fmt::format("unknown dtype code {}", static_cast<unsigned>(dtype)));
  }
  if (shape.size() > static_cast<size_t>(kMaxTensorDims)) {
    return invalid_argument(
        fmt::format("{} dimensions, at most {} are allowed", shape.size(), kMaxTensorDims));
  }
  uint64_t bytes = item;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0) {
      return invalid_argument(fmt::format("dimension {} is negative ({})", d, shape[d]));
    }
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(shape[d]), &bytes) ||
        bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return invalid_argument(fmt::format("shape [{}] of {} overflows 63 bits of bytes",
                                          fmt::join(shape, ", "), dtype_name(dtype)));
    }
  }
  return static_cast<size_t>(bytes);
}

}  // namespace

int64_t TensorSpec::element_count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t TensorSpec::byte_size() const {
  return static_cast<size_t>(element_count()) * dtype_size(dtype);
}

Result<TensorView> TensorView::strided(void* data, DType dtype, std::span<const int64_t> shape,
                                       std::span<const int64_t> strides, MemoryKind memory,
                                       int device) {
  STOKER_ASSIGN_OR_RETURN(const size_t bytes, checked_byte_size(dtype, shape));
  if (strides.size() != shape.size()) {
    return invalid_argument(
        fmt::format("{} strides for {} dimensions", strides.size(), shape.size()));
  }
  if (data == nullptr && bytes != 0) {
    return invalid_argument(fmt::format("null data for {} bytes", bytes));
  }
  if (memory == MemoryKind::kDevice && device < 0) {
    return invalid_argument(fmt::format("device memory needs a GPU ordinal >= 0, not {}", device));
  }
  TensorView view;
  view.data_ = data;
  view.dtype_ = dtype;
  view.ndim_ = static_cast<int>(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    view.shape_[d] = shape[d];
    view.strides_[d] = strides[d];
  }
  view.memory_ = memory;
  view.device_ = memory == MemoryKind::kDevice ? device : -1;
  return view;
}

Result<TensorView> TensorView::contiguous(void* data, DType dtype, std::span<const int64_t> shape,
                                          MemoryKind memory, int device) {
  // Checked first: it bounds the products below.
  STOKER_RETURN_IF_ERROR(checked_byte_size(dtype, shape).status());
  std::array<int64_t, kMaxTensorDims> strides{};
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d] > 0 ? shape[d] : 1;
  }
  return strided(data, dtype, shape, std::span(strides.data(), shape.size()), memory, device);
}

Result<TensorView> TensorView::contiguous(void* data, const TensorSpec& spec, MemoryKind memory,
                                          int device) {
  return contiguous(data, spec.dtype, spec.shape, memory, device);
}

Result<TensorView> TensorView::of_descriptor(const TensorDescriptor& tensor, std::byte* payload,
                                             MemoryKind memory, int device) {
  if (tensor.ndim > kMaxDims) {
    return invalid_argument(fmt::format("tensor '{}' has {} dimensions, at most {} are allowed",
                                        tensor.name_view(), tensor.ndim, kMaxDims));
  }
  std::array<int64_t, kMaxTensorDims> shape{};
  for (size_t d = 0; d < tensor.ndim; ++d) {
    if (tensor.shape[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return invalid_argument(fmt::format("tensor '{}': dimension {} is too large ({})",
                                          tensor.name_view(), d, tensor.shape[d]));
    }
    shape[d] = static_cast<int64_t>(tensor.shape[d]);
  }
  auto view = contiguous(payload + tensor.offset, tensor.dtype,
                         std::span(shape.data(), tensor.ndim), memory, device);
  if (!view.is_ok())
    return view.status().with_context(fmt::format("tensor '{}'", tensor.name_view()));
  return view;
}

int64_t TensorView::element_count() const {
  int64_t n = 1;
  for (int d = 0; d < ndim_; ++d) n *= shape_[static_cast<size_t>(d)];
  return n;
}

size_t TensorView::byte_size() const {
  return static_cast<size_t>(element_count()) * dtype_size(dtype_);
}

bool TensorView::is_contiguous() const {
  if (element_count() == 0) return true;
  int64_t expected = 1;
  for (int d = ndim_; d-- > 0;) {
    const auto i = static_cast<size_t>(d);
    // A dimension of extent 1 may have any stride: it is never stepped over.
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

Result<TensorView> TensorView::rows(int64_t first, int64_t count) const {
  if (ndim_ == 0 || !is_contiguous()) {
    return invalid_argument(
        fmt::format("rows of {}: the view must be contiguous, of at least "
                    "one dimension",
                    to_string()));
  }
  if (first < 0 || count < 0 || first > shape_[0] - count) {
    return out_of_range(fmt::format("rows [{}, {}) of {}", first, first + count, to_string()));
  }
  std::array<int64_t, kMaxTensorDims> shape = shape_;
  shape[0] = count;
  const size_t row_bytes = shape_[0] == 0 ? 0 : byte_size() / static_cast<size_t>(shape_[0]);
  return contiguous(static_cast<std::byte*>(data_) + row_bytes * static_cast<size_t>(first), dtype_,
                    {shape.data(), static_cast<size_t>(ndim_)}, memory_, device_);
}

TensorSpec TensorView::spec() const {
  return TensorSpec{.dtype = dtype_, .shape = {shape().begin(), shape().end()}};
}

std::string TensorView::to_string() const {
  std::string where = memory_ == MemoryKind::kDevice
                          ? fmt::format("device memory of GPU {}", device_)
                          : fmt::format("{} memory", memory_kind_name(memory_));
  return fmt::format("{}[{}] in {}", dtype_name(dtype_), fmt::join(shape(), ", "), where);
}

}  // namespace stoker
