// PNG through png_image (libpng >= 1.6).
#include "pipeline/png_codec.h"

#include <fmt/format.h>
#include <png.h>

#include <cstring>

namespace stoker::pipeline {
namespace {

// png_image owns libpng state until png_image_free (finish_read frees it too).
class PngImage {
 public:
  PngImage() {
    std::memset(&image_, 0, sizeof image_);
    image_.version = PNG_IMAGE_VERSION;
  }
  ~PngImage() { png_image_free(&image_); }
  PngImage(const PngImage&) = delete;
  PngImage& operator=(const PngImage&) = delete;
  png_image* get() { return &image_; }
  std::string message() const { return image_.message; }

 private:
  png_image image_;
};

}  // namespace

bool looks_like_png(std::string_view b) {
  static constexpr unsigned char kMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), kMagic, 8) == 0;
}

Status read_png_header(std::string_view png, uint32_t& width, uint32_t& height) {
  PngImage image;
  if (png_image_begin_read_from_memory(image.get(), png.data(), png.size()) == 0) {
    return invalid_argument(fmt::format("PNG header: {}", image.message()));
  }
  width = image.get()->width;
  height = image.get()->height;
  return Status::ok();
}

Status decode_png(std::string_view png, uint32_t channels, std::vector<uint8_t>& out,
                  uint32_t& width, uint32_t& height) {
  PngImage image;
  if (png_image_begin_read_from_memory(image.get(), png.data(), png.size()) == 0) {
    return invalid_argument(fmt::format("PNG header: {}", image.message()));
  }
  width = image.get()->width;
  height = image.get()->height;
  image.get()->format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  out.resize(PNG_IMAGE_SIZE(*image.get()));
  if (png_image_finish_read(image.get(), nullptr, out.data(), 0, nullptr) == 0) {
    return invalid_argument(fmt::format("PNG: {}", image.message()));
  }
  return Status::ok();
}

Result<std::string> encode_png(const uint8_t* pixels, uint32_t width, uint32_t height,
                               uint32_t channels) {
  PngImage image;
  image.get()->width = width;
  image.get()->height = height;
  image.get()->format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (png_image_write_to_memory(image.get(), nullptr, &size, 0, pixels, 0, nullptr) == 0) {
    return internal_error(fmt::format("PNG encode: {}", image.message()));
  }
  std::string out(size, '\0');
  if (png_image_write_to_memory(image.get(), out.data(), &size, 0, pixels, 0, nullptr) == 0) {
    return internal_error(fmt::format("PNG encode: {}", image.message()));
  }
  out.resize(size);
  return out;
}

}  // namespace stoker::pipeline
