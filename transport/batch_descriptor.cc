// Encoding, decoding and validation of the batch descriptor (docs/protocol.md).
// decode() runs on the receive path for every batch from every sender, so it
// trusts nothing: each field is checked before it is used, and arithmetic on
// sizes is overflow-checked.
#include "stoker/batch_descriptor.h"

#include <fmt/format.h>

#include <cstring>

#include "common/byte_codec.h"

namespace stoker {
namespace {

// a * b, or false on overflow.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

Status validate_tensor(const TensorDescriptor& t, size_t index, uint64_t payload_bytes) {
  const auto where = [&] { return fmt::format("tensor {} ('{}')", index, t.name_view()); };
  if (t.name[kMaxTensorName] != '\0' || t.name[0] == '\0') {
    return protocol_error(fmt::format("tensor {}: name is empty or not NUL-terminated", index));
  }
  const size_t item = dtype_size(t.dtype);
  if (item == 0) {
    return protocol_error(
        fmt::format("{}: unknown dtype code {}", where(), static_cast<unsigned>(t.dtype)));
  }
  if (t.ndim > kMaxDims) {
    return protocol_error(
        fmt::format("{}: {} dimensions, at most {} are allowed", where(), t.ndim, kMaxDims));
  }
  uint64_t bytes = item;
  for (size_t d = 0; d < t.ndim; ++d) {
    if (!checked_mul(bytes, t.shape[d], &bytes)) {
      return protocol_error(fmt::format("{}: shape overflows 64 bits", where()));
    }
  }
  for (size_t d = t.ndim; d < kMaxDims; ++d) {
    if (t.shape[d] != 0) {
      return protocol_error(fmt::format("{}: dimension {} set beyond ndim {}", where(), d, t.ndim));
    }
  }
  if (bytes != t.bytes) {
    return protocol_error(
        fmt::format("{}: {} bytes declared but shape and dtype give {}", where(), t.bytes, bytes));
  }
  if (t.offset % item != 0) {
    return protocol_error(fmt::format("{}: offset {} is not aligned to its {}-byte elements",
                                      where(), t.offset, item));
  }
  if (t.offset > payload_bytes || t.bytes > payload_bytes - t.offset) {
    return protocol_error(fmt::format("{}: bytes [{}, +{}) lie beyond the {}-byte payload", where(),
                                      t.offset, t.bytes, payload_bytes));
  }
  return Status::ok();
}

}  // namespace

uint64_t TensorDescriptor::element_count() const {
  uint64_t n = 1;
  for (size_t d = 0; d < ndim && d < kMaxDims; ++d) n *= shape[d];
  return n;
}

Status BatchDescriptor::add_tensor(std::string_view name, DType dtype,
                                   std::span<const uint64_t> shape, uint64_t offset) {
  if (tensor_count >= kMaxTensors) {
    return invalid_argument(fmt::format("a batch holds at most {} tensors", kMaxTensors));
  }
  if (name.empty() || name.size() > kMaxTensorName) {
    return invalid_argument(
        fmt::format("tensor name '{}' must have 1 to {} bytes", name, kMaxTensorName));
  }
  if (shape.size() > kMaxDims) {
    return invalid_argument(fmt::format("tensor '{}' has {} dimensions, at most {} are allowed",
                                        name, shape.size(), kMaxDims));
  }
  TensorDescriptor& t = tensors[tensor_count];
  t = TensorDescriptor{};
  std::memcpy(t.name.data(), name.data(), name.size());
  t.dtype = dtype;
  t.ndim = static_cast<uint8_t>(shape.size());
  uint64_t bytes = dtype_size(dtype);
  for (size_t d = 0; d < shape.size(); ++d) {
    t.shape[d] = shape[d];
    if (!checked_mul(bytes, shape[d], &bytes)) {
      return invalid_argument(fmt::format("tensor '{}': shape overflows 64 bits", name));
    }
  }
  t.offset = offset;
  t.bytes = bytes;
  ++tensor_count;
  return Status::ok();
}

size_t BatchDescriptor::encoded_size() const {
  return kDescriptorHeaderBytes + size_t{tensor_count} * kTensorEntryBytes;
}

Status BatchDescriptor::validate() const {
  if (tensor_count > kMaxTensors) {
    return protocol_error(
        fmt::format("{} tensors declared, at most {} are allowed", tensor_count, kMaxTensors));
  }
  if ((flags & ~kKnownBatchFlags) != 0) {
    return protocol_error(fmt::format("unknown flag bits {:#x}", flags & ~kKnownBatchFlags));
  }
  for (size_t i = 0; i < tensor_count; ++i) {
    STOKER_RETURN_IF_ERROR(validate_tensor(tensors[i], i, payload_bytes));
  }
  return Status::ok();
}

Result<size_t> BatchDescriptor::encode(std::span<std::byte> out) const {
  STOKER_RETURN_IF_ERROR(validate().with_context("refusing to encode an invalid descriptor"));
  wire::ByteWriter w(out);
  w.put(kDescriptorMagic);
  w.put(kDescriptorVersion);
  w.put(tensor_count);
  w.put(job_id);
  w.put(split_id);
  w.put(sequence);
  w.put(round);
  w.put(payload_bytes);
  w.put(iteration);
  w.put(flags);
  w.put(uint32_t{0});  // reserved
  for (size_t i = 0; i < tensor_count; ++i) {
    const TensorDescriptor& t = tensors[i];
    w.put_fixed_string(t.name_view(), kMaxTensorName + 1);
    w.put(static_cast<uint8_t>(t.dtype));
    w.put(t.ndim);
    w.put(uint16_t{0});
    w.put(uint32_t{0});
    w.put(t.offset);
    w.put(t.bytes);
    for (uint64_t dim : t.shape) w.put(dim);
  }
  if (w.overflowed()) {
    return invalid_argument(
        fmt::format("descriptor needs {} bytes, the buffer has {}", encoded_size(), out.size()));
  }
  return w.size();
}

Result<size_t> BatchDescriptor::encoded_size_of(std::span<const std::byte> in) {
  if (in.size() < kDescriptorHeaderBytes) {
    return protocol_error(fmt::format("descriptor of {} bytes is shorter than its {}-byte header",
                                      in.size(), kDescriptorHeaderBytes));
  }
  wire::ByteReader r(in.subspan(6, 2));  // after magic (4) and version (2)
  const auto tensor_count = r.get<uint16_t>();
  if (tensor_count > kMaxTensors) {
    return protocol_error(
        fmt::format("{} tensors declared, at most {} are allowed", tensor_count, kMaxTensors));
  }
  return kDescriptorHeaderBytes + size_t{tensor_count} * kTensorEntryBytes;
}

Result<BatchDescriptor> BatchDescriptor::decode(std::span<const std::byte> in) {
  wire::ByteReader r(in);
  const auto magic = r.get<uint32_t>();
  const auto version = r.get<uint16_t>();
  if (r.underflowed()) {
    return protocol_error(fmt::format("descriptor of {} bytes is shorter than its {}-byte header",
                                      in.size(), kDescriptorHeaderBytes));
  }
  if (magic != kDescriptorMagic) {
    return protocol_error(
        fmt::format("descriptor magic {:#010x} is not {:#010x}", magic, kDescriptorMagic));
  }
  if (version != kDescriptorVersion) {
    return Status(StatusCode::kVersionMismatch,
                  fmt::format("descriptor version {} is not supported (this build speaks {})",
                              version, kDescriptorVersion));
  }
  BatchDescriptor d;
  d.tensor_count = r.get<uint16_t>();
  d.job_id = r.get<uint64_t>();
  d.split_id = r.get<uint64_t>();
  d.sequence = r.get<uint64_t>();
  d.round = r.get<uint64_t>();
  d.payload_bytes = r.get<uint64_t>();
  d.iteration = r.get<uint64_t>();
  d.flags = r.get<uint32_t>();
  const auto reserved = r.get<uint32_t>();
  if (r.underflowed()) {
    return protocol_error(fmt::format("descriptor of {} bytes is shorter than its {}-byte header",
                                      in.size(), kDescriptorHeaderBytes));
  }
  if (reserved != 0) return protocol_error("descriptor header: reserved bytes are not zero");
  if (d.tensor_count > kMaxTensors) {
    return protocol_error(
        fmt::format("{} tensors declared, at most {} are allowed", d.tensor_count, kMaxTensors));
  }
  if (in.size() != d.encoded_size()) {
    return protocol_error(fmt::format("descriptor of {} bytes, but {} tensors need {}", in.size(),
                                      d.tensor_count, d.encoded_size()));
  }
  for (size_t i = 0; i < d.tensor_count; ++i) {
    TensorDescriptor& t = d.tensors[i];
    auto name = r.get_bytes(kMaxTensorName + 1);
    std::memcpy(t.name.data(), name.data(), name.size());
    t.dtype = static_cast<DType>(r.get<uint8_t>());
    t.ndim = r.get<uint8_t>();
    const auto reserved16 = r.get<uint16_t>();
    const auto reserved32 = r.get<uint32_t>();
    if (reserved16 != 0 || reserved32 != 0) {
      return protocol_error(fmt::format("tensor {}: reserved bytes are not zero", i));
    }
    t.offset = r.get<uint64_t>();
    t.bytes = r.get<uint64_t>();
    for (uint64_t& dim : t.shape) dim = r.get<uint64_t>();
  }
  STOKER_RETURN_IF_ERROR(d.validate());
  return d;
}

}  // namespace stoker
