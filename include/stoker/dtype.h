// Element types of batch tensors. The numeric codes are part of the wire
// format (docs/protocol.md): never renumber, only append.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace stoker {

enum class DType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kUInt16 = 3,
  kInt16 = 4,
  kUInt32 = 5,
  kInt32 = 6,
  kUInt64 = 7,
  kInt64 = 8,
  kFloat16 = 9,
  kBFloat16 = 10,
  kFloat32 = 11,
  kFloat64 = 12,
  kBool = 13,
};

// Size of one element in bytes; 0 for a code that is not a DType.
size_t dtype_size(DType dtype);
// "uint8", "bfloat16", ...; "unknown" for a code that is not a DType.
std::string_view dtype_name(DType dtype);
// The DType with this wire code, if there is one.
std::optional<DType> dtype_from_code(uint8_t code);

}  // namespace stoker
