// Bilinear (antialiased) resampling. The weight computation follows Pillow
// 9's precompute_coeffs() expression by expression (including its truncating
// casts), then normalizes to 14-bit fixed point. The two passes exist twice:
// portable loops, and AVX2 ones used when the CPU has AVX2 (chosen per
// Resampler); both compute exactly the same integers.
#include "pipeline/resample.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

namespace stoker::pipeline {
namespace {

constexpr int kWeightBits = 14;  // weight 1.0 = 16384 still fits an int16
constexpr int32_t kHalf = 1 << (kWeightBits - 1);

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

void compute_axis(int in_size, double in0, double in1, int out_size, Resampler::Axis& axis) {
  constexpr double kSupport = 1.0;  // the bilinear filter's
  const double scale = (in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kSupport * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.ksize = ksize;
  axis.weights.assign(static_cast<size_t>(out_size) * static_cast<size_t>(ksize), 0);
  axis.first.resize(static_cast<size_t>(out_size));
  axis.count.resize(static_cast<size_t>(out_size));
  std::vector<double> k(static_cast<size_t>(ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    int32_t* out = &axis.weights[static_cast<size_t>(xx) * static_cast<size_t>(ksize)];
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<size_t>(x)];
      if (ww != 0.0) w /= ww;
      out[x] = w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kWeightBits))
                     : static_cast<int32_t>(0.5 + w * (1 << kWeightBits));
    }
    axis.first[static_cast<size_t>(xx)] = xmin;
    axis.count[static_cast<size_t>(xx)] = std::max(xmax, 0);
  }
}

inline uint8_t clip8(int32_t v) {
  v >>= kWeightBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---- portable passes ----------------------------------------------------

// Each output row is a weighted sum of whole input rows.
void vertical_pass_portable(const ImageView& src, const Resampler::Axis& axis, uint32_t out_h,
                            uint8_t* out, size_t out_stride) {
  const size_t row_bytes = size_t{src.width} * src.channels;
  const int ksize = axis.ksize;
  for (uint32_t yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &axis.weights[size_t{yy} * static_cast<size_t>(ksize)];
    const uint8_t* base = src.row(static_cast<uint32_t>(axis.first[yy]));
    const int n = axis.count[yy];
    uint8_t* o = out + size_t{yy} * out_stride;
    for (size_t x = 0; x < row_bytes; ++x) {
      int32_t acc = kHalf;
      for (int y = 0; y < n; ++y) acc += base[static_cast<size_t>(y) * src.stride + x] * k[y];
      o[x] = clip8(acc);
    }
  }
}

// One output pixel of the horizontal pass: `c` channels from pixels of `pb`
// bytes.
inline void horizontal_pixel(const uint8_t* p, const int32_t* k, int n, size_t pb, uint32_t c,
                             uint8_t* d) {
  for (uint32_t ch = 0; ch < c; ++ch) {
    int32_t acc = kHalf;
    for (int t = 0; t < n; ++t) acc += p[static_cast<size_t>(t) * pb + ch] * k[t];
    d[ch] = clip8(acc);
  }
}

// Each output pixel is a weighted sum of input pixels of its row.
void horizontal_pass_portable(const ImageView& src, const Resampler::Axis& axis,
                              const MutableImageView& dst, bool flip) {
  const int ksize = axis.ksize;
  const uint32_t c = dst.channels;
  const size_t pb = src.channels;
  for (uint32_t y = 0; y < dst.height; ++y) {
    const uint8_t* in = src.row(y);
    uint8_t* o = dst.row(y);
    for (uint32_t xx = 0; xx < dst.width; ++xx) {
      horizontal_pixel(in + static_cast<size_t>(axis.first[xx]) * pb,
                       &axis.weights[size_t{xx} * static_cast<size_t>(ksize)], axis.count[xx], pb,
                       c, o + size_t{flip ? dst.width - 1 - xx : xx} * c);
    }
  }
}

// ---- AVX2 passes ----------------------------------------------------------
// The same integer arithmetic; clamping to [0, 255] is done by the
// saturating packs.

#if defined(__x86_64__)

// Fills axis.quad_weights (see resample.h).
void expand_quad_weights(Resampler::Axis& axis, uint32_t out_size) {
  const auto ksize = static_cast<size_t>(axis.ksize);
  const size_t quads = (ksize + 3) / 4;
  axis.quad_weights.assign(size_t{out_size} * quads * 16, 0);
  for (size_t xx = 0; xx < out_size; ++xx) {
    const int32_t* k = &axis.weights[xx * ksize];
    int16_t* out = &axis.quad_weights[xx * quads * 16];
    for (size_t t = 0; t < ksize; ++t) {
      // Taps t (even) and t+1 pair up in one 128-bit half, four times over.
      const size_t half = (t % 4) / 2;
      for (size_t lane = 0; lane < 4; ++lane) {
        out[(t / 4) * 16 + half * 8 + lane * 2 + (t % 2)] = static_cast<int16_t>(k[t]);
      }
    }
  }
}

__attribute__((target("avx2"))) inline __m128i pack_to_bytes(__m256i acc) {
  acc = _mm256_srai_epi32(acc, kWeightBits);
  const __m128i words =
      _mm_packs_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  return _mm_packus_epi16(words, words);  // 8 bytes in the low half
}

__attribute__((target("avx2"))) void vertical_pass_avx2(const ImageView& src,
                                                        const Resampler::Axis& axis, uint32_t out_h,
                                                        uint8_t* out, size_t out_stride) {
  const size_t row_bytes = size_t{src.width} * src.channels;
  const size_t vector_bytes = row_bytes & ~size_t{15};
  const int ksize = axis.ksize;
  for (uint32_t yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &axis.weights[size_t{yy} * static_cast<size_t>(ksize)];
    const uint8_t* base = src.row(static_cast<uint32_t>(axis.first[yy]));
    const int n = axis.count[yy];
    uint8_t* o = out + size_t{yy} * out_stride;
    // Taps in pairs: the bytes of two rows interleaved, one 16-bit
    // multiply-add per pair (an odd last tap pairs with a zero weight).
    const int pair_count = (n + 1) / 2;
    for (size_t x = 0; x < vector_bytes; x += 16) {
      __m256i lo = _mm256_set1_epi32(kHalf);
      __m256i hi = lo;
      for (int j = 0; j < pair_count; ++j) {
        const int y = 2 * j;
        const uint8_t* a = base + static_cast<size_t>(y) * src.stride + x;
        const uint8_t* b = y + 1 < n ? a + src.stride : a;
        const int32_t wb = y + 1 < n ? k[y + 1] : 0;
        const __m256i w = _mm256_set1_epi32(static_cast<int32_t>(
            (static_cast<uint32_t>(wb) << 16) | (static_cast<uint32_t>(k[y]) & 0xFFFFu)));
        const __m128i ra = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
        const __m128i rb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
        lo = _mm256_add_epi32(
            lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(ra, rb)), w));
        hi = _mm256_add_epi32(
            hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(ra, rb)), w));
      }
      const __m128i bytes = _mm_unpacklo_epi64(pack_to_bytes(lo), pack_to_bytes(hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + x), bytes);
    }
    for (size_t x = vector_bytes; x < row_bytes; ++x) {
      int32_t acc = kHalf;
      for (int y = 0; y < n; ++y) acc += base[static_cast<size_t>(y) * src.stride + x] * k[y];
      o[x] = clip8(acc);
    }
  }
}

// One output pixel from RGB pixels at `p`: its three channel sums (rounded,
// shifted) in the first three 32-bit lanes, 0 in the fourth.
__attribute__((target("avx2"))) inline __m128i horizontal_rgb_sums(const uint8_t* p,
                                                                   const int16_t* kq, int groups) {
  // Pixels 0 and 1 as channel pairs (R0 R1 G0 G1 B0 B1 0 0), then 2 and 3.
  const __m128i pairs = _mm_setr_epi8(0, 3, 1, 4, 2, 5, -1, -1, 6, 9, 7, 10, 8, 11, -1, -1);
  __m256i acc = _mm256_setzero_si256();
  for (int g = 0; g < groups; ++g) {
    const __m128i four =
        _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 12 * g)), pairs);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kq + 16 * g));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(four), w));
  }
  const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  return _mm_srai_epi32(_mm_add_epi32(sum, _mm_set1_epi32(kHalf)), kWeightBits);
}

// Two output pixels at once, one per 128-bit lane: each lane takes four
// taps of its pixel per step (pixels shuffled to channel pairs, widened to
// 16 bits, one multiply-add per tap pair). Returns per lane the pixel's
// three channel sums and 0, rounded and shifted.
__attribute__((target("avx2"))) inline __m256i horizontal_rgb_sums2(const uint8_t* pa,
                                                                    const uint8_t* pb,
                                                                    const int16_t* ka,
                                                                    const int16_t* kb, int groups) {
  const __m256i pairs = _mm256_setr_epi8(0, 3, 1, 4, 2, 5, -1, -1, 6, 9, 7, 10, 8, 11, -1, -1, 0, 3,
                                         1, 4, 2, 5, -1, -1, 6, 9, 7, 10, 8, 11, -1, -1);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc = _mm256_set1_epi32(kHalf);
  for (int g = 0; g < groups; ++g) {
    const __m256i px = _mm256_shuffle_epi8(
        _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 12 * g))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 12 * g)), 1),
        pairs);
    const __m256i w01 = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ka + 16 * g))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(kb + 16 * g)), 1);
    const __m256i w23 = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ka + 16 * g + 8))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(kb + 16 * g + 8)), 1);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_unpacklo_epi8(px, zero), w01));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_unpackhi_epi8(px, zero), w23));
  }
  return _mm256_srai_epi32(acc, kWeightBits);
}

// RGB: four taps (four pixels, shuffled to channel pairs) per 16-bit
// multiply-add, four output pixels packed and stored together. A group
// loads 16 bytes for its 12; taps past a pixel's count have weight 0. Where
// a load would pass the end of the row, the pixel takes the portable path.
__attribute__((target("avx2"))) void horizontal_pass_rgb_avx2(const ImageView& src,
                                                              const Resampler::Axis& axis,
                                                              const MutableImageView& dst,
                                                              bool flip) {
  const int ksize = axis.ksize;
  const auto quads = static_cast<size_t>(ksize + 3) / 4;
  const int groups = (ksize + 3) / 4;
  const auto row_bytes = static_cast<int64_t>(src.width) * 3;
  // Output pixels [0, safe) never read past the row end, even with as many
  // groups as the widest filter; each pixel runs only the groups its taps fill.
  uint32_t safe = dst.width;
  while (safe > 0 && int64_t{axis.first[safe - 1]} * 3 + 12 * (groups - 1) + 16 > row_bytes) {
    --safe;
  }
  const uint32_t fast = safe & ~3u;
  // Four pixels' sums packed to bytes (R G B 0 each) -> 12 RGB bytes, in
  // order or mirrored.
  const __m128i drop_x = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const __m128i drop_x_mirrored =
      _mm_setr_epi8(12, 13, 14, 8, 9, 10, 4, 5, 6, 0, 1, 2, -1, -1, -1, -1);
  const __m128i order = flip ? drop_x_mirrored : drop_x;
  const __m256i zero = _mm256_setzero_si256();
  for (uint32_t y = 0; y < dst.height; ++y) {
    const uint8_t* in = src.row(y);
    uint8_t* o = dst.row(y);
    for (uint32_t xx = 0; xx < fast; xx += 4) {
      const auto pixel = [&](uint32_t j) {
        return in + static_cast<size_t>(axis.first[xx + j]) * 3;
      };
      const auto weights = [&](uint32_t j) {
        return &axis.quad_weights[size_t{xx + j} * quads * 16];
      };
      const auto groups_of = [&](uint32_t j, uint32_t k) {
        return (std::max(axis.count[xx + j], axis.count[xx + k]) + 3) / 4;
      };
      // Lane 0 holds pixels 0 and 2, lane 1 pixels 1 and 3.
      const __m256i s01 =
          horizontal_rgb_sums2(pixel(0), pixel(1), weights(0), weights(1), groups_of(0, 1));
      const __m256i s23 =
          horizontal_rgb_sums2(pixel(2), pixel(3), weights(2), weights(3), groups_of(2, 3));
      const __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(s01, s23), zero);
      const __m128i bytes = _mm_shuffle_epi8(
          _mm_unpacklo_epi32(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1)),
          order);
      uint8_t rgb[16];
      _mm_storeu_si128(reinterpret_cast<__m128i*>(rgb), bytes);
      std::memcpy(o + size_t{flip ? dst.width - 4 - xx : xx} * 3, rgb, 12);
    }
    for (uint32_t xx = fast; xx < dst.width; ++xx) {
      uint8_t* d = o + size_t{flip ? dst.width - 1 - xx : xx} * 3;
      const uint8_t* p = in + static_cast<size_t>(axis.first[xx]) * 3;
      if (xx >= safe) {
        horizontal_pixel(p, &axis.weights[size_t{xx} * static_cast<size_t>(ksize)], axis.count[xx],
                         3, 3, d);
        continue;
      }
      const __m128i sum = horizontal_rgb_sums(p, &axis.quad_weights[size_t{xx} * quads * 16],
                                              (axis.count[xx] + 3) / 4);
      const __m128i words = _mm_packs_epi32(sum, sum);
      const int32_t rgbx = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
      std::memcpy(d, &rgbx, 3);
    }
  }
}

#endif  // __x86_64__

}  // namespace

void copy_image(const ImageView& src, const MutableImageView& dst, bool flip) {
  const uint32_t c = dst.channels;
  for (uint32_t y = 0; y < dst.height; ++y) {
    const uint8_t* in = src.row(y);
    uint8_t* out = dst.row(y);
    if (!flip) {
      std::memcpy(out, in, size_t{dst.width} * c);
      continue;
    }
    for (uint32_t x = 0; x < dst.width; ++x) {
      std::memcpy(out + size_t{dst.width - 1 - x} * c, in + size_t{x} * c, c);
    }
  }
}

Resampler::Resampler(bool simd) {
#if defined(__x86_64__)
  avx2_ = simd && __builtin_cpu_supports("avx2");
#else
  (void)simd;
#endif
}

void Resampler::resample(const ImageView& src, const ResampleBox& box, const MutableImageView& dst,
                         bool flip) {
  // A pass that would be the identity is skipped, as Pillow skips it.
  const bool need_v = dst.height != src.height || box.y0 != 0 || box.y1 != dst.height;
  const bool need_h = dst.width != src.width || box.x0 != 0 || box.x1 != dst.width;
  if (!need_h && !need_v) {
    copy_image(src, dst, flip);
    return;
  }
  ImageView rows = src;  // what the horizontal pass reads
  if (need_v) {
    compute_axis(static_cast<int>(src.height), box.y0, box.y1, static_cast<int>(dst.height),
                 vertical_);
    const size_t stride = size_t{src.width} * src.channels;
    rows_.resize(stride * dst.height);
#if defined(__x86_64__)
    if (avx2_) {
      vertical_pass_avx2(src, vertical_, dst.height, rows_.data(), stride);
    } else {
      vertical_pass_portable(src, vertical_, dst.height, rows_.data(), stride);
    }
#else
    vertical_pass_portable(src, vertical_, dst.height, rows_.data(), stride);
#endif
    rows = ImageView{rows_.data(), src.width, dst.height, src.channels, stride};
  }
  if (!need_h) {
    copy_image(rows, dst, flip);
    return;
  }
  compute_axis(static_cast<int>(src.width), box.x0, box.x1, static_cast<int>(dst.width),
               horizontal_);
#if defined(__x86_64__)
  if (avx2_ && dst.channels == 3) {
    expand_quad_weights(horizontal_, dst.width);
    horizontal_pass_rgb_avx2(rows, horizontal_, dst, flip);
    return;
  }
#endif
  horizontal_pass_portable(rows, horizontal_, dst, flip);
}

}  // namespace stoker::pipeline
