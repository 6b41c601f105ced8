// The collation API (stoker/collate.h): validates every tensor and option,
// decides where the work runs and hands checked arguments to the kernels in
// kernels.cu. Nothing is launched or written unless every check passed.
#include "stoker/collate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "gpu/collate/kernels.h"
#include "gpu/collate/numeric.h"
#include "gpu/stream.h"
#include "stoker/landing.h"

namespace stoker {
namespace {

using collate_detail::Executor;
using collate_detail::FloatFormat;

// A tensor of a call, named by its role for error messages.
struct Operand {
  std::string_view role;
  const TensorView* view;
  bool output;
};

std::string shape_string(std::span<const int64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Status check_dtype(std::string_view op, std::string_view role, const TensorView& view,
                   DType expected) {
  if (view.dtype() == expected) return Status::ok();
  return invalid_argument(
      fmt::format("{}: {} must be {} but is {}", op, role, dtype_name(expected), view.to_string()));
}

Status check_spec(std::string_view op, std::string_view role, const TensorView& view,
                  const TensorSpec& expected) {
  if (view.dtype() == expected.dtype &&
      std::ranges::equal(view.shape(), std::span<const int64_t>(expected.shape))) {
    return Status::ok();
  }
  return invalid_argument(fmt::format("{}: {} must be {}{} but is {}", op, role,
                                      dtype_name(expected.dtype), shape_string(expected.shape),
                                      view.to_string()));
}

bool host_readable(const TensorView& view) { return view.memory() != MemoryKind::kDevice; }

bool overlaps(const TensorView& a, const TensorView& b) {
  if (a.byte_size() == 0 || b.byte_size() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<uintptr_t>(b.data());
  return a0 < b0 + b.byte_size() && b0 < a0 + a.byte_size();
}

// Decides where the work of `op` runs (collate.h: "Where the work runs") and
// checks what every tensor needs for that: contiguity, element alignment,
// one GPU, memory the executor can reach, outputs that overlap nothing.
Result<Executor> plan_execution(std::string_view op, std::span<const Operand> operands,
                                StreamRef stream) {
  const Operand* on_gpu = nullptr;
  for (const Operand& o : operands) {
    const TensorView& v = *o.view;
    if (!v.is_contiguous()) {
      return invalid_argument(
          fmt::format("{}: {} ({}) is not contiguous", op, o.role, v.to_string()));
    }
    if (reinterpret_cast<uintptr_t>(v.data()) % dtype_size(v.dtype()) != 0) {
      return invalid_argument(fmt::format("{}: {} at {} is not aligned to its {}-byte elements", op,
                                          o.role, v.data(), dtype_size(v.dtype())));
    }
    if (v.memory() == MemoryKind::kDevice && on_gpu == nullptr) on_gpu = &o;
  }
  for (const Operand& o : operands) {
    if (!o.output) continue;
    for (const Operand& other : operands) {
      if (&other != &o && overlaps(*o.view, *other.view)) {
        return invalid_argument(
            fmt::format("{}: {} overlaps {} in memory", op, o.role, other.role));
      }
    }
  }
  if (on_gpu == nullptr) return Executor{};  // host threads

  if (!build_has_cuda()) {
    return unsupported(fmt::format(
        "{}: {} is in device memory, and this build of stoker has no CUDA (configured with "
        "STOKER_CUDA=OFF or without nvcc)",
        op, on_gpu->role));
  }
  const int device = on_gpu->view->device();
  for (const Operand& o : operands) {
    const TensorView& v = *o.view;
    if (v.memory() == MemoryKind::kHost && v.byte_size() != 0) {
      return invalid_argument(fmt::format(
          "{}: {} is in host (pageable) memory, which the GPU cannot read, while {} is in device "
          "memory: use pinned or device memory for it, or copy it first",
          op, o.role, on_gpu->role));
    }
    if (v.memory() == MemoryKind::kDevice && v.device() != device) {
      return invalid_argument(fmt::format("{}: {} is on GPU {} but {} is on GPU {}", op, o.role,
                                          v.device(), on_gpu->role, device));
    }
  }
  STOKER_ASSIGN_OR_RETURN(const int stream_gpu, stream_device(stream));
  if (!stream.is_default() && stream_gpu != device) {
    return invalid_argument(
        fmt::format("{}: the stream belongs to GPU {} but the tensors are on "
                    "GPU {}",
                    op, stream_gpu, device));
  }
  return Executor{.on_device = true, .device = device, .stream = stream.handle()};
}

Result<FloatFormat> float_format(std::string_view op, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return FloatFormat::kFloat32;
    case DType::kFloat16:
      return FloatFormat::kFloat16;
    case DType::kBFloat16:
      return FloatFormat::kBFloat16;
    default:
      return invalid_argument(fmt::format(
          "{}: output dtype must be float32, float16 or bfloat16, not {}", op, dtype_name(dtype)));
  }
}

// ---------------------------------------------------------------------------
// Images

constexpr std::string_view kImageOp = "collate_image";

// mean/stddev of channel c: one value per channel, or one for all.
double channel_value(const std::vector<float>& values, int64_t c) {
  return values.size() == 1 ? values[0] : values[static_cast<size_t>(c)];
}

Status check_image_options(const ImageCollation& options, int64_t channels) {
  STOKER_RETURN_IF_ERROR(float_format(kImageOp, options.output_dtype).status());
  const auto check_stats = [&](std::string_view name, const std::vector<float>& values,
                               bool nonzero) -> Status {
    if (values.size() != 1 && values.size() != static_cast<size_t>(channels)) {
      return invalid_argument(
          fmt::format("{}: {} has {} values but the images have {} channels "
                      "(give one value per channel, or one for all)",
                      kImageOp, name, values.size(), channels));
    }
    for (size_t c = 0; c < values.size(); ++c) {
      if (!std::isfinite(values[c]) || (nonzero && values[c] == 0.0f)) {
        return invalid_argument(fmt::format("{}: {}[{}] = {} must be finite{}", kImageOp, name, c,
                                            values[c], nonzero ? " and non-zero" : ""));
      }
    }
    return Status::ok();
  };
  STOKER_RETURN_IF_ERROR(check_stats("mean", options.mean, false));
  STOKER_RETURN_IF_ERROR(check_stats("stddev", options.stddev, true));
  if (options.random_flip &&
      !(options.flip_probability >= 0.0 && options.flip_probability <= 1.0)) {
    return invalid_argument(fmt::format("{}: flip_probability {} is not in [0, 1]", kImageOp,
                                        options.flip_probability));
  }
  return Status::ok();
}

uint32_t flip_threshold(const ImageCollation& options) {
  if (!options.random_flip) return 0;
  return static_cast<uint32_t>(std::llround(options.flip_probability * 16777216.0));
}

}  // namespace

bool image_sample_flipped(const ImageCollation& options, uint64_t index) {
  return options.random_flip &&
         collate_detail::flip_sample(options.seed, options.first_sample + index,
                                     flip_threshold(options));
}

Result<TensorSpec> image_output_spec(const TensorView& images, const ImageCollation& options) {
  STOKER_RETURN_IF_ERROR(check_dtype(kImageOp, "images", images, DType::kUInt8));
  if (images.ndim() != 4) {
    return invalid_argument(fmt::format("{}: images must be uint8 [B, H, W, C] but are {}",
                                        kImageOp, images.to_string()));
  }
  const int64_t channels = images.dim(3);
  if (channels < 1 || channels > collate_detail::kMaxImageChannels) {
    return invalid_argument(fmt::format("{}: images have {} channels ({}); 1 to {} are supported",
                                        kImageOp, channels, images.to_string(),
                                        collate_detail::kMaxImageChannels));
  }
  STOKER_RETURN_IF_ERROR(check_image_options(options, channels));
  const int64_t b = images.dim(0), h = images.dim(1), w = images.dim(2);
  TensorSpec spec{.dtype = options.output_dtype, .shape = {b, channels, h, w}};
  if (options.layout == ImageLayout::kNHWC) spec.shape = {b, h, w, channels};
  return spec;
}

Status collate_image(const TensorView& images, const TensorView& out, const ImageCollation& options,
                     StreamRef stream) {
  STOKER_ASSIGN_OR_RETURN(const TensorSpec spec, image_output_spec(images, options));
  STOKER_RETURN_IF_ERROR(check_spec(kImageOp, "out", out, spec));
  const Operand operands[] = {{"images", &images, false}, {"out", &out, true}};
  STOKER_ASSIGN_OR_RETURN(const Executor executor, plan_execution(kImageOp, operands, stream));
  STOKER_ASSIGN_OR_RETURN(const FloatFormat format, float_format(kImageOp, options.output_dtype));

  collate_detail::ImageArgs args;
  args.in = images.data_as<const uint8_t>();
  args.out = out.data();
  args.batch = images.dim(0);
  args.height = images.dim(1);
  args.width = images.dim(2);
  args.channels = images.dim(3);
  for (int64_t c = 0; c < args.channels; ++c) {
    // Computed in double and rounded once: the same scale and bias everywhere.
    const double mean = channel_value(options.mean, c);
    const double stddev = channel_value(options.stddev, c);
    args.scale[c] = static_cast<float>(1.0 / (255.0 * stddev));
    args.bias[c] = static_cast<float>(-mean / stddev);
  }
  args.format = format;
  args.nchw = options.layout == ImageLayout::kNCHW;
  args.flip = options.random_flip;
  args.flip_threshold = flip_threshold(options);
  args.seed = options.seed;
  args.first_sample = options.first_sample;
  return collate_detail::launch_image(args, executor);
}

// ---------------------------------------------------------------------------
// Sequences

namespace {

constexpr std::string_view kSequenceOp = "collate_sequences";

Status check_sequence_inputs(const TensorView& tokens, const TensorView& offsets,
                             const SequenceCollation& options) {
  STOKER_RETURN_IF_ERROR(check_dtype(kSequenceOp, "tokens", tokens, DType::kInt32));
  STOKER_RETURN_IF_ERROR(check_dtype(kSequenceOp, "offsets", offsets, DType::kInt32));
  if (tokens.ndim() != 1) {
    return invalid_argument(
        fmt::format("{}: tokens must be int32 [T] but are {}", kSequenceOp, tokens.to_string()));
  }
  if (offsets.ndim() != 1 || offsets.dim(0) < 1) {
    return invalid_argument(fmt::format("{}: offsets must be int32 [B + 1] but are {}", kSequenceOp,
                                        offsets.to_string()));
  }
  if (options.max_length <= 0) {
    return invalid_argument(
        fmt::format("{}: max_length must be positive, not {}", kSequenceOp, options.max_length));
  }
  if (options.ids_dtype != DType::kInt32 && options.ids_dtype != DType::kInt64) {
    return invalid_argument(fmt::format("{}: ids_dtype must be int32 or int64, not {}", kSequenceOp,
                                        dtype_name(options.ids_dtype)));
  }
  switch (options.mask_dtype) {
    case DType::kBool:
    case DType::kUInt8:
    case DType::kInt32:
    case DType::kInt64:
    case DType::kFloat32:
      break;
    default:
      return invalid_argument(
          fmt::format("{}: mask_dtype must be bool, uint8, int32, int64 or float32, not {}",
                      kSequenceOp, dtype_name(options.mask_dtype)));
  }
  if (options.ids_dtype == DType::kInt32 &&
      (options.pad_id < std::numeric_limits<int32_t>::min() ||
       options.pad_id > std::numeric_limits<int32_t>::max())) {
    return invalid_argument(
        fmt::format("{}: pad_id {} does not fit int32 ids", kSequenceOp, options.pad_id));
  }
  return Status::ok();
}

// Checks offsets the host can read; returns the longest sample.
Result<int64_t> check_host_offsets(const TensorView& offsets, int64_t token_count) {
  const int32_t* o = offsets.data_as<const int32_t>();
  const int64_t n = offsets.dim(0);
  if (o[0] < 0) {
    return invalid_argument(fmt::format("{}: offsets[0] = {} is negative", kSequenceOp, o[0]));
  }
  int64_t longest = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (o[i] < o[i - 1]) {
      return invalid_argument(
          fmt::format("{}: offsets[{}] = {} is less than offsets[{}] = {} (offsets must not "
                      "decrease)",
                      kSequenceOp, i, o[i], i - 1, o[i - 1]));
    }
    longest = std::max<int64_t>(longest, int64_t{o[i]} - o[i - 1]);
  }
  if (o[n - 1] > token_count) {
    return invalid_argument(fmt::format("{}: offsets[{}] = {} lies beyond the {} tokens",
                                        kSequenceOp, n - 1, o[n - 1], token_count));
  }
  return longest;
}

TensorSpec batch_spec(DType dtype, int64_t batch, int64_t length) {
  return TensorSpec{.dtype = dtype, .shape = {batch, length}};
}

collate_detail::MaskFormat mask_format(DType dtype) {
  switch (dtype) {
    case DType::kInt32:
      return collate_detail::MaskFormat::kInt32;
    case DType::kInt64:
      return collate_detail::MaskFormat::kInt64;
    case DType::kFloat32:
      return collate_detail::MaskFormat::kFloat32;
    default:  // bool and uint8: one byte, 0 or 1
      return collate_detail::MaskFormat::kByte;
  }
}

}  // namespace

Result<SequenceOutputSpec> sequence_output_spec(const TensorView& tokens, const TensorView& offsets,
                                                const SequenceCollation& options) {
  STOKER_RETURN_IF_ERROR(check_sequence_inputs(tokens, offsets, options));
  const int64_t batch = offsets.dim(0) - 1;
  int64_t length = options.max_length;
  if (!options.pad_to_max_length) {
    if (!host_readable(offsets)) {
      return failed_precondition(fmt::format(
          "{}: the padded length depends on the longest sample, and the offsets are in device "
          "memory: set pad_to_max_length, or give offsets in host or pinned memory",
          kSequenceOp));
    }
    STOKER_ASSIGN_OR_RETURN(const int64_t longest, check_host_offsets(offsets, tokens.dim(0)));
    length = std::min(longest, options.max_length);
  }
  SequenceOutputSpec spec;
  spec.length = length;
  spec.ids = batch_spec(options.ids_dtype, batch, length);
  spec.mask = batch_spec(options.mask_dtype, batch, length);
  if (options.position_ids) spec.positions = batch_spec(options.ids_dtype, batch, length);
  return spec;
}

Status collate_sequences(const TensorView& tokens, const TensorView& offsets,
                         const SequenceOutputs& out, const SequenceCollation& options,
                         StreamRef stream) {
  STOKER_RETURN_IF_ERROR(check_sequence_inputs(tokens, offsets, options));
  const int64_t batch = offsets.dim(0) - 1;
  if (out.ids.ndim() != 2) {
    return invalid_argument(fmt::format("{}: ids must be {} [B, L] but are {}", kSequenceOp,
                                        dtype_name(options.ids_dtype), out.ids.to_string()));
  }
  const int64_t length = out.ids.dim(1);
  if (length > options.max_length || (options.pad_to_max_length && length != options.max_length)) {
    return invalid_argument(fmt::format(
        "{}: ids have length {}, but max_length is {}{}", kSequenceOp, length, options.max_length,
        options.pad_to_max_length ? " and pad_to_max_length is set" : ""));
  }
  STOKER_RETURN_IF_ERROR(
      check_spec(kSequenceOp, "ids", out.ids, batch_spec(options.ids_dtype, batch, length)));
  STOKER_RETURN_IF_ERROR(
      check_spec(kSequenceOp, "mask", out.mask, batch_spec(options.mask_dtype, batch, length)));
  if (options.position_ids != out.positions.has_value()) {
    return invalid_argument(
        fmt::format("{}: options.position_ids is {} but position ids were {}given", kSequenceOp,
                    options.position_ids, out.positions.has_value() ? "" : "not "));
  }
  if (out.positions) {
    STOKER_RETURN_IF_ERROR(check_spec(kSequenceOp, "positions", *out.positions,
                                      batch_spec(options.ids_dtype, batch, length)));
  }
  if (out.malformed_samples) {
    STOKER_RETURN_IF_ERROR(check_spec(kSequenceOp, "malformed_samples", *out.malformed_samples,
                                      TensorSpec{.dtype = DType::kInt32, .shape = {1}}));
  }
  if (host_readable(offsets)) {
    STOKER_RETURN_IF_ERROR(check_host_offsets(offsets, tokens.dim(0)).status());
  }

  std::vector<Operand> operands = {{"tokens", &tokens, false},
                                   {"offsets", &offsets, false},
                                   {"ids", &out.ids, true},
                                   {"mask", &out.mask, true}};
  if (out.positions) operands.push_back({"positions", &*out.positions, true});
  if (out.malformed_samples) {
    operands.push_back({"malformed_samples", &*out.malformed_samples, true});
  }
  STOKER_ASSIGN_OR_RETURN(const Executor executor, plan_execution(kSequenceOp, operands, stream));

  collate_detail::SequenceArgs args;
  args.tokens = tokens.data_as<const int32_t>();
  args.token_count = tokens.dim(0);
  args.offsets = offsets.data_as<const int32_t>();
  args.batch = batch;
  args.length = length;
  args.ids = out.ids.data();
  args.mask = out.mask.data();
  args.positions = out.positions ? out.positions->data() : nullptr;
  args.pad_id = options.pad_id;
  args.id_format = options.ids_dtype == DType::kInt64 ? collate_detail::IdFormat::kInt64
                                                      : collate_detail::IdFormat::kInt32;
  args.mask_format = mask_format(options.mask_dtype);
  if (out.malformed_samples) {
    args.malformed = out.malformed_samples->data_as<int32_t>();
    if (executor.on_device) {
      STOKER_RETURN_IF_ERROR(memset_async(args.malformed, 0, sizeof(int32_t), stream));
    } else {
      *args.malformed = 0;
    }
  }
  return collate_detail::launch_sequences(args, executor);
}

// ---------------------------------------------------------------------------
// Dense features

namespace {

constexpr std::string_view kDenseOp = "collate_dense";

Result<collate_detail::DenseFormat> dense_format(const TensorView& feature, size_t index) {
  switch (feature.dtype()) {
    case DType::kFloat32:
      return collate_detail::DenseFormat::kFloat32;
    case DType::kFloat16:
      return collate_detail::DenseFormat::kFloat16;
    case DType::kBFloat16:
      return collate_detail::DenseFormat::kBFloat16;
    case DType::kUInt8:
      return collate_detail::DenseFormat::kUInt8;
    default:
      return invalid_argument(
          fmt::format("{}: feature {} is {}; features must be float32, float16, bfloat16 or uint8",
                      kDenseOp, index, feature.to_string()));
  }
}

int64_t feature_width(const TensorView& feature) {
  return feature.ndim() == 2 ? feature.dim(1) : 1;
}

}  // namespace

Result<TensorSpec> dense_output_spec(std::span<const TensorView> features,
                                     const DenseCollation& options) {
  STOKER_RETURN_IF_ERROR(float_format(kDenseOp, options.output_dtype).status());
  if (features.empty()) return invalid_argument(fmt::format("{}: no features", kDenseOp));
  const int64_t batch = features[0].ndim() >= 1 ? features[0].dim(0) : 0;
  int64_t width = 0;
  for (size_t k = 0; k < features.size(); ++k) {
    const TensorView& f = features[k];
    STOKER_RETURN_IF_ERROR(dense_format(f, k).status());
    if (f.ndim() != 1 && f.ndim() != 2) {
      return invalid_argument(fmt::format("{}: feature {} must be [B, d] or [B] but is {}",
                                          kDenseOp, k, f.to_string()));
    }
    if (f.dim(0) != batch) {
      return invalid_argument(fmt::format("{}: feature {} has {} samples ({}) but feature 0 has {}",
                                          kDenseOp, k, f.dim(0), f.to_string(), batch));
    }
    width += feature_width(f);
  }
  return TensorSpec{.dtype = options.output_dtype, .shape = {batch, width}};
}

Status collate_dense(std::span<const TensorView> features, const TensorView& out,
                     const DenseCollation& options, StreamRef stream) {
  STOKER_ASSIGN_OR_RETURN(const TensorSpec spec, dense_output_spec(features, options));
  STOKER_RETURN_IF_ERROR(check_spec(kDenseOp, "out", out, spec));
  std::vector<std::string> roles;
  roles.reserve(features.size());
  std::vector<Operand> operands;
  for (size_t k = 0; k < features.size(); ++k) {
    roles.push_back(fmt::format("feature {}", k));
    operands.push_back({roles.back(), &features[k], false});
  }
  operands.push_back({"out", &out, true});
  STOKER_ASSIGN_OR_RETURN(const Executor executor, plan_execution(kDenseOp, operands, stream));
  STOKER_ASSIGN_OR_RETURN(const FloatFormat format, float_format(kDenseOp, options.output_dtype));

  // Up to kDenseFeaturesPerLaunch features per launch, each launch writing
  // its own range of output columns.
  int64_t column = 0;
  for (size_t first = 0; first < features.size();
       first += collate_detail::kDenseFeaturesPerLaunch) {
    collate_detail::DenseArgs args;
    args.batch = spec.shape[0];
    args.out_width = spec.shape[1];
    args.first_column = column;
    args.out = out.data();
    args.format = format;
    args.uint8_scale = options.uint8_scale;
    const size_t last = std::min(features.size(), first + collate_detail::kDenseFeaturesPerLaunch);
    for (size_t k = first; k < last; ++k) {
      STOKER_ASSIGN_OR_RETURN(const auto feature_format, dense_format(features[k], k));
      args.features[args.feature_count++] = {.data = features[k].data(),
                                             .width = feature_width(features[k]),
                                             .format = feature_format};
      column += feature_width(features[k]);
    }
    STOKER_RETURN_IF_ERROR(collate_detail::launch_dense(args, executor));
  }
  return Status::ok();
}

}  // namespace stoker
