// Collation: turns the raw tensors workers send (uint8 images, int32 token
// ids with offsets, dense features) into what a model eats, on the GPU or on
// host threads. One implementation serves both: it is compiled by nvcc for
// CUDA and by the host compiler with OpenMP when stoker is built without CUDA.
//
// Where the work runs, and when its outputs are ready:
//  - On the GPU, when any tensor of the call is in device memory. Every other
//    tensor must then be in device memory of the same GPU or in pinned memory
//    (read over PCIe: correct, but slow for large inputs). The work is enqueued
//    on `stream`, which must belong to that GPU, and the call returns at once.
//    Outputs are ready on `stream` when the enqueued work ends: enqueue the
//    consumer's work on the same stream, or record an event there and make
//    other streams wait on it. Inputs and outputs must stay allocated until
//    then; a landing slot is released only after such an event has completed.
//    There is no device-wide synchronisation, and no host synchronisation at
//    all except where a function says so.
//  - On host threads otherwise (host or pinned memory): the calling thread
//    and OpenMP's workers do the work before the call returns; `stream` is
//    not used, so inputs must already be complete when the call is made.
//  - A build of stoker without CUDA has no device memory: such calls fail
//    with kUnsupported.
// Every function validates dtypes, shapes, memory kinds and devices first and
// says precisely what is wrong (kInvalidArgument); nothing is written then.
// All functions are thread-safe; calls on one stream run in call order.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "stoker/dtype.h"
#include "stoker/result.h"
#include "stoker/status.h"
#include "stoker/stream.h"
#include "stoker/tensor.h"

namespace stoker {

// ---------------------------------------------------------------------------
// Images: uint8 [B, H, W, C] (C from 1 to 4) -> float32, float16 or bfloat16,
// [B, C, H, W] (kNCHW) or [B, H, W, C] (kNHWC).

enum class ImageLayout : uint8_t { kNCHW, kNHWC };

struct ImageCollation {
  DType output_dtype = DType::kFloat32;  // kFloat32, kFloat16 or kBFloat16
  ImageLayout layout = ImageLayout::kNCHW;
  // out = (x / 255 - mean[c]) / stddev[c]. One value per channel, or one value
  // for all channels. The defaults are ImageNet's RGB statistics, so images
  // with other than 3 channels must give their own.
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> stddev = {0.229f, 0.224f, 0.225f};
  // Random horizontal flip, decided per sample by a counter-based hash so that
  // every build and device flips the same samples (see image_sample_flipped).
  bool random_flip = false;
  double flip_probability = 0.5;  // in [0, 1]
  uint64_t seed = 0;
  // Global index of the batch's first sample: give each batch its own range
  // (e.g. batch_sequence * B), or each batch flips the same positions.
  uint64_t first_sample = 0;
};

// Numerics, identical on the host and on every GPU: with scale = 1/(255 s[c])
// and bias = -m[c]/s[c], computed in double and rounded to float once, each
// value is fl(fl(x * scale) + bias) in float32 (no fused multiply-add), then
// rounded to nearest-even into float16/bfloat16 (overflow to infinity). It
// differs from the exact (x/255 - m)/s by a few float32 ulps of
// max(|x * scale|, |bias|) before that last rounding.

// Whether sample `index` of the batch (0-based) is flipped: with
//   z = seed + (first_sample + index + 1) * 0x9E3779B97F4A7C15   (mod 2^64)
//   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//   z ^= z >> 31                                                (SplitMix64)
// the sample is flipped when random_flip and (z >> 40) < llround(p * 2^24).
bool image_sample_flipped(const ImageCollation& options, uint64_t index);

// The output tensor for `images` (only the dtype and shape are read).
Result<TensorSpec> image_output_spec(const TensorView& images, const ImageCollation& options);

Status collate_image(const TensorView& images, const TensorView& out, const ImageCollation& options,
                     StreamRef stream = {});

// ---------------------------------------------------------------------------
// Sequences: int32 token ids, concatenated, [T], with int32 offsets [B + 1]
// (sample b is tokens[offsets[b], offsets[b+1])) -> padded ids [B, L],
// attention mask [B, L] and, optionally, position ids [B, L].

struct SequenceCollation {
  int64_t max_length = 512;          // > 0; longer samples lose their tail (right truncation)
  bool pad_to_max_length = false;    // L = max_length; otherwise L = min(max_length, longest)
  int64_t pad_id = 0;                // written after the last token of each sample
  DType ids_dtype = DType::kInt32;   // kInt32 or kInt64; position ids use it too
  DType mask_dtype = DType::kUInt8;  // kBool, kUInt8, kInt32, kInt64 or kFloat32
  bool position_ids = false;         // also write position ids
};
// The mask is 1 at tokens and 0 at padding. Position ids are 0, 1, ... at
// tokens and 0 at padding.

struct SequenceOutputSpec {
  int64_t length = 0;  // L
  TensorSpec ids;
  TensorSpec mask;
  std::optional<TensorSpec> positions;  // when options.position_ids
};

struct SequenceOutputs {
  TensorView ids;
  TensorView mask;
  std::optional<TensorView> positions;  // required when options.position_ids
  // Optional int32 [1]: set to the number of samples whose offsets were out of
  // order or out of range (see below). Reset to 0 by the call itself.
  std::optional<TensorView> malformed_samples;
};

// Offsets in host or pinned memory are read by the calling thread at call
// time and checked before anything is launched: they must not decrease, the
// first must be >= 0 and the last <= T, or the call fails with
// kInvalidArgument naming the first bad offset. Offsets only in device memory
// cannot be checked without a host synchronisation, so they are not: each
// sample is clamped to start = clamp(offsets[b], 0, T), end =
// clamp(offsets[b+1], start, T), nothing outside `tokens` is ever read, and
// the clamped samples are counted in `malformed_samples` when it is given.
//
// The output spec needs L: with pad_to_max_length it is max_length; otherwise
// it depends on the longest sample, which needs offsets the host can read
// (host or pinned memory), and fails with kFailedPrecondition for device
// offsets. collate_sequences itself takes L from out.ids.
Result<SequenceOutputSpec> sequence_output_spec(const TensorView& tokens, const TensorView& offsets,
                                                const SequenceCollation& options);

Status collate_sequences(const TensorView& tokens, const TensorView& offsets,
                         const SequenceOutputs& out, const SequenceCollation& options,
                         StreamRef stream = {});

// ---------------------------------------------------------------------------
// Dense features: k tensors [B, d_k] (or [B], d_k = 1) -> [B, d_0 + ... + d_{k-1}],
// feature after feature along the second dimension.

struct DenseCollation {
  DType output_dtype = DType::kFloat32;  // kFloat32, kFloat16 or kBFloat16
  // Inputs may be float32, float16, bfloat16 or uint8; uint8 values are
  // multiplied by this (e.g. 1/255 for quantised [0, 1] features).
  float uint8_scale = 1.0f;
};

Result<TensorSpec> dense_output_spec(std::span<const TensorView> features,
                                     const DenseCollation& options);

Status collate_dense(std::span<const TensorView> features, const TensorView& out,
                     const DenseCollation& options, StreamRef stream = {});

}  // namespace stoker
