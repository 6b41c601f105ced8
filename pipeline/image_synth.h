// Natural-image-like synthetic images for benchmarks: smooth colour
// gradients, overlapping shapes with soft edges, textured regions and sensor
// noise, so JPEG sizes and decode costs resemble photographs (a 500x375
// image at quality 90 is ~100-150 KB) rather than flat test patterns.
#pragma once

#include <cstdint>
#include <vector>

namespace stoker::pipeline {

// Interleaved 8-bit pixels (rows of width * channels bytes), a deterministic
// function of the arguments.
std::vector<uint8_t> synthesize_image(uint32_t width, uint32_t height, uint32_t channels,
                                      uint64_t seed);

}  // namespace stoker::pipeline
