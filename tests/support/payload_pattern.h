// A payload pattern that depends on the batch sequence number, so a test can
// tell a batch that arrived intact from one that was mixed up or torn.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace stoker::testing {

inline std::byte pattern_byte(uint64_t sequence, size_t i) {
  return static_cast<std::byte>((sequence * 131 + i * 7 + (i >> 9)) & 0xFF);
}

inline void fill_pattern(std::span<std::byte> out, uint64_t sequence) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = pattern_byte(sequence, i);
}

inline bool has_pattern(std::span<const std::byte> in, uint64_t sequence) {
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != pattern_byte(sequence, i)) return false;
  }
  return true;
}

}  // namespace stoker::testing
