// The batch descriptor: the fixed, versioned, little-endian header that
// travels in front of every batch and says what its payload holds. The byte
// layout is specified in docs/protocol.md; encode() and decode() are the only
// code that knows it. Fixed capacities keep the receive path allocation-free.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "stoker/dtype.h"
#include "stoker/result.h"
#include "stoker/status.h"

namespace stoker {

inline constexpr uint32_t kDescriptorMagic = 0x4B425453;  // "STBK" little-endian
inline constexpr uint16_t kDescriptorVersion = 2;
inline constexpr size_t kMaxTensors = 16;
inline constexpr size_t kMaxDims = 8;
inline constexpr size_t kMaxTensorName = 31;  // bytes, without the terminating NUL
inline constexpr size_t kDescriptorHeaderBytes = 64;
inline constexpr size_t kTensorEntryBytes = 120;

struct TensorDescriptor {
  std::array<char, kMaxTensorName + 1> name{};  // NUL-terminated
  DType dtype = DType::kUInt8;
  uint8_t ndim = 0;
  std::array<uint64_t, kMaxDims> shape{};
  uint64_t offset = 0;  // from the start of the payload
  uint64_t bytes = 0;   // == product(shape) * dtype_size(dtype)

  std::string_view name_view() const { return {name.data()}; }
  uint64_t element_count() const;
};

// Bits of BatchDescriptor::flags.
enum BatchFlag : uint32_t {
  // The last batch of its split: once it is delivered, the whole split is.
  kLastOfSplit = 1u << 0,
};
inline constexpr uint32_t kKnownBatchFlags = kLastOfSplit;

struct BatchDescriptor {
  uint64_t job_id = 0;
  uint64_t split_id = 0;
  uint64_t sequence = 0;   // the batch's index within its split
  uint64_t round = 0;      // coordinated reads: the round it belongs to
  uint64_t iteration = 0;  // the epoch of the job it belongs to
  uint32_t flags = 0;      // BatchFlag bits
  uint64_t payload_bytes = 0;
  uint16_t tensor_count = 0;
  std::array<TensorDescriptor, kMaxTensors> tensors{};

  // Appends a tensor laid out at `offset`; fails when the name is too long,
  // the shape has too many dimensions or the table is full.
  Status add_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape,
                    uint64_t offset);

  // Bytes encode() writes: kDescriptorHeaderBytes + tensor_count * kTensorEntryBytes.
  size_t encoded_size() const;

  // Writes the wire form into `out` (at least encoded_size() bytes) and returns
  // the bytes written. Fails on a descriptor that decode() would reject.
  Result<size_t> encode(std::span<std::byte> out) const;

  // The size of the encoded descriptor that starts `in`, read from its
  // header alone: for splitting a run of descriptors. Fails on a short
  // header or a tensor count above kMaxTensors.
  static Result<size_t> encoded_size_of(std::span<const std::byte> in);

  // Parses and validates the wire form: magic, version, table size, dtypes,
  // dimensions, names, and that every tensor lies inside payload_bytes.
  static Result<BatchDescriptor> decode(std::span<const std::byte> in);

  // Checks that the structure is self-consistent (what decode() checks, on an
  // in-memory descriptor).
  Status validate() const;
};

}  // namespace stoker
