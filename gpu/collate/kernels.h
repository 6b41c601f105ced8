// The collation kernels' entry points, between the validating API in
// collate.cc (host C++) and kernels.cu (compiled by nvcc, or by the host
// compiler with OpenMP). Arguments are checked before they get here: these
// functions trust them and only launch.
#pragma once

#include <cstdint>

#include "stoker/status.h"

namespace stoker::collate_detail {

// Where a kernel runs: on GPU `device`, enqueued on `stream` (a
// cudaStream_t), or on host threads before the call returns.
struct Executor {
  bool on_device = false;
  int device = -1;
  void* stream = nullptr;
};

enum class FloatFormat : uint8_t { kFloat32, kFloat16, kBFloat16 };

inline constexpr int kMaxImageChannels = 4;

struct ImageArgs {
  const uint8_t* in = nullptr;  // [batch, height, width, channels]
  void* out = nullptr;  // [batch, channels, height, width] or [batch, height, width, channels]
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  float scale[kMaxImageChannels] = {};  // out = x * scale[c] + bias[c]
  float bias[kMaxImageChannels] = {};
  FloatFormat format = FloatFormat::kFloat32;
  bool nchw = true;
  bool flip = false;
  uint32_t flip_threshold = 0;
  uint64_t seed = 0;
  uint64_t first_sample = 0;
};
Status launch_image(const ImageArgs& args, const Executor& executor);

enum class IdFormat : uint8_t { kInt32, kInt64 };
enum class MaskFormat : uint8_t { kByte, kInt32, kInt64, kFloat32 };

struct SequenceArgs {
  const int32_t* tokens = nullptr;  // [token_count]
  int64_t token_count = 0;
  const int32_t* offsets = nullptr;  // [batch + 1]
  int64_t batch = 0;
  int64_t length = 0;            // L
  void* ids = nullptr;           // [batch, L]
  void* mask = nullptr;          // [batch, L]
  void* positions = nullptr;     // [batch, L] or null
  int32_t* malformed = nullptr;  // [1] or null; zeroed before the launch
  int64_t pad_id = 0;
  IdFormat id_format = IdFormat::kInt32;
  MaskFormat mask_format = MaskFormat::kByte;
};
Status launch_sequences(const SequenceArgs& args, const Executor& executor);

enum class DenseFormat : uint8_t { kFloat32, kFloat16, kBFloat16, kUInt8 };
inline constexpr int kDenseFeaturesPerLaunch = 8;

struct DenseFeature {
  const void* data = nullptr;  // [batch, width]
  int64_t width = 0;
  DenseFormat format = DenseFormat::kFloat32;
};

// Writes columns [first_column, first_column + sum of widths) of `out`.
struct DenseArgs {
  DenseFeature features[kDenseFeaturesPerLaunch] = {};
  int feature_count = 0;
  int64_t batch = 0;
  int64_t out_width = 0;
  int64_t first_column = 0;
  void* out = nullptr;  // [batch, out_width]
  FloatFormat format = FloatFormat::kFloat32;
  float uint8_scale = 1.0f;
};
Status launch_dense(const DenseArgs& args, const Executor& executor);

}  // namespace stoker::collate_detail
