// PNG decoding and encoding with libpng's simplified API (no setjmp exposed,
// errors come back as messages).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "stoker/result.h"

namespace stoker::pipeline {

bool looks_like_png(std::string_view bytes);

// The image size from the header.
Status read_png_header(std::string_view png, uint32_t& width, uint32_t& height);

// Decodes the whole image as `channels` (1: gray, 3: RGB) into `out`.
Status decode_png(std::string_view png, uint32_t channels, std::vector<uint8_t>& out,
                  uint32_t& width, uint32_t& height);

// 8-bit gray (1) or RGB (3) pixels to a PNG file's bytes.
Result<std::string> encode_png(const uint8_t* pixels, uint32_t width, uint32_t height,
                               uint32_t channels);

}  // namespace stoker::pipeline
