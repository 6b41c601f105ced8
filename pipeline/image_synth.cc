// The synthetic image generator: layers composed in floating point, then
// quantized once.
#include "pipeline/image_synth.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "pipeline/random.h"

namespace stoker::pipeline {
namespace {

constexpr uint32_t kMaxChannels = 3;
using Color = std::array<float, kMaxChannels>;

Color random_color(Rng& rng) {
  return {static_cast<float>(rng.uniform(0, 255)), static_cast<float>(rng.uniform(0, 255)),
          static_cast<float>(rng.uniform(0, 255))};
}

float smoothstep(float t) { return t * t * (3.0f - 2.0f * t); }

}  // namespace

std::vector<uint8_t> synthesize_image(uint32_t width, uint32_t height, uint32_t channels,
                                      uint64_t seed) {
  Rng rng(mix_seed({seed, static_cast<uint64_t>(RandomPurpose::kData)}));
  const size_t pixels = size_t{width} * height;
  std::vector<float> img(pixels * kMaxChannels);

  // 1. A smooth background: a coarse grid of colours, interpolated.
  constexpr uint32_t kGridX = 5, kGridY = 4;
  std::array<std::array<Color, kGridX>, kGridY> grid{};
  for (auto& row : grid) {
    for (auto& c : row) c = random_color(rng);
  }
  for (uint32_t y = 0; y < height; ++y) {
    const float gy = static_cast<float>(y) / static_cast<float>(height) * (kGridY - 1);
    const auto iy = std::min(static_cast<uint32_t>(gy), kGridY - 2);
    const float ty = smoothstep(gy - static_cast<float>(iy));
    for (uint32_t x = 0; x < width; ++x) {
      const float gx = static_cast<float>(x) / static_cast<float>(width) * (kGridX - 1);
      const auto ix = std::min(static_cast<uint32_t>(gx), kGridX - 2);
      const float tx = smoothstep(gx - static_cast<float>(ix));
      float* p = &img[(size_t{y} * width + x) * kMaxChannels];
      for (uint32_t c = 0; c < kMaxChannels; ++c) {
        const float top = grid[iy][ix][c] * (1 - tx) + grid[iy][ix + 1][c] * tx;
        const float bottom = grid[iy + 1][ix][c] * (1 - tx) + grid[iy + 1][ix + 1][c] * tx;
        p[c] = top * (1 - ty) + bottom * ty;
      }
    }
  }

  // 2. Shapes (ellipses and rectangles) with soft edges, some textured.
  const auto shapes = static_cast<int>(8 + rng.below(12));
  const float scale = static_cast<float>(std::min(width, height));
  for (int s = 0; s < shapes; ++s) {
    const auto cx = static_cast<float>(rng.uniform(0, width));
    const auto cy = static_cast<float>(rng.uniform(0, height));
    const auto rx = static_cast<float>(rng.uniform(0.04, 0.35)) * scale;
    const auto ry = static_cast<float>(rng.uniform(0.04, 0.35)) * scale;
    const bool ellipse = rng.bernoulli(0.6);
    const auto alpha = static_cast<float>(rng.uniform(0.5, 1.0));
    const Color color = random_color(rng);
    const bool textured = rng.bernoulli(0.5);
    const auto fx = static_cast<float>(rng.uniform(0.05, 0.9));
    const auto fy = static_cast<float>(rng.uniform(0.05, 0.9));
    const auto amp = static_cast<float>(rng.uniform(10, 45));
    const auto x0 = static_cast<uint32_t>(std::max(0.0f, cx - rx - 2));
    const auto x1 = static_cast<uint32_t>(std::min(static_cast<float>(width), cx + rx + 2));
    const auto y0 = static_cast<uint32_t>(std::max(0.0f, cy - ry - 2));
    const auto y1 = static_cast<uint32_t>(std::min(static_cast<float>(height), cy + ry + 2));
    for (uint32_t y = y0; y < y1; ++y) {
      for (uint32_t x = x0; x < x1; ++x) {
        const float dx = (static_cast<float>(x) - cx) / rx;
        const float dy = (static_cast<float>(y) - cy) / ry;
        // Signed distance to the edge, in pixels (approximately).
        const float d = ellipse
                            ? (std::sqrt(dx * dx + dy * dy) - 1.0f) * std::min(rx, ry)
                            : (std::max(std::fabs(dx), std::fabs(dy)) - 1.0f) * std::min(rx, ry);
        const float cover = std::clamp(0.5f - d / 1.5f, 0.0f, 1.0f) * alpha;
        if (cover <= 0) continue;
        const float texture = textured ? amp * std::sin(fx * static_cast<float>(x)) *
                                             std::cos(fy * static_cast<float>(y))
                                       : 0.0f;
        float* p = &img[(size_t{y} * width + x) * kMaxChannels];
        for (uint32_t c = 0; c < kMaxChannels; ++c) {
          p[c] = p[c] * (1 - cover) + (color[c] + texture) * cover;
        }
      }
    }
  }

  // 3. Sensor noise, roughly Gaussian (sum of uniforms), per channel.
  const auto sigma = static_cast<float>(rng.uniform(17, 25));
  std::vector<uint8_t> out(pixels * channels);
  for (size_t i = 0; i < pixels; ++i) {
    const float* p = &img[i * kMaxChannels];
    float v[kMaxChannels];
    for (uint32_t c = 0; c < kMaxChannels; ++c) {
      const uint64_t r = rng.next();
      // Four 16-bit uniforms: mean 2, variance 4/12.
      const float u = static_cast<float>((r & 0xFFFF) + ((r >> 16) & 0xFFFF) +
                                         ((r >> 32) & 0xFFFF) + (r >> 48)) /
                      65536.0f;
      v[c] = p[c] + (u - 2.0f) * sigma * 1.7320508f;
    }
    if (channels == 1) {
      out[i] = static_cast<uint8_t>(
          std::clamp(0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2] + 0.5f, 0.0f, 255.0f));
    } else {
      for (uint32_t c = 0; c < channels; ++c) {
        out[i * channels + c] = static_cast<uint8_t>(std::clamp(v[c] + 0.5f, 0.0f, 255.0f));
      }
    }
  }
  return out;
}

}  // namespace stoker::pipeline
