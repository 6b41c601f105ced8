// JPEG decoding and encoding with libjpeg-turbo.
//
// Decoding uses the libjpeg API of libjpeg-turbo rather than TurboJPEG's
// tjDecompress2: TurboJPEG 2.1 decodes whole images only, and a
// random-resized crop needs on average about half of the image. The libjpeg
// API decodes just the region (jpeg_crop_scanline for columns,
// jpeg_skip_scanlines for the rows above, stopping after the last row
// needed) and applies the same DCT scaling tjDecompress2 offers
// (tjGetScalingFactors' 1/2, 1/4, 1/8: the SIMD-accelerated ones). The
// pixels are those of a full decode (tests check it against tjDecompress2).
// Encoding uses TurboJPEG's tjCompress2.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/image_view.h"
#include "stoker/result.h"

namespace stoker::pipeline {

// Whether `bytes` starts like a JPEG (SOI marker).
bool looks_like_jpeg(std::string_view bytes);

// One per thread: keeps libjpeg's state and buffers from image to image.
// Corrupt data, including what libjpeg only warns about (a truncated
// stream it would pad with grey), is an error.
class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Parses the headers of `jpeg` (which must stay alive until decode()
  // returns) and gives the image size.
  Status read_header(std::string_view jpeg, uint32_t& width, uint32_t& height);

  // The image size after scaling by 1/denom, as libjpeg rounds it.
  static uint32_t scaled_size(uint32_t size, uint32_t denom) { return (size + denom - 1) / denom; }

  // Decodes columns [x0, x1) and rows [y0, y1) of the image scaled by
  // 1/denom (1, 2, 4 or 8), in scaled coordinates, as `channels` (1: gray,
  // 3: RGB). The view lives in the decoder until its next call.
  Result<ImageView> decode(uint32_t denom, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1,
                           uint32_t channels);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Compresses 8-bit pixels (1 or 3 channels, rows of width * channels bytes)
// at `quality` (1-100) with 4:2:0 chroma subsampling (Pillow's default).
Result<std::string> encode_jpeg(const uint8_t* pixels, uint32_t width, uint32_t height,
                                uint32_t channels, int quality);

// Decodes a whole image with TurboJPEG's tjDecompress2, scaled by 1/denom
// (a factor tjGetScalingFactors lists): the plain reference the region
// decoder is tested against. width and height are the scaled size.
Result<std::vector<uint8_t>> decode_jpeg_whole(std::string_view jpeg, uint32_t channels,
                                               uint32_t denom, uint32_t& width, uint32_t& height);

}  // namespace stoker::pipeline
