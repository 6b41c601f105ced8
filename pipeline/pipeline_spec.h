// The declarative description of a pipeline: where records come from, what is
// done to each, and how they are batched. Users write it as JSON (the schema,
// every field and its default, is in docs/pipelines.md); the coordinator
// fingerprints its canonical form; workers compile it into a Pipeline.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "stoker/result.h"

namespace stoker::pipeline {

// What one element of a pipeline is, decided by its source.
enum class ElementKind : uint8_t {
  kIndex,  // range: an element index (and optional payload bytes)
  kImage,  // an image (encoded or raw pixels) with an optional label
  kText,   // a sequence of int32 token ids with an optional label
};

enum class BadRecordPolicy : uint8_t {
  kSkip,  // count per reason, log (rate-limited), go on
  kFail,  // stop the split with kDataLoss naming the file and byte offset
};

// What the records of a TFRecord source hold.
enum class RecordContent : uint8_t { kImage, kTokens };

struct ImageSize {
  uint32_t height = 0;
  uint32_t width = 0;
  friend bool operator==(const ImageSize&, const ImageSize&) = default;
};

// Fields every labelled, image-carrying source shares.
struct LabelChecks {
  // Labels must lie in [0, num_classes); 0 checks only that they are >= 0.
  uint32_t num_classes = 0;
};
struct ImageChecks {
  // When set, every decoded image must have this size (else: bad record
  // wrong_image_size). Needed when no op fixes the output size.
  std::optional<ImageSize> image_size;
  // Images with more pixels are refused (wrong_image_size) before decoding:
  // a corrupt header must not make a worker allocate gigabytes.
  uint64_t max_pixels = uint64_t{1} << 27;
};

// Elements 0..count-1; split k holds [k*split_size, min((k+1)*split_size, count)).
struct RangeSource {
  uint64_t count = 0;
  uint64_t split_size = 1000;
  uint64_t element_bytes = 0;  // > 0: a deterministic payload per element (range_payload.h)
};

// TFRecord files of tf.train.Example records.
struct TFRecordSource {
  std::vector<std::string> files;  // paths or glob patterns
  uint64_t split_size = 1024;      // records per split; 0: one split per file
  RecordContent content = RecordContent::kImage;
  std::string image_feature = "image";    // bytes: an encoded JPEG or PNG
  std::string label_feature = "label";    // int64; empty: records carry no label
  std::string tokens_feature = "tokens";  // int64 list (content "tokens")
  LabelChecks label_checks;
  ImageChecks image_checks;
};

// WebDataset tar shards: a sample is the run of adjacent members that share a
// key (the member path up to the first dot of its base name).
struct WebDatasetSource {
  std::vector<std::string> files;
  uint64_t split_size = 0;  // samples per split; 0: one split per shard
  std::vector<std::string> image_extensions = {"jpg", "jpeg", "png"};
  std::string label_extension = "cls";  // decimal text; empty: no label
  LabelChecks label_checks;
  ImageChecks image_checks;
};

// IDX files as the MNIST family ships them (gzip-compressed or not).
struct IdxSource {
  std::string images;
  std::string labels;  // empty: no labels
  uint64_t split_size = 1000;
  LabelChecks label_checks;
  ImageChecks image_checks;
};

// root/<class>/<image>: labels are the classes' indices in sorted name order.
struct ImageFolderSource {
  std::string root;
  uint64_t split_size = 1000;
  std::vector<std::string> extensions = {"jpg", "jpeg", "png"};
  ImageChecks image_checks;
};

// Natural-image-like JPEGs made at startup: record i is image i % distinct,
// label i % num_classes. For benchmarks.
struct SyntheticImagesSource {
  uint64_t count = 0;
  uint64_t split_size = 1000;
  uint32_t width = 500;
  uint32_t height = 375;
  uint32_t quality = 90;
  uint32_t distinct = 64;
  uint32_t num_classes = 1000;
  uint64_t data_seed = 0;
};

enum class LengthDistribution : uint8_t { kFixed, kUniform, kLogNormal };

// Token sequences with lengths drawn from a distribution. For benchmarks.
struct SyntheticTokensSource {
  uint64_t count = 0;
  uint64_t split_size = 1000;
  uint32_t vocab_size = 32000;
  LengthDistribution distribution = LengthDistribution::kUniform;
  uint32_t min_length = 1;
  uint32_t max_length = 512;
  double mean_length = 128;  // lognormal: the median length
  double sigma = 0.5;        // lognormal: sigma of log(length)
  uint32_t num_classes = 0;  // > 0: a label per sequence
  uint64_t data_seed = 0;
};

using SourceSpec = std::variant<RangeSource, TFRecordSource, WebDatasetSource, IdxSource,
                                ImageFolderSource, SyntheticImagesSource, SyntheticTokensSource>;

// Ops, in the order the user lists them.
struct DecodeOp {
  uint32_t channels = 3;  // 3: RGB, 1: grayscale
};
struct RandomResizedCropOp {  // torchvision's RandomResizedCrop
  ImageSize size;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
};
struct ResizeOp {
  // Exactly one of: a fixed size, or the shorter side (aspect ratio kept).
  std::optional<ImageSize> size;
  uint32_t shorter_side = 0;
};
struct CenterCropOp {
  ImageSize size;
};
struct RandomFlipOp {  // horizontal
  double probability = 0.5;
};
struct TruncateOp {
  uint32_t max_length = 0;
};
struct ShuffleOp {
  uint32_t buffer_size = 0;
};
using OpSpec = std::variant<DecodeOp, RandomResizedCropOp, ResizeOp, CenterCropOp, RandomFlipOp,
                            TruncateOp, ShuffleOp>;

struct BatchSpec {
  uint32_t size = 0;  // fixed batch size (0 when bucketing)
  bool drop_remainder = false;
  // Text only: bucket i holds lengths in [boundaries[i-1], boundaries[i])
  // (from 0, and up to max_length for the last) and batches bucket_sizes[i].
  std::vector<uint32_t> bucket_boundaries;
  std::vector<uint32_t> bucket_sizes;
  bool bucketed() const { return !bucket_sizes.empty(); }
};

struct PipelineSpec {
  uint64_t seed = 0;  // seeds shuffling and random augmentation
  SourceSpec source;
  std::vector<OpSpec> ops;  // canonical order: shuffle, decode, the rest as given
  BatchSpec batch;
  BadRecordPolicy bad_records = BadRecordPolicy::kSkip;

  ElementKind element_kind() const;
};

// Parses and validates JSON. Errors are kInvalidArgument and name the JSON
// path of the bad field and what was expected, e.g.
// `ops[2].size: expected a positive integer, got "x"`.
Result<PipelineSpec> parse_pipeline_spec(std::string_view json);

// Canonical JSON (keys sorted, defaults filled in, no whitespace): two specs
// that mean the same thing have the same canonical form, and parsing it gives
// the same spec back.
std::string canonical_json(const PipelineSpec& spec);

// Hex SHA-256 of canonical_json(spec): the dataset's identity.
std::string fingerprint(const PipelineSpec& spec);

std::string_view element_kind_name(ElementKind kind);
std::string_view bad_record_policy_name(BadRecordPolicy policy);

}  // namespace stoker::pipeline
