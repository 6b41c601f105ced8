// Independent references for the collation tests: float16/bfloat16 decoding
// and round-to-nearest-even by searching the format's ordered values (no bit
// tricks shared with gpu/collate/numeric.h), and the SplitMix64 flip rule as
// collate.h documents it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace stoker::testing {

struct HalfFormat {
  int mantissa_bits;    // 10 for float16, 7 for bfloat16
  int exponent_bias;    // 15, 127
  uint16_t max_finite;  // bits of the largest finite value
  uint16_t infinity;
};
inline constexpr HalfFormat kFloat16Format{10, 15, 0x7BFF, 0x7C00};
inline constexpr HalfFormat kBFloat16Format{7, 127, 0x7F7F, 0x7F80};

// The value of `bits` in `format`.
inline double decode_half(uint16_t bits, const HalfFormat& f) {
  const double sign = (bits & 0x8000) != 0 ? -1.0 : 1.0;
  const int magnitude = bits & 0x7FFF;
  const int exponent = magnitude >> f.mantissa_bits;
  const int mantissa = magnitude & ((1 << f.mantissa_bits) - 1);
  const int max_exponent = (0x7FFF >> f.mantissa_bits);
  if (exponent == max_exponent) return mantissa == 0 ? sign * INFINITY : NAN;
  if (exponent == 0) {
    return sign * std::ldexp(mantissa, 1 - f.exponent_bias - f.mantissa_bits);
  }
  return sign * std::ldexp((1 << f.mantissa_bits) + mantissa,
                           exponent - f.exponent_bias - f.mantissa_bits);
}

// `value` rounded to nearest, ties to even, overflowing to infinity.
inline uint16_t round_half(double value, const HalfFormat& f) {
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  const double a = std::fabs(value);
  // Largest non-negative bits whose value is <= a (values grow with bits).
  int lo = 0, hi = f.max_finite;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (decode_half(static_cast<uint16_t>(mid), f) <= a) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const double below = decode_half(static_cast<uint16_t>(lo), f);
  // Above max_finite the next value is where the exponent range would continue.
  const double above = lo == f.max_finite
                           ? std::ldexp(1.0, (0x7FFF >> f.mantissa_bits) - f.exponent_bias)
                           : decode_half(static_cast<uint16_t>(lo + 1), f);
  int chosen = lo;
  if (a - below > above - a || (a - below == above - a && (lo & 1) != 0)) chosen = lo + 1;
  if (chosen > f.max_finite) return static_cast<uint16_t>(sign | f.infinity);
  return static_cast<uint16_t>(sign | chosen);
}

// Distance from `bits` to `exact`, in units of `format`'s spacing at `exact`.
inline double half_error_in_ulps(uint16_t bits, double exact, const HalfFormat& f) {
  const uint16_t nearest = round_half(exact, f);
  const int magnitude = nearest & 0x7FFF;
  const double here = std::fabs(decode_half(static_cast<uint16_t>(magnitude), f));
  const double next = decode_half(static_cast<uint16_t>(magnitude + 1), f);
  return std::fabs(decode_half(bits, f) - exact) / (next - here);
}

// collate.h, image_sample_flipped.
inline bool reference_flip(uint64_t seed, uint64_t sample, double probability) {
  uint64_t z = seed + (sample + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (z >> 40) < static_cast<uint64_t>(std::llround(probability * 16777216.0));
}

}  // namespace stoker::testing
