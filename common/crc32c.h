// CRC32C (Castagnoli), as framed records use it: the journal's records and
// TFRecord files. Hardware-accelerated (SSE4.2) where the CPU has it, a
// table-driven fallback elsewhere; both give the same values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace stoker {

// CRC32C of `data`, continuing from `crc` (0 to start).
uint32_t crc32c_extend(uint32_t crc, std::span<const std::byte> data);
inline uint32_t crc32c(std::span<const std::byte> data) { return crc32c_extend(0, data); }

// TFRecord's "masked" CRC: stored CRCs are rotated and offset so that a CRC
// computed over bytes that themselves hold CRCs stays well distributed.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t unmask_crc32c(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace stoker

namespace stoker::detail {
// The table-driven implementation, whatever the CPU: for tests that compare it
// with the accelerated one.
uint32_t crc32c_extend_portable(uint32_t crc, const uint8_t* data, size_t size);
}  // namespace stoker::detail
