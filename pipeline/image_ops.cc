// Geometry of the image ops and the decode-crop-resample path.
#include "pipeline/image_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "pipeline/overloaded.h"
#include "pipeline/png_codec.h"

namespace stoker::pipeline {
namespace {

// Python's round(): to nearest, ties to even (the default FP rounding mode).
int64_t round_half_even(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

// Maps a crop of the current (virtual) image onto the source box.
void apply_crop(ImagePlan& p, uint32_t cur_w, uint32_t cur_h, const CropBox& crop) {
  // A mirrored image's left edge is the source's right edge.
  const uint32_t left = p.flip ? cur_w - crop.left - crop.width : crop.left;
  const double sx = (p.box.x1 - p.box.x0) / cur_w;
  const double sy = (p.box.y1 - p.box.y0) / cur_h;
  const double x0 = p.box.x0 + left * sx;
  const double y0 = p.box.y0 + crop.top * sy;
  p.box = {x0, y0, x0 + crop.width * sx, y0 + crop.height * sy};
}

}  // namespace

CropBox random_resized_crop_box(uint32_t width, uint32_t height, const RandomResizedCropOp& op,
                                Rng& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(op.ratio_min);
  const double log_hi = std::log(op.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(op.scale_min, op.scale_max);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int64_t w = round_half_even(std::sqrt(target_area * aspect));
    const int64_t h = round_half_even(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox c;
      c.width = static_cast<uint32_t>(w);
      c.height = static_cast<uint32_t>(h);
      c.top = static_cast<uint32_t>(rng.below(height - c.height + 1));
      c.left = static_cast<uint32_t>(rng.below(width - c.width + 1));
      return c;
    }
  }
  // Fallback: the whole image, cut to the nearest allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / height;
  CropBox c{0, 0, height, width};
  if (in_ratio < op.ratio_min) {
    c.height = static_cast<uint32_t>(
        std::clamp<int64_t>(round_half_even(width / op.ratio_min), 1, height));
  } else if (in_ratio > op.ratio_max) {
    c.width = static_cast<uint32_t>(
        std::clamp<int64_t>(round_half_even(height * op.ratio_max), 1, width));
  }
  c.top = (height - c.height) / 2;
  c.left = (width - c.width) / 2;
  return c;
}

CropBox center_crop_box(uint32_t width, uint32_t height, const ImageSize& crop) {
  CropBox c;
  c.height = crop.height;
  c.width = crop.width;
  c.top = static_cast<uint32_t>(round_half_even((height - crop.height) / 2.0));
  c.left = static_cast<uint32_t>(round_half_even((width - crop.width) / 2.0));
  return c;
}

Result<ImageTransform> ImageTransform::compile(const std::vector<OpSpec>& ops,
                                               std::optional<ImageSize> fixed_input) {
  ImageTransform t;
  std::optional<ImageSize> size = fixed_input;
  for (const auto& op : ops) {
    std::visit(Overloaded{[&](const DecodeOp& o) { t.channels_ = o.channels; },
                          [&](const RandomResizedCropOp& o) {
                            size = o.size;
                            t.ops_.push_back(o);
                          },
                          [&](const ResizeOp& o) {
                            size = o.size;  // nullopt for a shorter-side resize
                            t.ops_.push_back(o);
                          },
                          [&](const CenterCropOp& o) {
                            size = o.size;
                            t.ops_.push_back(o);
                          },
                          [&](const RandomFlipOp& o) { t.ops_.push_back(o); }, [](const auto&) {}},
               op);
  }
  if (!size) {
    return invalid_argument(
        "ops: the output image size is not fixed: end with random_resized_crop, center_crop or "
        "resize to [height, width], or set source.image_size");
  }
  t.output_ = *size;
  return t;
}

std::optional<RecordProblem> ImageTransform::plan(uint32_t width, uint32_t height, Rng& rng,
                                                  ImagePlan& p) const {
  p = ImagePlan{};
  p.box = {0, 0, static_cast<double>(width), static_cast<double>(height)};
  uint32_t cur_w = width, cur_h = height;
  bool resampled = false;  // the current image is a resampling of the box
  for (const auto& op : ops_) {
    if (const auto* rrc = std::get_if<RandomResizedCropOp>(&op)) {
      apply_crop(p, cur_w, cur_h, random_resized_crop_box(cur_w, cur_h, *rrc, rng));
      cur_w = rrc->size.width;
      cur_h = rrc->size.height;
      p.soft_edges = false;
      resampled = true;
    } else if (const auto* resize = std::get_if<ResizeOp>(&op)) {
      if (resize->size) {
        cur_w = resize->size->width;
        cur_h = resize->size->height;
      } else {
        // torchvision: the shorter side becomes n, the longer one is truncated.
        const uint32_t n = resize->shorter_side;
        if (cur_w <= cur_h) {
          cur_h = static_cast<uint32_t>(uint64_t{n} * cur_h / cur_w);
          cur_w = n;
        } else {
          cur_w = static_cast<uint32_t>(uint64_t{n} * cur_w / cur_h);
          cur_h = n;
        }
      }
      if (cur_w == 0 || cur_h == 0) {
        return RecordProblem{BadRecordReason::kWrongImageSize,
                             fmt::format("a {}x{} image resized to nothing", width, height)};
      }
      resampled = true;
    } else if (const auto* cc = std::get_if<CenterCropOp>(&op)) {
      if (cc->size.width > cur_w || cc->size.height > cur_h) {
        return RecordProblem{BadRecordReason::kWrongImageSize,
                             fmt::format("a {}x{} image is smaller than the {}x{} center crop",
                                         cur_w, cur_h, cc->size.width, cc->size.height)};
      }
      apply_crop(p, cur_w, cur_h, center_crop_box(cur_w, cur_h, cc->size));
      cur_w = cc->size.width;
      cur_h = cc->size.height;
      p.soft_edges = p.soft_edges || resampled;
    } else if (const auto* flip = std::get_if<RandomFlipOp>(&op)) {
      if (rng.bernoulli(flip->probability)) p.flip = !p.flip;
    }
  }
  if (cur_w != output_.width || cur_h != output_.height) {
    return RecordProblem{BadRecordReason::kWrongImageSize,
                         fmt::format("the image is {}x{}, the pipeline produces {}x{}", cur_w,
                                     cur_h, output_.width, output_.height)};
  }
  p.width = cur_w;
  p.height = cur_h;
  return std::nullopt;
}

std::optional<RecordProblem> ImageProcessor::render(const ImageView& region, const ResampleBox& box,
                                                    const ImagePlan& plan, uint8_t* out,
                                                    uint32_t channels) {
  const MutableImageView dst{out, plan.width, plan.height, channels, size_t{plan.width} * channels};
  if (box.x0 == 0 && box.y0 == 0 && box.x1 == plan.width && box.y1 == plan.height &&
      region.width == plan.width && region.height == plan.height) {
    copy_image(region, dst, plan.flip);
  } else {
    resampler_.resample(region, box, dst, plan.flip);
  }
  return std::nullopt;
}

std::optional<RecordProblem> ImageProcessor::process(const Record& record,
                                                     const ImageTransform& transform,
                                                     const ImageChecks& checks, uint64_t seed,
                                                     uint8_t* out) {
  const std::string_view bytes = record.bytes();
  const uint32_t channels = transform.channels();
  enum class Kind { kRaw, kJpeg, kPng } kind;
  uint32_t width = 0, height = 0;
  if (record.raw_width != 0) {
    kind = Kind::kRaw;
    width = record.raw_width;
    height = record.raw_height;
    if ((record.raw_channels != 1 && record.raw_channels != 3) ||
        bytes.size() != size_t{width} * height * record.raw_channels) {
      return RecordProblem{BadRecordReason::kMalformedRecord,
                           fmt::format("{} bytes of pixels for a {}x{}x{} image", bytes.size(),
                                       width, height, record.raw_channels)};
    }
  } else if (looks_like_jpeg(bytes)) {
    kind = Kind::kJpeg;
    if (Status st = jpeg_.read_header(bytes, width, height); !st.is_ok()) {
      return RecordProblem{BadRecordReason::kUndecodableImage, st.message()};
    }
  } else if (looks_like_png(bytes)) {
    kind = Kind::kPng;
    if (Status st = read_png_header(bytes, width, height); !st.is_ok()) {
      return RecordProblem{BadRecordReason::kUndecodableImage, st.message()};
    }
  } else {
    std::string head;
    for (size_t i = 0; i < std::min<size_t>(bytes.size(), 4); ++i) {
      head += fmt::format("{:02x}", static_cast<uint8_t>(bytes[i]));
    }
    return RecordProblem{BadRecordReason::kUndecodableImage,
                         fmt::format("neither JPEG nor PNG ({} bytes starting {})", bytes.size(),
                                     head.empty() ? "with nothing" : "0x" + head)};
  }
  if (width == 0 || height == 0 || uint64_t{width} * height > checks.max_pixels) {
    return RecordProblem{BadRecordReason::kWrongImageSize,
                         fmt::format("a {}x{} image (at most {} pixels are decoded)", width, height,
                                     checks.max_pixels)};
  }
  if (checks.image_size &&
      (checks.image_size->width != width || checks.image_size->height != height)) {
    return RecordProblem{BadRecordReason::kWrongImageSize,
                         fmt::format("a {}x{} image where {}x{} is expected", width, height,
                                     checks.image_size->width, checks.image_size->height)};
  }

  Rng rng(mix_seed({seed, static_cast<uint64_t>(RandomPurpose::kAugment), record.key}));
  ImagePlan plan;
  if (auto problem = transform.plan(width, height, rng, plan)) return problem;

  // DCT scaling: decode at 1/d when the box is still at least the output
  // size at that scale, i.e. at least d times larger than the output.
  uint32_t denom = 1;
  if (kind == Kind::kJpeg) {
    const double bw = plan.box.x1 - plan.box.x0;
    const double bh = plan.box.y1 - plan.box.y0;
    for (uint32_t d : {8u, 4u, 2u}) {
      if (bw >= static_cast<double>(d) * plan.width && bh >= static_cast<double>(d) * plan.height) {
        denom = d;
        break;
      }
    }
  }
  const uint32_t sw = JpegDecoder::scaled_size(width, denom);
  const uint32_t sh = JpegDecoder::scaled_size(height, denom);
  ResampleBox box{plan.box.x0 / denom, plan.box.y0 / denom, plan.box.x1 / denom,
                  plan.box.y1 / denom};
  // The integer region to decode: the box, plus the filter's reach when its
  // edges are soft.
  double margin = 0;
  if (plan.soft_edges) {
    margin = std::ceil(
                 std::max({(box.x1 - box.x0) / plan.width, (box.y1 - box.y0) / plan.height, 1.0})) +
             1;
  }
  const auto clampi = [](double v, uint32_t hi) {
    return static_cast<uint32_t>(std::clamp(v, 0.0, static_cast<double>(hi)));
  };
  const uint32_t rx0 = clampi(std::floor(box.x0 - margin), sw - 1);
  const uint32_t ry0 = clampi(std::floor(box.y0 - margin), sh - 1);
  const uint32_t rx1 = std::max(rx0 + 1, clampi(std::ceil(box.x1 + margin), sw));
  const uint32_t ry1 = std::max(ry0 + 1, clampi(std::ceil(box.y1 + margin), sh));
  box = {box.x0 - rx0, box.y0 - ry0, box.x1 - rx0, box.y1 - ry0};

  ImageView region;
  switch (kind) {
    case Kind::kJpeg: {
      auto decoded = jpeg_.decode(denom, rx0, ry0, rx1, ry1, channels);
      if (!decoded.is_ok()) {
        return RecordProblem{BadRecordReason::kUndecodableImage, decoded.status().message()};
      }
      region = *decoded;
      break;
    }
    case Kind::kPng: {
      uint32_t w = 0, h = 0;
      if (Status st = decode_png(bytes, channels, pixels_, w, h); !st.is_ok()) {
        return RecordProblem{BadRecordReason::kUndecodableImage, st.message()};
      }
      region = ImageView{pixels_.data(), w, h, channels, size_t{w} * channels}.crop(
          rx0, ry0, rx1 - rx0, ry1 - ry0);
      break;
    }
    case Kind::kRaw: {
      const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
      ImageView full{data, width, height, record.raw_channels, size_t{width} * record.raw_channels};
      if (record.raw_channels != channels) {
        // Gray to RGB (replicate) or RGB to gray (ITU-R 601 luma, as Pillow's "L").
        pixels_.resize(size_t{width} * height * channels);
        const size_t n = size_t{width} * height;
        for (size_t i = 0; i < n; ++i) {
          const uint8_t* p = data + i * record.raw_channels;
          if (channels == 3) {
            pixels_[3 * i] = pixels_[3 * i + 1] = pixels_[3 * i + 2] = p[0];
          } else {
            pixels_[i] = static_cast<uint8_t>((p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000);
          }
        }
        full = ImageView{pixels_.data(), width, height, channels, size_t{width} * channels};
      }
      region = full.crop(rx0, ry0, rx1 - rx0, ry1 - ry0);
      break;
    }
  }
  return render(region, box, plan, out, channels);
}

}  // namespace stoker::pipeline
