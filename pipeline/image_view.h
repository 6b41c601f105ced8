// Views of 8-bit interleaved images (HWC): what decoders produce, the
// resampler reads and the batch slots are written as.
#pragma once

#include <cstddef>
#include <cstdint>

namespace stoker::pipeline {

struct ImageView {
  const uint8_t* data = nullptr;
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t channels = 0;
  size_t stride = 0;  // bytes from one row to the next

  const uint8_t* row(uint32_t y) const { return data + size_t{y} * stride; }
  // The sub-image [x, x + w) x [y, y + h).
  ImageView crop(uint32_t x, uint32_t y, uint32_t w, uint32_t h) const {
    return {data + size_t{y} * stride + size_t{x} * channels, w, h, channels, stride};
  }
};

struct MutableImageView {
  uint8_t* data = nullptr;
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t channels = 0;
  size_t stride = 0;

  uint8_t* row(uint32_t y) const { return data + size_t{y} * stride; }
  operator ImageView() const { return {data, width, height, channels, stride}; }  // NOLINT
};

}  // namespace stoker::pipeline
