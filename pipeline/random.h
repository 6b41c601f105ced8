// Deterministic randomness. Every random choice a pipeline makes (shuffle
// order, crop boxes, flips, synthetic data) comes from a generator seeded by
// hashing the spec's seed with the coordinates of the choice (iteration,
// split, record), never from shared state: the same spec, seed and split give
// the same batches whatever the thread count. The distributions are written
// out here rather than taken from <random>, whose algorithms differ between
// standard libraries.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace stoker::pipeline {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A well-mixed 64-bit seed from several values; the order matters.
inline uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x243F6A8885A308D3ull;  // pi, so that {} and {0} differ from 0
  for (uint64_t p : parts) h = splitmix64(h ^ p);
  return h;
}

// What a generator is for: the same coordinates give independent streams
// for independent purposes.
enum class RandomPurpose : uint64_t {
  kShuffle = 0x5348554646ull,  // "SHUFF"
  kAugment = 0x4155474dull,    // "AUGM"
  kData = 0x44415441ull,       // "DATA"
};

__extension__ using Uint128 = unsigned __int128;

// xoshiro256** (Blackman and Vigna), seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& word : s_) {
      seed = splitmix64(seed);
      word = seed;
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform01() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in [a, b).
  double uniform(double a, double b) { return a + (b - a) * uniform01(); }
  // Uniform integer in [0, n), unbiased (Lemire's method); 0 when n == 0.
  uint64_t below(uint64_t n) {
    if (n == 0) return 0;
    Uint128 m = static_cast<Uint128>(next()) * n;
    auto low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<Uint128>(next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
  bool bernoulli(double p) { return uniform01() < p; }
  // Standard normal (Box-Muller; one of the pair is discarded).
  double normal() {
    double u = uniform01();
    while (u <= 0.0) u = uniform01();
    const double v = uniform01();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace stoker::pipeline
