// Parsing, validation, canonical form and fingerprint of pipeline specs.
// Validation is static (no file is opened): what can only be checked against
// the data (files exist, IDX dimensions) is checked by Pipeline::create.
#include "pipeline/pipeline_spec.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "pipeline/json_reader.h"
#include "pipeline/overloaded.h"

namespace stoker::pipeline {
namespace {

using nlohmann::json;

// ---- parsing helpers -------------------------------------------------------

// `size`: an integer n (n x n) or [height, width].
Result<ImageSize> parse_image_size(const json& value, const std::string& path) {
  constexpr std::string_view kWhat = "a positive integer or [height, width]";
  constexpr uint64_t kMaxSide = 1u << 16;
  if (value.is_number()) {
    STOKER_ASSIGN_OR_RETURN(uint64_t n, json_to_uint(value, path, 1, kMaxSide));
    return ImageSize{static_cast<uint32_t>(n), static_cast<uint32_t>(n)};
  }
  if (!value.is_array() || value.size() != 2) {
    return invalid_argument(
        fmt::format("{}: expected {}, got {}", path, kWhat, json_excerpt(value)));
  }
  STOKER_ASSIGN_OR_RETURN(uint64_t h, json_to_uint(value[0], json_path(path, 0), 1, kMaxSide));
  STOKER_ASSIGN_OR_RETURN(uint64_t w, json_to_uint(value[1], json_path(path, 1), 1, kMaxSide));
  return ImageSize{static_cast<uint32_t>(h), static_cast<uint32_t>(w)};
}

// `[min, max]` with lo <= min <= max <= hi.
Result<std::pair<double, double>> parse_interval(JsonObjectReader& r, std::string_view key,
                                                 std::pair<double, double> fallback, double lo,
                                                 double hi, bool open_low) {
  const json* v = r.get_raw(key);
  if (v == nullptr) return fallback;
  const std::string path = r.path_of(key);
  const std::string what =
      fmt::format("[min, max] with {} {} min <= max <= {}", lo, open_low ? "<" : "<=", hi);
  if (!v->is_array() || v->size() != 2 || !(*v)[0].is_number() || !(*v)[1].is_number()) {
    return invalid_argument(fmt::format("{}: expected {}, got {}", path, what, json_excerpt(*v)));
  }
  const double a = (*v)[0].get<double>();
  const double b = (*v)[1].get<double>();
  const bool low_ok = open_low ? a > lo : a >= lo;
  if (!low_ok || !(a <= b) || !(b <= hi)) {
    return invalid_argument(fmt::format("{}: expected {}, got {}", path, what, json_excerpt(*v)));
  }
  return std::pair{a, b};
}

Result<LabelChecks> parse_label_checks(JsonObjectReader& r) {
  LabelChecks c;
  STOKER_ASSIGN_OR_RETURN(uint64_t n, r.get_uint("num_classes", 0, 0, 1u << 30));
  c.num_classes = static_cast<uint32_t>(n);
  return c;
}

Result<ImageChecks> parse_image_checks(JsonObjectReader& r) {
  ImageChecks c;
  if (const json* v = r.get_raw("image_size")) {
    STOKER_ASSIGN_OR_RETURN(c.image_size, parse_image_size(*v, r.path_of("image_size")));
  }
  STOKER_ASSIGN_OR_RETURN(c.max_pixels, r.get_uint("max_pixels", c.max_pixels, 1));
  return c;
}

// Lower-case extensions without a leading dot.
Result<std::vector<std::string>> parse_extensions(JsonObjectReader& r, std::string_view key,
                                                  std::vector<std::string> fallback) {
  STOKER_ASSIGN_OR_RETURN(auto exts, r.get_strings(key, std::move(fallback)));
  for (size_t i = 0; i < exts.size(); ++i) {
    std::string& e = exts[i];
    if (!e.empty() && e[0] == '.') e.erase(0, 1);
    std::transform(e.begin(), e.end(), e.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.empty()) {
      return invalid_argument(
          fmt::format("{}: expected a non-empty extension", json_path(r.path_of(key), i)));
    }
  }
  return exts;
}

Result<SourceSpec> parse_source(const json& value) {
  STOKER_ASSIGN_OR_RETURN(auto r, JsonObjectReader::open(value, "source"));
  STOKER_ASSIGN_OR_RETURN(std::string type, r.get_string("type", std::nullopt));
  SourceSpec out;
  if (type == "range") {
    RangeSource s;
    STOKER_ASSIGN_OR_RETURN(s.count, r.get_uint("count", std::nullopt, 1));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size, 1));
    STOKER_ASSIGN_OR_RETURN(s.element_bytes, r.get_uint("element_bytes", 0, 0, 1u << 30));
    out = s;
  } else if (type == "tfrecord") {
    TFRecordSource s;
    STOKER_ASSIGN_OR_RETURN(s.files, r.get_strings("files", std::nullopt));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size));
    STOKER_ASSIGN_OR_RETURN(std::string content, r.get_string("content", "image"));
    if (content == "image") {
      s.content = RecordContent::kImage;
    } else if (content == "tokens") {
      s.content = RecordContent::kTokens;
    } else {
      return invalid_argument(fmt::format(
          "source.content: expected \"image\" or \"tokens\", got {}", json_excerpt(content)));
    }
    if (const json* f = r.get_raw("features")) {
      STOKER_ASSIGN_OR_RETURN(auto fr, JsonObjectReader::open(*f, "source.features"));
      STOKER_ASSIGN_OR_RETURN(s.image_feature, fr.get_string("image", s.image_feature));
      STOKER_ASSIGN_OR_RETURN(s.label_feature, fr.get_string("label", s.label_feature));
      STOKER_ASSIGN_OR_RETURN(s.tokens_feature, fr.get_string("tokens", s.tokens_feature));
      STOKER_RETURN_IF_ERROR(fr.check_no_unknown_keys());
      if ((s.content == RecordContent::kImage ? s.image_feature : s.tokens_feature).empty()) {
        return invalid_argument(
            fmt::format("source.features.{}: expected a non-empty name",
                        s.content == RecordContent::kImage ? "image" : "tokens"));
      }
    }
    STOKER_ASSIGN_OR_RETURN(s.label_checks, parse_label_checks(r));
    if (s.content == RecordContent::kImage) {
      STOKER_ASSIGN_OR_RETURN(s.image_checks, parse_image_checks(r));
    }
    out = s;
  } else if (type == "webdataset") {
    WebDatasetSource s;
    STOKER_ASSIGN_OR_RETURN(s.files, r.get_strings("files", std::nullopt));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size));
    STOKER_ASSIGN_OR_RETURN(s.image_extensions,
                            parse_extensions(r, "image_extensions", s.image_extensions));
    STOKER_ASSIGN_OR_RETURN(s.label_extension, r.get_string("label_extension", "cls"));
    if (!s.label_extension.empty() && s.label_extension[0] == '.') s.label_extension.erase(0, 1);
    STOKER_ASSIGN_OR_RETURN(s.label_checks, parse_label_checks(r));
    STOKER_ASSIGN_OR_RETURN(s.image_checks, parse_image_checks(r));
    out = s;
  } else if (type == "idx") {
    IdxSource s;
    STOKER_ASSIGN_OR_RETURN(s.images, r.get_string("images", std::nullopt));
    STOKER_ASSIGN_OR_RETURN(s.labels, r.get_string("labels", ""));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size, 1));
    STOKER_ASSIGN_OR_RETURN(s.label_checks, parse_label_checks(r));
    STOKER_ASSIGN_OR_RETURN(s.image_checks, parse_image_checks(r));
    out = s;
  } else if (type == "image_folder") {
    ImageFolderSource s;
    STOKER_ASSIGN_OR_RETURN(s.root, r.get_string("root", std::nullopt));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size, 1));
    STOKER_ASSIGN_OR_RETURN(s.extensions, parse_extensions(r, "extensions", s.extensions));
    STOKER_ASSIGN_OR_RETURN(s.image_checks, parse_image_checks(r));
    out = s;
  } else if (type == "synthetic_images") {
    SyntheticImagesSource s;
    STOKER_ASSIGN_OR_RETURN(s.count, r.get_uint("count", std::nullopt, 1));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size, 1));
    STOKER_ASSIGN_OR_RETURN(uint64_t w, r.get_uint("width", s.width, 8, 8192));
    STOKER_ASSIGN_OR_RETURN(uint64_t h, r.get_uint("height", s.height, 8, 8192));
    STOKER_ASSIGN_OR_RETURN(uint64_t q, r.get_uint("quality", s.quality, 1, 100));
    STOKER_ASSIGN_OR_RETURN(uint64_t d, r.get_uint("distinct", s.distinct, 1, 4096));
    STOKER_ASSIGN_OR_RETURN(uint64_t k, r.get_uint("num_classes", s.num_classes, 1, 1u << 30));
    STOKER_ASSIGN_OR_RETURN(s.data_seed, r.get_uint("data_seed", 0));
    s.width = static_cast<uint32_t>(w);
    s.height = static_cast<uint32_t>(h);
    s.quality = static_cast<uint32_t>(q);
    s.distinct = static_cast<uint32_t>(d);
    s.num_classes = static_cast<uint32_t>(k);
    out = s;
  } else if (type == "synthetic_tokens") {
    SyntheticTokensSource s;
    STOKER_ASSIGN_OR_RETURN(s.count, r.get_uint("count", std::nullopt, 1));
    STOKER_ASSIGN_OR_RETURN(s.split_size, r.get_uint("split_size", s.split_size, 1));
    STOKER_ASSIGN_OR_RETURN(uint64_t vocab,
                            r.get_uint("vocab_size", s.vocab_size, 1, uint64_t{1} << 31));
    s.vocab_size = static_cast<uint32_t>(vocab);
    STOKER_ASSIGN_OR_RETURN(std::string dist, r.get_string("distribution", "uniform"));
    if (dist == "fixed") {
      s.distribution = LengthDistribution::kFixed;
    } else if (dist == "uniform") {
      s.distribution = LengthDistribution::kUniform;
    } else if (dist == "lognormal") {
      s.distribution = LengthDistribution::kLogNormal;
    } else {
      return invalid_argument(fmt::format(
          "source.distribution: expected \"fixed\", \"uniform\" or \"lognormal\", got {}",
          json_excerpt(dist)));
    }
    constexpr uint64_t kMaxLength = 1u << 24;
    STOKER_ASSIGN_OR_RETURN(uint64_t lo, r.get_uint("min_length", s.min_length, 0, kMaxLength));
    STOKER_ASSIGN_OR_RETURN(uint64_t hi, r.get_uint("max_length", s.max_length, 1, kMaxLength));
    if (lo > hi) {
      return invalid_argument(
          fmt::format("source.min_length: expected at most max_length ({}), got {}", hi, lo));
    }
    s.min_length = static_cast<uint32_t>(lo);
    s.max_length = static_cast<uint32_t>(hi);
    if (s.distribution == LengthDistribution::kLogNormal) {
      STOKER_ASSIGN_OR_RETURN(s.mean_length, r.get_number("mean_length", s.mean_length, 1e-3,
                                                          static_cast<double>(kMaxLength)));
      STOKER_ASSIGN_OR_RETURN(s.sigma, r.get_number("sigma", s.sigma, 0, 10));
    }
    STOKER_ASSIGN_OR_RETURN(uint64_t k, r.get_uint("num_classes", 0, 0, 1u << 30));
    s.num_classes = static_cast<uint32_t>(k);
    STOKER_ASSIGN_OR_RETURN(s.data_seed, r.get_uint("data_seed", 0));
    out = s;
  } else {
    return invalid_argument(fmt::format(
        "source.type: expected one of \"range\", \"tfrecord\", \"webdataset\", \"idx\", "
        "\"image_folder\", \"synthetic_images\", \"synthetic_tokens\", got {}",
        json_excerpt(type)));
  }
  STOKER_RETURN_IF_ERROR(r.check_no_unknown_keys());
  return out;
}

Result<OpSpec> parse_op(const json& value, const std::string& path) {
  STOKER_ASSIGN_OR_RETURN(auto r, JsonObjectReader::open(value, path));
  STOKER_ASSIGN_OR_RETURN(std::string name, r.get_string("op", std::nullopt));
  OpSpec out;
  if (name == "decode") {
    DecodeOp op;
    STOKER_ASSIGN_OR_RETURN(uint64_t c, r.get_uint("channels", 3, 1, 3));
    if (c == 2) {
      return invalid_argument(fmt::format("{}: expected 1 or 3, got 2", r.path_of("channels")));
    }
    op.channels = static_cast<uint32_t>(c);
    out = op;
  } else if (name == "random_resized_crop") {
    RandomResizedCropOp op;
    const json* size = r.get_raw("size");
    if (size == nullptr) {
      return invalid_argument(
          fmt::format("{}: missing (expected a positive integer or "
                      "[height, width])",
                      r.path_of("size")));
    }
    STOKER_ASSIGN_OR_RETURN(op.size, parse_image_size(*size, r.path_of("size")));
    STOKER_ASSIGN_OR_RETURN(auto scale, parse_interval(r, "scale", {op.scale_min, op.scale_max},
                                                       0.0, 1.0, /*open_low=*/true));
    STOKER_ASSIGN_OR_RETURN(auto ratio, parse_interval(r, "ratio", {op.ratio_min, op.ratio_max},
                                                       0.0, 1e6, /*open_low=*/true));
    op.scale_min = scale.first;
    op.scale_max = scale.second;
    op.ratio_min = ratio.first;
    op.ratio_max = ratio.second;
    out = op;
  } else if (name == "resize") {
    ResizeOp op;
    const json* size = r.get_raw("size");
    if (size == nullptr) {
      return invalid_argument(fmt::format(
          "{}: missing (expected a positive integer (the shorter side) or [height, width])",
          r.path_of("size")));
    }
    if (size->is_array()) {
      STOKER_ASSIGN_OR_RETURN(op.size, parse_image_size(*size, r.path_of("size")));
    } else {
      STOKER_ASSIGN_OR_RETURN(uint64_t n, json_to_uint(*size, r.path_of("size"), 1, 1u << 16));
      op.shorter_side = static_cast<uint32_t>(n);
    }
    out = op;
  } else if (name == "center_crop") {
    CenterCropOp op;
    const json* size = r.get_raw("size");
    if (size == nullptr) {
      return invalid_argument(fmt::format(
          "{}: missing (expected a positive integer or [height, width])", r.path_of("size")));
    }
    STOKER_ASSIGN_OR_RETURN(op.size, parse_image_size(*size, r.path_of("size")));
    out = op;
  } else if (name == "random_flip") {
    RandomFlipOp op;
    STOKER_ASSIGN_OR_RETURN(op.probability, r.get_number("probability", 0.5, 0.0, 1.0));
    out = op;
  } else if (name == "truncate") {
    TruncateOp op;
    STOKER_ASSIGN_OR_RETURN(uint64_t n, r.get_uint("max_length", std::nullopt, 1, 1u << 24));
    op.max_length = static_cast<uint32_t>(n);
    out = op;
  } else if (name == "shuffle") {
    ShuffleOp op;
    STOKER_ASSIGN_OR_RETURN(uint64_t n, r.get_uint("buffer_size", std::nullopt, 1, 1u << 24));
    op.buffer_size = static_cast<uint32_t>(n);
    out = op;
  } else {
    return invalid_argument(fmt::format(
        "{}: expected one of \"decode\", \"random_resized_crop\", \"resize\", \"center_crop\", "
        "\"random_flip\", \"truncate\", \"shuffle\", got {}",
        r.path_of("op"), json_excerpt(name)));
  }
  STOKER_RETURN_IF_ERROR(r.check_no_unknown_keys());
  return out;
}

Result<BatchSpec> parse_batch(const json& value) {
  STOKER_ASSIGN_OR_RETURN(auto r, JsonObjectReader::open(value, "batch"));
  BatchSpec b;
  STOKER_ASSIGN_OR_RETURN(b.drop_remainder, r.get_bool("drop_remainder", false));
  const json* bucket = r.get_raw("bucket");
  const bool has_size = r.has("size");
  if (bucket != nullptr && has_size) {
    return invalid_argument("batch: expected either size or bucket, not both");
  }
  if (bucket != nullptr) {
    STOKER_ASSIGN_OR_RETURN(auto br, JsonObjectReader::open(*bucket, "batch.bucket"));
    STOKER_ASSIGN_OR_RETURN(b.bucket_boundaries, br.get_uint32s("boundaries", 1));
    STOKER_ASSIGN_OR_RETURN(b.bucket_sizes, br.get_uint32s("sizes", 1));
    STOKER_RETURN_IF_ERROR(br.check_no_unknown_keys());
    for (size_t i = 1; i < b.bucket_boundaries.size(); ++i) {
      if (b.bucket_boundaries[i] <= b.bucket_boundaries[i - 1]) {
        return invalid_argument(fmt::format(
            "batch.bucket.boundaries[{}]: expected more than the previous boundary ({}), got {}", i,
            b.bucket_boundaries[i - 1], b.bucket_boundaries[i]));
      }
    }
    if (b.bucket_sizes.size() != b.bucket_boundaries.size() + 1) {
      return invalid_argument(fmt::format(
          "batch.bucket.sizes: expected {} batch sizes (one more than boundaries), got {}",
          b.bucket_boundaries.size() + 1, b.bucket_sizes.size()));
    }
  } else {
    STOKER_ASSIGN_OR_RETURN(uint64_t size, r.get_uint("size", std::nullopt, 1, 1u << 24));
    b.size = static_cast<uint32_t>(size);
  }
  STOKER_RETURN_IF_ERROR(r.check_no_unknown_keys());
  return b;
}

std::string_view op_name(const OpSpec& op) {
  return std::visit(Overloaded{[](const DecodeOp&) { return "decode"; },
                               [](const RandomResizedCropOp&) { return "random_resized_crop"; },
                               [](const ResizeOp&) { return "resize"; },
                               [](const CenterCropOp&) { return "center_crop"; },
                               [](const RandomFlipOp&) { return "random_flip"; },
                               [](const TruncateOp&) { return "truncate"; },
                               [](const ShuffleOp&) { return "shuffle"; }},
                    op);
}

bool is_image_op(const OpSpec& op) {
  return std::holds_alternative<DecodeOp>(op) || std::holds_alternative<RandomResizedCropOp>(op) ||
         std::holds_alternative<ResizeOp>(op) || std::holds_alternative<CenterCropOp>(op) ||
         std::holds_alternative<RandomFlipOp>(op);
}

// Checks that the ops fit the source's elements and puts them in canonical
// order: shuffle first (it reorders records wherever it is listed), then
// decode (added with its default when absent), then the rest as given.
Status validate_and_order_ops(PipelineSpec& spec, const std::vector<size_t>& positions) {
  const ElementKind kind = spec.element_kind();
  std::optional<ShuffleOp> shuffle;
  std::optional<DecodeOp> decode;
  std::vector<OpSpec> rest;
  bool saw_geometry = false;
  size_t truncates = 0;
  for (size_t i = 0; i < spec.ops.size(); ++i) {
    const OpSpec& op = spec.ops[i];
    const std::string path = fmt::format("ops[{}]", positions[i]);
    if (const auto* s = std::get_if<ShuffleOp>(&op)) {
      if (shuffle) return invalid_argument(path + ": expected at most one shuffle op");
      shuffle = *s;
      continue;
    }
    if (is_image_op(op) && kind != ElementKind::kImage) {
      return invalid_argument(fmt::format("{}: op \"{}\" needs image elements, the source gives {}",
                                          path, op_name(op), element_kind_name(kind)));
    }
    if (std::holds_alternative<TruncateOp>(op) && kind != ElementKind::kText) {
      return invalid_argument(
          fmt::format("{}: op \"truncate\" needs text elements, the source gives {}", path,
                      element_kind_name(kind)));
    }
    if (const auto* d = std::get_if<DecodeOp>(&op)) {
      if (decode) return invalid_argument(path + ": expected at most one decode op");
      if (saw_geometry) {
        return invalid_argument(path + ": decode must come before the other image ops");
      }
      decode = *d;
      continue;
    }
    if (std::holds_alternative<TruncateOp>(op) && ++truncates > 1) {
      return invalid_argument(path + ": expected at most one truncate op");
    }
    saw_geometry = saw_geometry || is_image_op(op);
    rest.push_back(op);
  }
  spec.ops.clear();
  if (shuffle) spec.ops.emplace_back(*shuffle);
  if (kind == ElementKind::kImage) {
    if (!decode) decode = DecodeOp{std::holds_alternative<IdxSource>(spec.source) ? 1u : 3u};
    spec.ops.emplace_back(*decode);
  }
  for (auto& op : rest) spec.ops.push_back(std::move(op));

  if (kind == ElementKind::kText && truncates == 0) {
    return invalid_argument(
        "ops: a text pipeline needs a truncate op (its max_length bounds the batch size)");
  }
  if (kind == ElementKind::kImage) {
    // The batch tensor is [B, H, W, C]: the output size must be fixed.
    const ImageChecks* checks = std::visit(
        Overloaded{[](const TFRecordSource& s) -> const ImageChecks* { return &s.image_checks; },
                   [](const WebDatasetSource& s) -> const ImageChecks* { return &s.image_checks; },
                   [](const IdxSource& s) -> const ImageChecks* { return &s.image_checks; },
                   [](const ImageFolderSource& s) -> const ImageChecks* { return &s.image_checks; },
                   [](const auto&) -> const ImageChecks* { return nullptr; }},
        spec.source);
    // IDX files state their image size; synthetic images have a fixed one.
    bool fixed = (checks != nullptr && checks->image_size.has_value()) ||
                 std::holds_alternative<IdxSource>(spec.source) ||
                 std::holds_alternative<SyntheticImagesSource>(spec.source);
    for (const auto& op : spec.ops) {
      if (std::holds_alternative<RandomResizedCropOp>(op) ||
          std::holds_alternative<CenterCropOp>(op)) {
        fixed = true;
      } else if (const auto* r = std::get_if<ResizeOp>(&op)) {
        fixed = r->size.has_value();
      }
    }
    if (!fixed) {
      return invalid_argument(
          "ops: the output image size is not fixed: end with random_resized_crop, center_crop or "
          "resize to [height, width], or set source.image_size");
    }
  }
  return Status::ok();
}

Status validate_batch(const PipelineSpec& spec) {
  const BatchSpec& b = spec.batch;
  if (b.bucketed()) {
    if (spec.element_kind() != ElementKind::kText) {
      return invalid_argument(
          fmt::format("batch.bucket: bucketing needs text elements, the source "
                      "gives {}",
                      element_kind_name(spec.element_kind())));
    }
    uint32_t max_length = 0;
    for (const auto& op : spec.ops) {
      if (const auto* t = std::get_if<TruncateOp>(&op)) max_length = t->max_length;
    }
    for (size_t i = 0; i < b.bucket_boundaries.size(); ++i) {
      if (b.bucket_boundaries[i] > max_length) {
        return invalid_argument(fmt::format(
            "batch.bucket.boundaries[{}]: expected at most the truncate op's max_length ({}), "
            "got {}",
            i, max_length, b.bucket_boundaries[i]));
      }
    }
  }
  return Status::ok();
}

// ---- canonical form --------------------------------------------------------

json size_json(const ImageSize& s) { return json::array({s.height, s.width}); }

void put_label_checks(json& j, const LabelChecks& c) { j["num_classes"] = c.num_classes; }
void put_image_checks(json& j, const ImageChecks& c) {
  if (c.image_size) j["image_size"] = size_json(*c.image_size);
  j["max_pixels"] = c.max_pixels;
}

json source_json(const SourceSpec& source) {
  return std::visit(
      Overloaded{[](const RangeSource& s) {
                   return json{{"type", "range"},
                               {"count", s.count},
                               {"split_size", s.split_size},
                               {"element_bytes", s.element_bytes}};
                 },
                 [](const TFRecordSource& s) {
                   json j{{"type", "tfrecord"}, {"files", s.files}, {"split_size", s.split_size}};
                   if (s.content == RecordContent::kImage) {
                     j["content"] = "image";
                     j["features"] = {{"image", s.image_feature}, {"label", s.label_feature}};
                     put_image_checks(j, s.image_checks);
                   } else {
                     j["content"] = "tokens";
                     j["features"] = {{"tokens", s.tokens_feature}, {"label", s.label_feature}};
                   }
                   put_label_checks(j, s.label_checks);
                   return j;
                 },
                 [](const WebDatasetSource& s) {
                   json j{{"type", "webdataset"},
                          {"files", s.files},
                          {"split_size", s.split_size},
                          {"image_extensions", s.image_extensions},
                          {"label_extension", s.label_extension}};
                   put_label_checks(j, s.label_checks);
                   put_image_checks(j, s.image_checks);
                   return j;
                 },
                 [](const IdxSource& s) {
                   json j{{"type", "idx"},
                          {"images", s.images},
                          {"labels", s.labels},
                          {"split_size", s.split_size}};
                   put_label_checks(j, s.label_checks);
                   put_image_checks(j, s.image_checks);
                   return j;
                 },
                 [](const ImageFolderSource& s) {
                   json j{{"type", "image_folder"},
                          {"root", s.root},
                          {"split_size", s.split_size},
                          {"extensions", s.extensions}};
                   put_image_checks(j, s.image_checks);
                   return j;
                 },
                 [](const SyntheticImagesSource& s) {
                   return json{{"type", "synthetic_images"}, {"count", s.count},
                               {"split_size", s.split_size}, {"width", s.width},
                               {"height", s.height},         {"quality", s.quality},
                               {"distinct", s.distinct},     {"num_classes", s.num_classes},
                               {"data_seed", s.data_seed}};
                 },
                 [](const SyntheticTokensSource& s) {
                   json j{{"type", "synthetic_tokens"},   {"count", s.count},
                          {"split_size", s.split_size},   {"vocab_size", s.vocab_size},
                          {"min_length", s.min_length},   {"max_length", s.max_length},
                          {"num_classes", s.num_classes}, {"data_seed", s.data_seed}};
                   switch (s.distribution) {
                     case LengthDistribution::kFixed:
                       j["distribution"] = "fixed";
                       break;
                     case LengthDistribution::kUniform:
                       j["distribution"] = "uniform";
                       break;
                     case LengthDistribution::kLogNormal:
                       j["distribution"] = "lognormal";
                       j["mean_length"] = s.mean_length;
                       j["sigma"] = s.sigma;
                       break;
                   }
                   return j;
                 }},
      source);
}

json op_json(const OpSpec& op) {
  return std::visit(Overloaded{[](const DecodeOp& o) {
                                 return json{{"op", "decode"}, {"channels", o.channels}};
                               },
                               [](const RandomResizedCropOp& o) {
                                 return json{{"op", "random_resized_crop"},
                                             {"size", size_json(o.size)},
                                             {"scale", {o.scale_min, o.scale_max}},
                                             {"ratio", {o.ratio_min, o.ratio_max}}};
                               },
                               [](const ResizeOp& o) {
                                 return json{
                                     {"op", "resize"},
                                     {"size", o.size ? size_json(*o.size) : json(o.shorter_side)}};
                               },
                               [](const CenterCropOp& o) {
                                 return json{{"op", "center_crop"}, {"size", size_json(o.size)}};
                               },
                               [](const RandomFlipOp& o) {
                                 return json{{"op", "random_flip"}, {"probability", o.probability}};
                               },
                               [](const TruncateOp& o) {
                                 return json{{"op", "truncate"}, {"max_length", o.max_length}};
                               },
                               [](const ShuffleOp& o) {
                                 return json{{"op", "shuffle"}, {"buffer_size", o.buffer_size}};
                               }},
                    op);
}

}  // namespace

std::string_view element_kind_name(ElementKind kind) {
  switch (kind) {
    case ElementKind::kIndex:
      return "indices";
    case ElementKind::kImage:
      return "images";
    case ElementKind::kText:
      return "token sequences";
  }
  return "unknown";
}

std::string_view bad_record_policy_name(BadRecordPolicy policy) {
  return policy == BadRecordPolicy::kFail ? "fail" : "skip";
}

ElementKind PipelineSpec::element_kind() const {
  return std::visit(Overloaded{[](const RangeSource&) { return ElementKind::kIndex; },
                               [](const TFRecordSource& s) {
                                 return s.content == RecordContent::kTokens ? ElementKind::kText
                                                                            : ElementKind::kImage;
                               },
                               [](const SyntheticTokensSource&) { return ElementKind::kText; },
                               [](const auto&) { return ElementKind::kImage; }},
                    source);
}

Result<PipelineSpec> parse_pipeline_spec(std::string_view text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    return invalid_argument(
        fmt::format("pipeline spec is not valid JSON (byte {}): {}", e.byte, e.what()));
  }
  STOKER_ASSIGN_OR_RETURN(auto r, JsonObjectReader::open(root, ""));
  PipelineSpec spec;
  STOKER_ASSIGN_OR_RETURN(spec.seed, r.get_uint("seed", 0));
  const json* source = r.get_raw("source");
  if (source == nullptr) return invalid_argument("source: missing (expected an object)");
  STOKER_ASSIGN_OR_RETURN(spec.source, parse_source(*source));

  std::vector<size_t> positions;
  if (const json* ops = r.get_raw("ops")) {
    if (!ops->is_array()) {
      return invalid_argument(
          fmt::format("ops: expected an array of op objects, got {}", json_excerpt(*ops)));
    }
    for (size_t i = 0; i < ops->size(); ++i) {
      STOKER_ASSIGN_OR_RETURN(OpSpec op, parse_op((*ops)[i], json_path("ops", i)));
      spec.ops.push_back(std::move(op));
      positions.push_back(i);
    }
  }
  const json* batch = r.get_raw("batch");
  if (batch == nullptr) return invalid_argument("batch: missing (expected an object)");
  STOKER_ASSIGN_OR_RETURN(spec.batch, parse_batch(*batch));

  STOKER_ASSIGN_OR_RETURN(std::string policy, r.get_string("bad_records", "skip"));
  if (policy == "skip") {
    spec.bad_records = BadRecordPolicy::kSkip;
  } else if (policy == "fail") {
    spec.bad_records = BadRecordPolicy::kFail;
  } else {
    return invalid_argument(
        fmt::format("bad_records: expected \"skip\" or \"fail\", got {}", json_excerpt(policy)));
  }
  STOKER_RETURN_IF_ERROR(r.check_no_unknown_keys());
  STOKER_RETURN_IF_ERROR(validate_and_order_ops(spec, positions));
  STOKER_RETURN_IF_ERROR(validate_batch(spec));
  return spec;
}

std::string canonical_json(const PipelineSpec& spec) {
  json root;
  root["seed"] = spec.seed;
  root["source"] = source_json(spec.source);
  json ops = json::array();
  for (const auto& op : spec.ops) ops.push_back(op_json(op));
  root["ops"] = std::move(ops);
  json batch{{"drop_remainder", spec.batch.drop_remainder}};
  if (spec.batch.bucketed()) {
    batch["bucket"] = {{"boundaries", spec.batch.bucket_boundaries},
                       {"sizes", spec.batch.bucket_sizes}};
  } else {
    batch["size"] = spec.batch.size;
  }
  root["batch"] = std::move(batch);
  root["bad_records"] = bad_record_policy_name(spec.bad_records);
  // nlohmann::json keeps object keys in a std::map: dump() sorts them.
  return root.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string fingerprint(const PipelineSpec& spec) {
  const std::string text = canonical_json(spec);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    // Only fails when OpenSSL cannot allocate; an empty fingerprint matches nothing.
    return {};
  }
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace stoker::pipeline
