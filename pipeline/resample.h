// Resampling with Pillow's bilinear filter (support widened by the
// downscale factor: antialiased) and Pillow's weight computation, so a
// crop + resize here matches torchvision's RandomResizedCrop with Pillow to
// within a level. Two differences, both for speed: weights are 14-bit fixed
// point (Pillow uses 22 bits; Pillow-SIMD uses 14-15 so that pixel x weight
// products fit 16-bit multiply-adds), and columns are resampled before rows
// (the vertical pass vectorizes along whole rows and leaves only
// output-height rows for the horizontal one). Each pass rounds to 8 bits.
#pragma once

#include <cstdint>
#include <vector>

#include "pipeline/image_view.h"

namespace stoker::pipeline {

// A region of the source image in pixel coordinates; may be fractional.
struct ResampleBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Holds the weight tables and the intermediate rows between calls, so a
// thread resampling image after image allocates nothing.
class Resampler {
 public:
  // `simd`: use the AVX2 loops when the CPU has AVX2 (tests turn it off to
  // check them against the portable ones; both give the same bytes).
  explicit Resampler(bool simd = true);

  // Resamples `box` of `src` into all of `dst` (same channels), mirroring
  // horizontally when `flip`. Source pixels outside `src` are never read:
  // filters are clipped to it as Pillow clips them to the image.
  void resample(const ImageView& src, const ResampleBox& box, const MutableImageView& dst,
                bool flip);

  struct Axis {
    int ksize = 0;
    std::vector<int32_t> weights;  // out_size x ksize, 14-bit fixed point, 0 past count
    std::vector<int32_t> first;    // first source index of each output
    std::vector<int32_t> count;    // taps of each output
    // AVX2, horizontal: per output, ceil(ksize / 4) groups of 16 int16
    // (w0 w1 w0 w1 w0 w1 w0 w1 w2 w3 w2 w3 w2 w3 w2 w3) matching four RGB
    // pixels shuffled to channel pairs.
    std::vector<int16_t> quad_weights;
  };

 private:
  bool avx2_ = false;
  Axis horizontal_;
  Axis vertical_;
  std::vector<uint8_t> rows_;  // the vertical pass's output
};

// Copies `src` into `dst` (same size and channels), mirrored when `flip`.
void copy_image(const ImageView& src, const MutableImageView& dst, bool flip);

}  // namespace stoker::pipeline
