// The collation kernels, written once. nvcc compiles this file for CUDA
// (kernels on the device executor, the same functors on host threads
// otherwise); without CUDA the host compiler compiles it as C++ with OpenMP.
// Each functor handles a group of 4 consecutive output elements of one row so
// that, when sizes and alignment allow ("vectorized"), the GPU reads packed
// uint8 pixels 4 bytes at a time and writes each row segment with one vector
// store; other sizes take the element-wise path of the same functor.
#include <cstdint>

#include "gpu/collate/kernels.h"
#include "gpu/collate/launch.h"
#include "gpu/collate/numeric.h"

// Loops over channels and the 4 elements of a group are unrolled everywhere,
// so that small arrays indexed by them stay in registers.
#if defined(__CUDACC__) || defined(__clang__)
#define STOKER_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define STOKER_UNROLL _Pragma("GCC unroll 16")
#else
#define STOKER_UNROLL
#endif

namespace stoker::collate_detail {
namespace {

// Storage type and conversion of each float output format.
template <FloatFormat F>
struct FloatOut;
template <>
struct FloatOut<FloatFormat::kFloat32> {
  using Storage = float;
  static STOKER_HD_INLINE float from(float v) { return v; }
};
template <>
struct FloatOut<FloatFormat::kFloat16> {
  using Storage = uint16_t;
  static STOKER_HD_INLINE uint16_t from(float v) { return float_to_float16_bits(v); }
};
template <>
struct FloatOut<FloatFormat::kBFloat16> {
  using Storage = uint16_t;
  static STOKER_HD_INLINE uint16_t from(float v) { return float_to_bfloat16_bits(v); }
};

bool aligned(const void* p, uint64_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

STOKER_HD_INLINE void count_one(int32_t* counter) {
#if defined(__CUDA_ARCH__)
  atomicAdd(counter, 1);
#else
  __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
#endif
}

// ---------------------------------------------------------------------------
// Images. Item = 4 consecutive output pixels (w0 .. w0+3) of row (b, h).

template <FloatFormat F, uint32_t C, bool kNCHW>
struct ImageKernel {
  using Out = typename FloatOut<F>::Storage;
  const uint8_t* in;
  Out* out;
  uint64_t height, width;
  FastDivider groups_per_row, rows_per_image;
  float scale[C], bias[C];
  uint64_t seed, first_sample;
  uint32_t flip_threshold;
  bool flip, vectorized;

  STOKER_HD_INLINE Out value(uint8_t x, uint32_t c) const {
    return FloatOut<F>::from(add_rn(mul_rn(static_cast<float>(x), scale[c]), bias[c]));
  }

  // Channel c of output pixel k of a 4-pixel group: source pixel 3 - k when
  // flipped. Both indices are constants once the loops are unrolled, so this
  // is a register select, not an indexed (local memory) access.
  static STOKER_HD_INLINE uint8_t source(const uint8_t (&px)[4 * C], bool flipped, uint32_t k,
                                         uint32_t c) {
    return flipped ? px[(3 - k) * C + c] : px[k * C + c];
  }

  template <typename Index>
  STOKER_HD_INLINE void operator()(Index item) const {
    const Index row = groups_per_row.divide(item);  // b * height + h
    const Index group = item - row * static_cast<Index>(groups_per_row.divisor);
    const Index b = rows_per_image.divide(row);
    const Index h = row - b * static_cast<Index>(height);
    const bool flipped = flip && flip_sample(seed, first_sample + b, flip_threshold);
    const uint64_t w0 = uint64_t{group} * 4;
    const uint8_t* in_row = in + uint64_t{row} * width * C;

    if (vectorized) {
      // width % 4 == 0: the 4 source pixels are contiguous and 4-byte aligned.
      const uint64_t src_w0 = flipped ? width - 4 - w0 : w0;
      uint8_t px[4 * C];
      STOKER_UNROLL
      for (uint32_t j = 0; j < C; ++j) {
        const uint32_t word = load_u32(in_row + src_w0 * C + 4 * j);
        STOKER_UNROLL
        for (uint32_t t = 0; t < 4; ++t) px[4 * j + t] = static_cast<uint8_t>(word >> (8 * t));
      }
      if constexpr (kNCHW) {
        STOKER_UNROLL
        for (uint32_t c = 0; c < C; ++c) {
          Out v[4];
          STOKER_UNROLL
          for (uint32_t k = 0; k < 4; ++k) v[k] = value(source(px, flipped, k, c), c);
          store4(out + ((uint64_t{b} * C + c) * height + h) * width + w0, v);
        }
      } else {
        Out* dst = out + (uint64_t{row} * width + w0) * C;  // 4 * C contiguous values
        STOKER_UNROLL
        for (uint32_t j = 0; j < C; ++j) {
          Out v[4];
          STOKER_UNROLL
          for (uint32_t t = 0; t < 4; ++t) {
            const uint32_t k = (4 * j + t) / C;
            const uint32_t c = (4 * j + t) % C;
            v[t] = value(source(px, flipped, k, c), c);
          }
          store4(dst + 4 * j, v);
        }
      }
      return;
    }

    const uint64_t count = width - w0 < 4 ? width - w0 : 4;
    for (uint64_t k = 0; k < count; ++k) {
      const uint64_t w = w0 + k;
      const uint8_t* pixel = in_row + (flipped ? width - 1 - w : w) * C;
      STOKER_UNROLL
      for (uint32_t c = 0; c < C; ++c) {
        const uint64_t at = kNCHW ? ((uint64_t{b} * C + c) * height + h) * width + w
                                  : (uint64_t{row} * width + w) * C + c;
        out[at] = value(pixel[c], c);
      }
    }
  }
};

template <FloatFormat F, uint32_t C, bool kNCHW>
Status run_image(const ImageArgs& a, const Executor& executor) {
  using Kernel = ImageKernel<F, C, kNCHW>;
  Kernel kernel{};
  kernel.in = a.in;
  kernel.out = static_cast<typename Kernel::Out*>(a.out);
  kernel.height = static_cast<uint64_t>(a.height);
  kernel.width = static_cast<uint64_t>(a.width);
  kernel.groups_per_row = FastDivider((kernel.width + 3) / 4);
  kernel.rows_per_image = FastDivider(kernel.height);
  for (uint32_t c = 0; c < C; ++c) {
    kernel.scale[c] = a.scale[c];
    kernel.bias[c] = a.bias[c];
  }
  kernel.seed = a.seed;
  kernel.first_sample = a.first_sample;
  kernel.flip_threshold = a.flip_threshold;
  kernel.flip = a.flip;
  kernel.vectorized =
      a.width % 4 == 0 && aligned(a.in, 4) && aligned(a.out, 4 * sizeof(typename Kernel::Out));
  const uint64_t items =
      static_cast<uint64_t>(a.batch) * kernel.height * kernel.groups_per_row.divisor;
  return parallel_for(executor, items, kernel, "collate_image");
}

template <FloatFormat F, uint32_t C>
Status run_image_layout(const ImageArgs& a, const Executor& executor) {
  return a.nchw ? run_image<F, C, true>(a, executor) : run_image<F, C, false>(a, executor);
}

template <FloatFormat F>
Status run_image_channels(const ImageArgs& a, const Executor& executor) {
  switch (a.channels) {
    case 1:
      return run_image_layout<F, 1>(a, executor);
    case 2:
      return run_image_layout<F, 2>(a, executor);
    case 3:
      return run_image_layout<F, 3>(a, executor);
    case 4:
      return run_image_layout<F, 4>(a, executor);
    default:
      return internal_error("collate_image: unchecked channel count");
  }
}

// ---------------------------------------------------------------------------
// Sequences. Item = 4 consecutive positions (l0 .. l0+3) of sample b.

template <typename Id, typename Mask, bool kPositions>
struct SequenceKernel {
  const int32_t* tokens;
  const int32_t* offsets;
  Id* ids;
  Mask* mask;
  Id* positions;
  int32_t* malformed;
  int64_t token_count;
  uint64_t length;
  FastDivider groups_per_row;
  Id pad;
  bool vectorized;

  template <typename Index>
  STOKER_HD_INLINE void operator()(Index item) const {
    const Index b = groups_per_row.divide(item);
    const Index group = item - b * static_cast<Index>(groups_per_row.divisor);
    // Clamped, so that offsets nobody checked never lead outside `tokens`.
    const int64_t raw_start = offsets[b];
    const int64_t raw_end = offsets[b + 1];
    const int64_t start = raw_start < 0 ? 0 : (raw_start > token_count ? token_count : raw_start);
    const int64_t end = raw_end < start ? start : (raw_end > token_count ? token_count : raw_end);
    if (malformed != nullptr && group == 0 && (start != raw_start || end != raw_end)) {
      count_one(malformed);
    }
    const auto present = static_cast<uint64_t>(end - start);
    const uint64_t l0 = uint64_t{group} * 4;
    Id v[4];
    Mask m[4];
    Id p[4];
    STOKER_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint64_t l = l0 + static_cast<uint64_t>(k);
      const bool token = l < present && l < length;
      v[k] = token ? static_cast<Id>(tokens[static_cast<uint64_t>(start) + l]) : pad;
      m[k] = static_cast<Mask>(token ? 1 : 0);
      p[k] = static_cast<Id>(token ? l : 0);
    }
    const uint64_t at = uint64_t{b} * length + l0;
    if (vectorized) {
      store4(ids + at, v);
      store4(mask + at, m);
      if constexpr (kPositions) store4(positions + at, p);
      return;
    }
    const uint64_t count = length - l0 < 4 ? length - l0 : 4;
    for (uint64_t k = 0; k < count; ++k) {
      ids[at + k] = v[k];
      mask[at + k] = m[k];
      if constexpr (kPositions) positions[at + k] = p[k];
    }
  }
};

template <typename Id, typename Mask, bool kPositions>
Status run_sequences(const SequenceArgs& a, const Executor& executor) {
  SequenceKernel<Id, Mask, kPositions> kernel{};
  kernel.tokens = a.tokens;
  kernel.offsets = a.offsets;
  kernel.ids = static_cast<Id*>(a.ids);
  kernel.mask = static_cast<Mask*>(a.mask);
  kernel.positions = static_cast<Id*>(a.positions);
  kernel.malformed = a.malformed;
  kernel.token_count = a.token_count;
  kernel.length = static_cast<uint64_t>(a.length);
  kernel.groups_per_row = FastDivider((kernel.length + 3) / 4);
  kernel.pad = static_cast<Id>(a.pad_id);
  kernel.vectorized = a.length % 4 == 0 && aligned(a.ids, 4 * sizeof(Id)) &&
                      aligned(a.mask, 4 * sizeof(Mask)) &&
                      (!kPositions || aligned(a.positions, 4 * sizeof(Id)));
  const uint64_t items = static_cast<uint64_t>(a.batch) * kernel.groups_per_row.divisor;
  return parallel_for(executor, items, kernel, "collate_sequences");
}

template <typename Id, typename Mask>
Status run_sequences_positions(const SequenceArgs& a, const Executor& executor) {
  return a.positions != nullptr ? run_sequences<Id, Mask, true>(a, executor)
                                : run_sequences<Id, Mask, false>(a, executor);
}

template <typename Id>
Status run_sequences_mask(const SequenceArgs& a, const Executor& executor) {
  switch (a.mask_format) {
    case MaskFormat::kByte:
      return run_sequences_positions<Id, uint8_t>(a, executor);
    case MaskFormat::kInt32:
      return run_sequences_positions<Id, int32_t>(a, executor);
    case MaskFormat::kInt64:
      return run_sequences_positions<Id, int64_t>(a, executor);
    case MaskFormat::kFloat32:
      return run_sequences_positions<Id, float>(a, executor);
  }
  return internal_error("collate_sequences: unchecked mask format");
}

// ---------------------------------------------------------------------------
// Dense features. Item = 4 consecutive columns of one row of the launch's
// column range; the columns may belong to different features.

template <FloatFormat F>
struct DenseKernel {
  using Out = typename FloatOut<F>::Storage;
  DenseFeature features[kDenseFeaturesPerLaunch];
  uint64_t feature_end[kDenseFeaturesPerLaunch];  // cumulative widths
  // Whether groups of 4 columns of the feature start 4-aligned in memory, so
  // that a group inside it is one vector load.
  bool vector_loads[kDenseFeaturesPerLaunch];
  Out* out;
  uint64_t chunk_width, out_width, first_column;
  FastDivider groups_per_row;
  float uint8_scale;
  bool vectorized;

  // One stored value of a feature, as float: the storage type says the
  // format, except for 16 bits (float16 or bfloat16).
  STOKER_HD_INLINE float to_float(DenseFormat, float x) const { return x; }
  STOKER_HD_INLINE float to_float(DenseFormat format, uint16_t x) const {
    return format == DenseFormat::kFloat16 ? float16_bits_to_float(x) : bfloat16_bits_to_float(x);
  }
  STOKER_HD_INLINE float to_float(DenseFormat, uint8_t x) const {
    return mul_rn(static_cast<float>(x), uint8_scale);
  }

  template <typename T>
  STOKER_HD_INLINE float load_as(const DenseFeature& f, uint64_t i) const {
    return to_float(f.format, static_cast<const T*>(f.data)[i]);
  }

  template <typename T>
  STOKER_HD_INLINE void load_group_as(const DenseFeature& f, uint64_t i, Out (&v)[4]) const {
    T x[4];
    load4(static_cast<const T*>(f.data) + i, x);
    STOKER_UNROLL
    for (uint32_t j = 0; j < 4; ++j) v[j] = FloatOut<F>::from(to_float(f.format, x[j]));
  }

  STOKER_HD_INLINE float load(const DenseFeature& f, uint64_t row, uint64_t column) const {
    const uint64_t i = row * static_cast<uint64_t>(f.width) + column;
    switch (f.format) {
      case DenseFormat::kFloat32:
        return load_as<float>(f, i);
      case DenseFormat::kFloat16:
      case DenseFormat::kBFloat16:
        return load_as<uint16_t>(f, i);
      case DenseFormat::kUInt8:
        return load_as<uint8_t>(f, i);
    }
    return 0.0f;
  }

  // Columns [column, column + 4) of one feature, read as one vector.
  STOKER_HD_INLINE void load_group(const DenseFeature& f, uint64_t row, uint64_t column,
                                   Out (&v)[4]) const {
    const uint64_t i = row * static_cast<uint64_t>(f.width) + column;
    switch (f.format) {
      case DenseFormat::kFloat32:
        return load_group_as<float>(f, i, v);
      case DenseFormat::kFloat16:
      case DenseFormat::kBFloat16:
        return load_group_as<uint16_t>(f, i, v);
      case DenseFormat::kUInt8:
        return load_group_as<uint8_t>(f, i, v);
    }
  }

  template <typename Index>
  STOKER_HD_INLINE void operator()(Index item) const {
    const Index row = groups_per_row.divide(item);
    const uint64_t c0 = uint64_t{item - row * static_cast<Index>(groups_per_row.divisor)} * 4;
    const uint64_t count = chunk_width - c0 < 4 ? chunk_width - c0 : 4;
    Out v[4] = {};
    int k = 0;
    while (c0 >= feature_end[k]) ++k;
    const uint64_t start = k == 0 ? 0 : feature_end[k - 1];
    if (count == 4 && c0 + 4 <= feature_end[k] && vector_loads[k]) {
      load_group(features[k], row, c0 - start, v);
    } else {
      STOKER_UNROLL
      for (uint32_t j = 0; j < 4; ++j) {
        const uint64_t column = c0 + j;
        if (j < count) {
          while (column >= feature_end[k]) ++k;
          const uint64_t feature_start = k == 0 ? 0 : feature_end[k - 1];
          v[j] = FloatOut<F>::from(load(features[k], row, column - feature_start));
        }
      }
    }
    Out* dst = out + uint64_t{row} * out_width + first_column + c0;
    if (vectorized && count == 4) {
      store4(dst, v);
      return;
    }
    STOKER_UNROLL
    for (uint32_t j = 0; j < 4; ++j) {
      if (j < count) dst[j] = v[j];
    }
  }
};

uint64_t dense_format_size(DenseFormat format) {
  switch (format) {
    case DenseFormat::kFloat32:
      return 4;
    case DenseFormat::kFloat16:
    case DenseFormat::kBFloat16:
      return 2;
    case DenseFormat::kUInt8:
      return 1;
  }
  return 1;
}

template <FloatFormat F>
Status run_dense(const DenseArgs& a, const Executor& executor) {
  using Kernel = DenseKernel<F>;
  Kernel kernel{};
  uint64_t width = 0;
  for (int k = 0; k < a.feature_count; ++k) {
    const DenseFeature& f = a.features[k];
    kernel.features[k] = f;
    kernel.vector_loads[k] =
        width % 4 == 0 && f.width % 4 == 0 && aligned(f.data, 4 * dense_format_size(f.format));
    width += static_cast<uint64_t>(f.width);
    kernel.feature_end[k] = width;
  }
  // Unused slots end past every column, so the feature search stops in range.
  for (int k = a.feature_count; k < kDenseFeaturesPerLaunch; ++k) kernel.feature_end[k] = ~0ull;
  kernel.out = static_cast<typename Kernel::Out*>(a.out);
  kernel.chunk_width = width;
  kernel.out_width = static_cast<uint64_t>(a.out_width);
  kernel.first_column = static_cast<uint64_t>(a.first_column);
  kernel.groups_per_row = FastDivider((width + 3) / 4);
  kernel.uint8_scale = a.uint8_scale;
  kernel.vectorized = a.out_width % 4 == 0 && a.first_column % 4 == 0 &&
                      aligned(a.out, 4 * sizeof(typename Kernel::Out));
  const uint64_t items = static_cast<uint64_t>(a.batch) * kernel.groups_per_row.divisor;
  return parallel_for(executor, items, kernel, "collate_dense");
}

}  // namespace

Status launch_image(const ImageArgs& args, const Executor& executor) {
  switch (args.format) {
    case FloatFormat::kFloat32:
      return run_image_channels<FloatFormat::kFloat32>(args, executor);
    case FloatFormat::kFloat16:
      return run_image_channels<FloatFormat::kFloat16>(args, executor);
    case FloatFormat::kBFloat16:
      return run_image_channels<FloatFormat::kBFloat16>(args, executor);
  }
  return internal_error("collate_image: unchecked output format");
}

Status launch_sequences(const SequenceArgs& args, const Executor& executor) {
  return args.id_format == IdFormat::kInt64 ? run_sequences_mask<int64_t>(args, executor)
                                            : run_sequences_mask<int32_t>(args, executor);
}

Status launch_dense(const DenseArgs& args, const Executor& executor) {
  switch (args.format) {
    case FloatFormat::kFloat32:
      return run_dense<FloatFormat::kFloat32>(args, executor);
    case FloatFormat::kFloat16:
      return run_dense<FloatFormat::kFloat16>(args, executor);
    case FloatFormat::kBFloat16:
      return run_dense<FloatFormat::kBFloat16>(args, executor);
  }
  return internal_error("collate_dense: unchecked output format");
}

}  // namespace stoker::collate_detail
