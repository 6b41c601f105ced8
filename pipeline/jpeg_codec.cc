// libjpeg's error handling is setjmp/longjmp. Every function that calls into
// libjpeg and may jump back is a C-style function with no C++ object of
// non-trivial destruction alive in its frame (jumping over one would skip
// its destructor); buffers are sized by the C++ code around them.
#include "pipeline/jpeg_codec.h"

#include <fmt/format.h>
#include <turbojpeg.h>

#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>

namespace stoker::pipeline {

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

struct JpegDecoder::Impl {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  bool has_header = false;
  std::vector<uint8_t> pixels;  // decoded rows
  std::vector<uint8_t> rgb;     // CMYK converted to the requested channels
};

namespace {

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) are corrupt data libjpeg would paper over: fail.
// Trace messages (level >= 0) are ignored.
void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) on_error(cinfo);
}

void output_nothing(j_common_ptr) {}

int c_read_header(JpegDecoder::Impl* d, const unsigned char* data, unsigned long size) {
  if (setjmp(d->err.jump)) return -1;
  jpeg_abort_decompress(&d->cinfo);
  jpeg_mem_src(&d->cinfo, data, size);
  jpeg_read_header(&d->cinfo, TRUE);
  return 0;
}

// Starts decompression at 1/denom and restricts columns to [*x0, *x0 + *width),
// which libjpeg widens to iMCU boundaries.
int c_start(JpegDecoder::Impl* d, unsigned denom, J_COLOR_SPACE out_space, JDIMENSION* x0,
            JDIMENSION* width) {
  if (setjmp(d->err.jump)) return -1;
  d->cinfo.scale_num = 1;
  d->cinfo.scale_denom = denom;
  d->cinfo.out_color_space = out_space;
  d->cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&d->cinfo);
  if (*x0 != 0 || *width != d->cinfo.output_width) jpeg_crop_scanline(&d->cinfo, x0, width);
  return 0;
}

// Skips to row y0, reads rows [y0, y1) into `out` and stops: the rows below
// are never decoded.
int c_read_rows(JpegDecoder::Impl* d, JDIMENSION y0, JDIMENSION y1, unsigned char* out,
                size_t stride) {
  if (setjmp(d->err.jump)) return -1;
  if (y0 > 0) jpeg_skip_scanlines(&d->cinfo, y0);
  JSAMPROW rows[16];
  while (d->cinfo.output_scanline < y1) {
    const JDIMENSION first = d->cinfo.output_scanline;
    JDIMENSION n = y1 - first;
    if (n > 16) n = 16;
    for (JDIMENSION i = 0; i < n; ++i) rows[i] = out + (first - y0 + i) * stride;
    jpeg_read_scanlines(&d->cinfo, rows, n);
  }
  jpeg_abort_decompress(&d->cinfo);
  return 0;
}

void c_abort(JpegDecoder::Impl* d) {
  if (setjmp(d->err.jump)) return;
  jpeg_abort_decompress(&d->cinfo);
}

// CMYK (Adobe files store it inverted) to RGB or gray, as Pillow converts it.
void convert_cmyk(const uint8_t* in, size_t count, bool inverted, uint32_t channels, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = in + 4 * i;
    const int c = inverted ? p[0] : 255 - p[0];
    const int m = inverted ? p[1] : 255 - p[1];
    const int y = inverted ? p[2] : 255 - p[2];
    const int k = inverted ? p[3] : 255 - p[3];
    const int r = c * k / 255;
    const int g = m * k / 255;
    const int b = y * k / 255;
    if (channels == 3) {
      out[3 * i + 0] = static_cast<uint8_t>(r);
      out[3 * i + 1] = static_cast<uint8_t>(g);
      out[3 * i + 2] = static_cast<uint8_t>(b);
    } else {
      out[i] = static_cast<uint8_t>((r * 299 + g * 587 + b * 114) / 1000);
    }
  }
}

struct TjHandle {
  tjhandle h;
  explicit TjHandle(tjhandle handle) : h(handle) {}
  ~TjHandle() {
    if (h != nullptr) tjDestroy(h);
  }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
};

}  // namespace

bool looks_like_jpeg(std::string_view b) {
  return b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF &&
         static_cast<uint8_t>(b[1]) == 0xD8 && static_cast<uint8_t>(b[2]) == 0xFF;
}

JpegDecoder::JpegDecoder() : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  std::memset(&d.cinfo, 0, sizeof d.cinfo);
  d.cinfo.err = jpeg_std_error(&d.err.pub);
  d.err.pub.error_exit = on_error;
  d.err.pub.emit_message = on_message;
  d.err.pub.output_message = output_nothing;
  d.err.message[0] = '\0';
  // jpeg_create_decompress only fails on out-of-memory, through error_exit.
  if (setjmp(d.err.jump)) {
    impl_.reset();
    return;
  }
  jpeg_create_decompress(&d.cinfo);
}

JpegDecoder::~JpegDecoder() {
  if (impl_) jpeg_destroy_decompress(&impl_->cinfo);
}

Status JpegDecoder::read_header(std::string_view jpeg, uint32_t& width, uint32_t& height) {
  if (!impl_) return resource_exhausted("libjpeg could not allocate a decompressor");
  impl_->has_header = false;
  if (jpeg.empty()) return invalid_argument("empty JPEG");
  if (c_read_header(impl_.get(), reinterpret_cast<const unsigned char*>(jpeg.data()),
                    static_cast<unsigned long>(jpeg.size())) != 0) {
    return invalid_argument(fmt::format("JPEG header: {}", impl_->err.message));
  }
  impl_->has_header = true;
  width = impl_->cinfo.image_width;
  height = impl_->cinfo.image_height;
  return Status::ok();
}

Result<ImageView> JpegDecoder::decode(uint32_t denom, uint32_t x0, uint32_t y0, uint32_t x1,
                                      uint32_t y1, uint32_t channels) {
  if (!impl_ || !impl_->has_header) return internal_error("JpegDecoder::decode without a header");
  Impl& d = *impl_;
  d.has_header = false;
  if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
    return invalid_argument(fmt::format("JPEG scale 1/{} is not one of 1, 1/2, 1/4, 1/8", denom));
  }
  const uint32_t sw = scaled_size(d.cinfo.image_width, denom);
  const uint32_t sh = scaled_size(d.cinfo.image_height, denom);
  if (x0 >= x1 || y0 >= y1 || x1 > sw || y1 > sh) {
    c_abort(&d);
    return invalid_argument(
        fmt::format("region [{}, {}) x [{}, {}) outside the {}x{} image", x0, x1, y0, y1, sw, sh));
  }
  const bool cmyk = d.cinfo.jpeg_color_space == JCS_CMYK || d.cinfo.jpeg_color_space == JCS_YCCK;
  J_COLOR_SPACE space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  if (cmyk) space = JCS_CMYK;
  // Two columns of margin on each side: fancy (smooth) chroma upsampling
  // needs the neighbouring chroma samples, and libjpeg treats the edges of a
  // cropped region as image edges. With the margin the pixels are exactly
  // those of a whole-image decode (the tests check it).
  constexpr uint32_t kMargin = 2;
  JDIMENSION cx = x0 > kMargin ? x0 - kMargin : 0;
  JDIMENSION cw = std::min(sw, x1 + kMargin) - cx;
  if (c_start(&d, denom, space, &cx, &cw) != 0) {
    c_abort(&d);
    return invalid_argument(fmt::format("JPEG: {}", d.err.message));
  }
  const uint32_t components = static_cast<uint32_t>(d.cinfo.output_components);
  const size_t stride = size_t{cw} * components;
  const size_t need = stride * (y1 - y0);
  if (d.pixels.size() < need) d.pixels.resize(need);
  if (c_read_rows(&d, y0, y1, d.pixels.data(), stride) != 0) {
    c_abort(&d);
    return invalid_argument(fmt::format("JPEG: {}", d.err.message));
  }
  ImageView view{d.pixels.data(), cw, y1 - y0, components, stride};
  view = view.crop(x0 - cx, 0, x1 - x0, y1 - y0);
  if (!cmyk) return view;
  const size_t out_stride = size_t{x1 - x0} * channels;
  d.rgb.resize(out_stride * (y1 - y0));
  for (uint32_t y = 0; y < view.height; ++y) {
    convert_cmyk(view.row(y), view.width, d.cinfo.saw_Adobe_marker != 0, channels,
                 d.rgb.data() + y * out_stride);
  }
  return ImageView{d.rgb.data(), x1 - x0, y1 - y0, channels, out_stride};
}

Result<std::string> encode_jpeg(const uint8_t* pixels, uint32_t width, uint32_t height,
                                uint32_t channels, int quality) {
  TjHandle tj(tjInitCompress());
  if (tj.h == nullptr) return resource_exhausted("tjInitCompress failed");
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int format = channels == 1 ? TJPF_GRAY : TJPF_RGB;
  const int subsampling = channels == 1 ? TJSAMP_GRAY : TJSAMP_420;
  const int rc = tjCompress2(tj.h, pixels, static_cast<int>(width), 0, static_cast<int>(height),
                             format, &out, &size, subsampling, quality, 0);
  if (rc != 0) {
    if (out != nullptr) tjFree(out);
    return internal_error(fmt::format("tjCompress2: {}", tjGetErrorStr2(tj.h)));
  }
  std::string jpeg(reinterpret_cast<const char*>(out), size);
  tjFree(out);
  return jpeg;
}

Result<std::vector<uint8_t>> decode_jpeg_whole(std::string_view jpeg, uint32_t channels,
                                               uint32_t denom, uint32_t& width, uint32_t& height) {
  TjHandle tj(tjInitDecompress());
  if (tj.h == nullptr) return resource_exhausted("tjInitDecompress failed");
  int w = 0, h = 0, subsampling = 0, colorspace = 0;
  auto* data = reinterpret_cast<const unsigned char*>(jpeg.data());
  const auto size = static_cast<unsigned long>(jpeg.size());
  if (tjDecompressHeader3(tj.h, data, size, &w, &h, &subsampling, &colorspace) != 0) {
    return invalid_argument(fmt::format("tjDecompressHeader3: {}", tjGetErrorStr2(tj.h)));
  }
  int factors = 0;
  const tjscalingfactor* list = tjGetScalingFactors(&factors);
  const tjscalingfactor* factor = nullptr;
  for (int i = 0; list != nullptr && i < factors; ++i) {
    if (list[i].num == 1 && list[i].denom == static_cast<int>(denom)) factor = &list[i];
  }
  if (factor == nullptr) {
    return invalid_argument(fmt::format("TurboJPEG cannot scale by 1/{}", denom));
  }
  const tjscalingfactor scale = *factor;
  width = static_cast<uint32_t>(TJSCALED(w, scale));
  height = static_cast<uint32_t>(TJSCALED(h, scale));
  std::vector<uint8_t> pixels(size_t{width} * height * channels);
  if (tjDecompress2(tj.h, data, size, pixels.data(), static_cast<int>(width), 0,
                    static_cast<int>(height), channels == 1 ? TJPF_GRAY : TJPF_RGB,
                    TJFLAG_STOPONWARNING) != 0) {
    return invalid_argument(fmt::format("tjDecompress2: {}", tjGetErrorStr2(tj.h)));
  }
  return pixels;
}

}  // namespace stoker::pipeline
