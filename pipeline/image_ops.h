// The image ops after decode (random-resized-crop, resize, center crop,
// flip), compiled into one geometric plan per image: a box in source pixels,
// an output size and a mirror flag. The box is decoded (only that region of a
// JPEG, with DCT scaling when it is at least twice the output) and resampled
// once, straight into the batch slot. Chained resizes therefore interpolate
// once, not once per op: same geometry, sharper result, less work.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/bad_records.h"
#include "pipeline/image_view.h"
#include "pipeline/jpeg_codec.h"
#include "pipeline/pipeline_spec.h"
#include "pipeline/random.h"
#include "pipeline/resample.h"
#include "pipeline/source.h"

namespace stoker::pipeline {

struct CropBox {
  uint32_t top = 0, left = 0, height = 0, width = 0;
  friend bool operator==(const CropBox&, const CropBox&) = default;
};

// torchvision's RandomResizedCrop.get_params: up to 10 tries at a random
// area fraction in [scale_min, scale_max] and a log-uniform aspect ratio in
// [ratio_min, ratio_max], then the central crop with the ratio clamped.
CropBox random_resized_crop_box(uint32_t width, uint32_t height, const RandomResizedCropOp& op,
                                Rng& rng);

// torchvision's CenterCrop offsets (round half to even, as Python's round()).
// Requires crop <= image on both sides.
CropBox center_crop_box(uint32_t width, uint32_t height, const ImageSize& crop);

struct ImagePlan {
  ResampleBox box;  // in source pixels
  uint32_t width = 0, height = 0;
  bool flip = false;
  // The box's edges were made by resampling the whole image first (resize,
  // then center crop): filters may read beyond them, as a resize of the
  // whole image would have. Otherwise (a crop, then a resize, as
  // RandomResizedCrop does) they read only inside.
  bool soft_edges = false;
};

// The geometric ops of a spec, in order.
class ImageTransform {
 public:
  // `fixed_input`: the size of every input image when the source knows it
  // (IDX, or the spec's image_size).
  static Result<ImageTransform> compile(const std::vector<OpSpec>& ops,
                                        std::optional<ImageSize> fixed_input);
  ImageSize output_size() const { return output_; }
  uint32_t channels() const { return channels_; }
  size_t output_bytes() const { return size_t{output_.height} * output_.width * channels_; }
  // The plan for a width x height image; a problem when the ops cannot apply
  // (a center crop larger than the image).
  std::optional<RecordProblem> plan(uint32_t width, uint32_t height, Rng& rng,
                                    ImagePlan& out) const;

 private:
  std::vector<OpSpec> ops_;  // geometric ops only
  ImageSize output_;
  uint32_t channels_ = 3;
};

// Decodes records and applies a transform. One per thread: holds the JPEG
// decoder, the resampler and their buffers.
class ImageProcessor {
 public:
  // Writes the transformed image (output_size, channels) to `out`, or says
  // what is wrong with the record.
  std::optional<RecordProblem> process(const Record& record, const ImageTransform& transform,
                                       const ImageChecks& checks, uint64_t seed, uint8_t* out);

 private:
  std::optional<RecordProblem> render(const ImageView& region, const ResampleBox& box,
                                      const ImagePlan& plan, uint8_t* out, uint32_t channels);
  JpegDecoder jpeg_;
  Resampler resampler_;
  std::vector<uint8_t> pixels_;
};

}  // namespace stoker::pipeline
