// Arithmetic the collation kernels share, written once for the GPU and the
// host (STOKER_HD = __host__ __device__ under nvcc, nothing under g++), so
// both produce the same bits: float <-> float16/bfloat16 conversions with
// round-to-nearest-even done on integer bits, float multiply and add that
// nvcc may not fuse into an FMA, the SplitMix64 flip hash, and 4-wide loads
// and stores that become single vector instructions on the GPU.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define STOKER_HD __host__ __device__
#define STOKER_HD_INLINE __host__ __device__ __forceinline__
#else
#define STOKER_HD
#define STOKER_HD_INLINE inline
#endif

namespace stoker::collate_detail {

STOKER_HD_INLINE uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

STOKER_HD_INLINE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// a * b and a + b rounded to nearest, never contracted into an FMA: nvcc
// fuses a * b + c by default, the host compiler (ISO C++, -ffp-contract=off)
// does not, and the two would round differently.
STOKER_HD_INLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
STOKER_HD_INLINE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// float32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
STOKER_HD_INLINE uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);  // a carry into the exponent is right
}

// float32 -> IEEE float16 bits, round to nearest even, overflow to infinity,
// float16 subnormals produced exactly.
STOKER_HD_INLINE uint16_t float_to_float16_bits(float f) {
  const uint32_t u = float_bits(f);
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t magnitude = u & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);   // NaN
  if (magnitude >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 2^16: inf
  if (magnitude >= 0x38800000u) {
    // Normal in float16: rebias the exponent (127 -> 15) and round off 13 bits.
    // Rounding up from 65504 carries into the exponent and gives infinity.
    const uint32_t rebiased = magnitude - 0x38000000u;
    const uint32_t rounding = 0xFFFu + ((rebiased >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rebiased + rounding) >> 13));
  }
  const uint32_t exponent = magnitude >> 23;
  if (exponent < 102) return sign;  // below 2^-25: rounds to zero
  // Subnormal in float16: the value is m * 2^-24 with m = mantissa >> shift.
  const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exponent;  // 14 .. 24
  uint32_t m = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (m & 1u) != 0)) ++m;  // m == 1024 is the smallest normal
  return static_cast<uint16_t>(sign | m);
}

STOKER_HD_INLINE float bfloat16_bits_to_float(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}

STOKER_HD_INLINE float float16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return bits_float(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return bits_float(sign);
  // Subnormal: normalise the mantissa into float32's implicit-one form.
  uint32_t e = 113;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return bits_float(sign | (e << 23) | ((mantissa & 0x3FFu) << 13));
}

// Division by a divisor fixed at launch, without a divide instruction (20+
// instructions on the GPU, tens of cycles on the host, once or twice per work
// item otherwise): q = (n * magic) >> shift, Granlund and Montgomery's
// round-up method, exact for every n < 2^31 (the narrow index range of
// parallel_for, where n * magic < 2^64). Wider indices divide plainly.
struct FastDivider {
  uint64_t divisor = 1;
  uint64_t magic = (uint64_t{1} << 32) + 1;
  uint32_t shift = 32;

  FastDivider() = default;
  explicit FastDivider(uint64_t d) : divisor(d) {
    if (d == 0) return;  // an empty dimension: there are no items to divide
    uint32_t log2_ceil = 0;
    while ((uint64_t{1} << log2_ceil) < d) ++log2_ceil;
    shift = 32 + log2_ceil;
    // Divisors of 2^32 and more never meet a narrow index: they divide plainly.
    magic = log2_ceil >= 32 ? 0 : (uint64_t{1} << shift) / d + 1;
  }

  template <typename Index>
  STOKER_HD_INLINE Index divide(Index n) const {
    if constexpr (sizeof(Index) == 4) {
      return static_cast<Index>((uint64_t{n} * magic) >> shift);
    } else {
      return static_cast<Index>(n / divisor);
    }
  }
};

// SplitMix64 of the sample's global index (collate.h: image_sample_flipped).
STOKER_HD_INLINE uint64_t flip_hash(uint64_t seed, uint64_t sample) {
  uint64_t z = seed + (sample + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// threshold = llround(p * 2^24): 0 never flips, 2^24 always does.
STOKER_HD_INLINE bool flip_sample(uint64_t seed, uint64_t sample, uint32_t threshold) {
  return (flip_hash(seed, sample) >> 40) < threshold;
}

// One 32-bit load from 4-byte-aligned memory.
STOKER_HD_INLINE uint32_t load_u32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(p);
#else
  uint32_t u;
  std::memcpy(&u, p, sizeof u);
  return u;
#endif
}

// Stores v[0..3] to dst, which is aligned to 4 * sizeof(T): one vector store
// of 4, 8 or 16 bytes on the GPU (two for 8-byte T). Written in PTX because
// the compiler splits a plain vector store into scalar ones where it loses
// track of the alignment (it did for NCHW planes).
template <typename T>
STOKER_HD_INLINE void store4(T* dst, const T (&v)[4]) {
#if defined(__CUDA_ARCH__)
  constexpr size_t kWords = sizeof(T);  // 4 values of sizeof(T) bytes, in 4-byte words
  uint32_t w[kWords];
  memcpy(w, v, sizeof v);
  if constexpr (kWords == 1) {
    asm volatile("st.global.b32 [%0], %1;" ::"l"(dst), "r"(w[0]));
  } else if constexpr (kWords == 2) {
    asm volatile("st.global.v2.b32 [%0], {%1, %2};" ::"l"(dst), "r"(w[0]), "r"(w[1]));
  } else if constexpr (kWords == 4) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(w[0]), "r"(w[1]),
                 "r"(w[2]), "r"(w[3]));
  } else {
    static_assert(kWords == 8);
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(w[0]), "r"(w[1]),
                 "r"(w[2]), "r"(w[3]));
    asm volatile("st.global.v4.b32 [%0+16], {%1, %2, %3, %4};" ::"l"(dst), "r"(w[4]), "r"(w[5]),
                 "r"(w[6]), "r"(w[7]));
  }
#else
  std::memcpy(dst, v, sizeof v);
#endif
}

// Loads 4 consecutive T from global memory that is aligned to 4 * sizeof(T)
// and not written by the same kernel, as one vector load on a GPU (through
// the read-only cache).
template <typename T>
STOKER_HD_INLINE void load4(const T* src, T (&v)[4]) {
#if defined(__CUDA_ARCH__)
  constexpr size_t kWords = sizeof(T);  // 4 values of sizeof(T) bytes, in 4-byte words
  uint32_t w[kWords];
  if constexpr (kWords == 1) {
    asm volatile("ld.global.nc.b32 %0, [%1];" : "=r"(w[0]) : "l"(src));
  } else if constexpr (kWords == 2) {
    asm volatile("ld.global.nc.v2.b32 {%0, %1}, [%2];" : "=r"(w[0]), "=r"(w[1]) : "l"(src));
  } else {
    static_assert(kWords == 4);
    asm volatile("ld.global.nc.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "l"(src));
  }
  memcpy(v, w, sizeof v);
#else
  std::memcpy(v, src, sizeof v);
#endif
}

}  // namespace stoker::collate_detail
