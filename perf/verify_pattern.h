// The payload pattern of stoker-perf --verify, in one place for the tool
// that fills and checks it and for tests that read its batches themselves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace stoker::perf {

// The payload pattern of --verify: byte i of batch s is (s + i) mod 251 (a
// prime, so no power-of-two stride aliases it). The first 8 bytes carry the
// send timestamp. Filled and checked with memcpy/memcmp from a table, so
// verification runs at memory speed.
class VerifyPattern {
 public:
  explicit VerifyPattern(size_t max_bytes) : table_(max_bytes + 251) {
    for (size_t k = 0; k < table_.size(); ++k) table_[k] = static_cast<std::byte>(k % 251);
  }
  void fill(std::byte* p, size_t n, uint64_t sequence) const {
    if (n > 8) std::memcpy(p + 8, source(sequence), n - 8);
  }
  bool check(const std::byte* p, size_t n, uint64_t sequence) const {
    // A payload longer than the table cannot be checked: count it as corrupt.
    return n <= 8 || (n <= table_.size() - 251 && std::memcmp(p + 8, source(sequence), n - 8) == 0);
  }

 private:
  const std::byte* source(uint64_t sequence) const { return table_.data() + (sequence + 8) % 251; }
  std::vector<std::byte> table_;
};

}  // namespace stoker::perf
