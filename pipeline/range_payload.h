// The payload of the `range` source: element i's `element_bytes` bytes are a
// deterministic function of i that consumers can verify (docs/pipelines.md):
//   w_k = splitmix64(i ^ (k * 0xD1B54A32D192ED03))   for k = 0, 1, ...
//   payload byte j = byte (j % 8) of w_(j / 8), little-endian
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "pipeline/random.h"

namespace stoker::pipeline {

inline uint64_t range_payload_word(uint64_t index, uint64_t k) {
  return splitmix64(index ^ (k * 0xD1B54A32D192ED03ull));
}

inline void fill_range_payload(uint64_t index, std::span<std::byte> out) {
  const size_t words = out.size() / 8;
  for (size_t k = 0; k < words; ++k) {
    const uint64_t w = range_payload_word(index, k);
    for (size_t b = 0; b < 8; ++b) out[8 * k + b] = static_cast<std::byte>(w >> (8 * b));
  }
  if (const size_t tail = out.size() % 8; tail != 0) {
    const uint64_t w = range_payload_word(index, words);
    for (size_t b = 0; b < tail; ++b) out[8 * words + b] = static_cast<std::byte>(w >> (8 * b));
  }
}

inline uint8_t range_payload_byte(uint64_t index, uint64_t j) {
  return static_cast<uint8_t>(range_payload_word(index, j / 8) >> (8 * (j % 8)));
}

}  // namespace stoker::pipeline
