// Pipeline specs: parsing with defaults, errors that name the JSON path of
// the bad field, canonical form and fingerprint.
#include "pipeline/pipeline_spec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace stoker::pipeline {
namespace {

PipelineSpec parse_ok(const std::string& json) {
  auto spec = parse_pipeline_spec(json);
  EXPECT_TRUE(spec.is_ok()) << json << "\n" << spec.status().to_string();
  return spec.is_ok() ? *spec : PipelineSpec{};
}

TEST(PipelineSpec, RangeWithDefaults) {
  const auto spec = parse_ok(
      R"({"source": {"type": "range", "count": 100000, "split_size": 1000}, "batch": {"size": 32}})");
  const auto& range = std::get<RangeSource>(spec.source);
  EXPECT_EQ(range.count, 100000u);
  EXPECT_EQ(range.split_size, 1000u);
  EXPECT_EQ(range.element_bytes, 0u);
  EXPECT_EQ(spec.batch.size, 32u);
  EXPECT_FALSE(spec.batch.drop_remainder);
  EXPECT_EQ(spec.seed, 0u);
  EXPECT_EQ(spec.bad_records, BadRecordPolicy::kSkip);
  EXPECT_EQ(spec.element_kind(), ElementKind::kIndex);
  EXPECT_EQ(canonical_json(spec),
            R"({"bad_records":"skip","batch":{"drop_remainder":false,"size":32},"ops":[],"seed":0,)"
            R"("source":{"count":100000,"element_bytes":0,"split_size":1000,"type":"range"}})");
}

TEST(PipelineSpec, ImagePipelineGetsDecodeFirstAndShuffleBeforeIt) {
  const auto spec = parse_ok(R"({
    "seed": 7,
    "source": {"type": "webdataset", "files": ["/data/train-*.tar"], "num_classes": 1000},
    "ops": [{"op": "random_resized_crop", "size": 224},
            {"op": "random_flip"},
            {"op": "shuffle", "buffer_size": 512}],
    "batch": {"size": 64, "drop_remainder": true}})");
  ASSERT_EQ(spec.ops.size(), 4u);
  EXPECT_EQ(std::get<ShuffleOp>(spec.ops[0]).buffer_size, 512u);
  EXPECT_EQ(std::get<DecodeOp>(spec.ops[1]).channels, 3u);
  const auto& rrc = std::get<RandomResizedCropOp>(spec.ops[2]);
  EXPECT_EQ(rrc.size, (ImageSize{224, 224}));
  EXPECT_DOUBLE_EQ(rrc.scale_min, 0.08);
  EXPECT_DOUBLE_EQ(rrc.ratio_max, 4.0 / 3.0);
  EXPECT_DOUBLE_EQ(std::get<RandomFlipOp>(spec.ops[3]).probability, 0.5);
  const auto& wds = std::get<WebDatasetSource>(spec.source);
  EXPECT_EQ(wds.image_extensions, (std::vector<std::string>{"jpg", "jpeg", "png"}));
  EXPECT_EQ(wds.label_extension, "cls");
  EXPECT_EQ(wds.label_checks.num_classes, 1000u);
}

TEST(PipelineSpec, IdxDecodesToGrayByDefault) {
  const auto spec = parse_ok(
      R"({"source": {"type": "idx", "images": "a.gz", "labels": "b.gz"}, "batch": {"size": 8}})");
  ASSERT_EQ(spec.ops.size(), 1u);
  EXPECT_EQ(std::get<DecodeOp>(spec.ops[0]).channels, 1u);
}

TEST(PipelineSpec, TextWithBuckets) {
  const auto spec = parse_ok(R"({
    "source": {"type": "synthetic_tokens", "count": 1000, "distribution": "lognormal",
               "mean_length": 100, "sigma": 0.7, "max_length": 1024},
    "ops": [{"op": "truncate", "max_length": 512}],
    "batch": {"bucket": {"boundaries": [64, 128, 256], "sizes": [64, 32, 16, 8]}}})");
  EXPECT_EQ(spec.element_kind(), ElementKind::kText);
  EXPECT_TRUE(spec.batch.bucketed());
  EXPECT_EQ(spec.batch.bucket_sizes, (std::vector<uint32_t>{64, 32, 16, 8}));
}

TEST(PipelineSpec, SameMeaningSameCanonicalFormAndFingerprint) {
  const auto a = parse_ok(R"({"source": {"type": "range", "count": 10}, "batch": {"size": 4},
                             "ops": [{"op": "shuffle", "buffer_size": 3}]})");
  // Keys reordered, defaults written out, whitespace changed.
  const auto b =
      parse_ok(R"({"bad_records":"skip","ops":[{"buffer_size":3,"op":"shuffle"}],"seed":0,)"
               R"("batch":{"drop_remainder":false,"size":4},)"
               R"("source":{"split_size":1000,"element_bytes":0,"count":10,"type":"range"}})");
  EXPECT_EQ(canonical_json(a), canonical_json(b));
  EXPECT_EQ(fingerprint(a), fingerprint(b));
  EXPECT_EQ(fingerprint(a).size(), 64u);
  EXPECT_EQ(fingerprint(a).find_first_not_of("0123456789abcdef"), std::string::npos);

  // Parsing the canonical form gives the same canonical form back.
  EXPECT_EQ(canonical_json(parse_ok(canonical_json(a))), canonical_json(a));

  // Anything that changes the data changes the fingerprint.
  const auto c = parse_ok(R"({"source": {"type": "range", "count": 10}, "batch": {"size": 4},
                             "ops": [{"op": "shuffle", "buffer_size": 3}], "seed": 1})");
  EXPECT_NE(fingerprint(a), fingerprint(c));
}

TEST(PipelineSpec, CanonicalFormRoundTripsForEverySource) {
  const std::vector<std::string> specs = {
      R"({"source": {"type": "tfrecord", "files": "x/*.tfrecord", "image_size": [28, 28],
                     "features": {"image": "img", "label": ""}},
          "ops": [{"op": "decode", "channels": 1}], "batch": {"size": 2}})",
      R"({"source": {"type": "tfrecord", "files": ["a", "b"], "content": "tokens"},
          "ops": [{"op": "truncate", "max_length": 9}], "batch": {"size": 2}})",
      R"({"source": {"type": "image_folder", "root": "/r", "extensions": [".JPG"]},
          "ops": [{"op": "resize", "size": 256}, {"op": "center_crop", "size": [224, 200]}],
          "batch": {"size": 2}, "bad_records": "fail"})",
      R"({"source": {"type": "synthetic_images", "count": 5, "width": 64, "height": 48},
          "ops": [{"op": "random_resized_crop", "size": [32, 16], "scale": [0.5, 1],
                   "ratio": [1, 2]}, {"op": "random_flip", "probability": 0.25}],
          "batch": {"size": 2}})",
      R"({"source": {"type": "synthetic_tokens", "count": 5, "distribution": "fixed",
                     "max_length": 8, "num_classes": 3},
          "ops": [{"op": "truncate", "max_length": 4}], "batch": {"size": 2}})",
  };
  for (const auto& text : specs) {
    const auto spec = parse_ok(text);
    const std::string canonical = canonical_json(spec);
    EXPECT_EQ(canonical_json(parse_ok(canonical)), canonical) << text;
  }
  const auto folder = parse_ok(specs[2]);
  EXPECT_EQ(std::get<ImageFolderSource>(folder.source).extensions,
            (std::vector<std::string>{"jpg"}));
  EXPECT_EQ(folder.bad_records, BadRecordPolicy::kFail);
}

struct BadSpec {
  std::string json;
  std::string message;  // the whole message, or a prefix ending in "..."
};

TEST(PipelineSpec, ErrorsNameThePathAndWhatWasExpected) {
  const std::string range = R"("source": {"type": "range", "count": 10})";
  const std::string images = R"("source": {"type": "synthetic_images", "count": 10})";
  const std::vector<BadSpec> cases = {
      {R"({"source": {"type": "synthetic_images", "count": 10}, "batch": {"size": 1},
           "ops": [{"op": "decode"}, {"op": "random_flip"}, {"op": "center_crop", "size": "x"}]})",
       R"(ops[2].size: expected a positive integer or [height, width], got "x")"},
      {R"({"source": {"type": "synthetic_images", "count": 10}, "batch": {"size": 1},
           "ops": [{"op": "random_resized_crop", "size": [224, -1]}]})",
       "ops[0].size[1]: expected an integer in [1, 65536], got -1"},
      {"{" + range + R"(, "batch": {"size": 0}})",
       "batch.size: expected an integer in [1, 16777216], got 0"},
      {"{" + range + R"(, "batch": {"size": 4.5}})",
       "batch.size: expected an integer in [1, 16777216], got 4.5"},
      {"{" + range + R"(, "batch": {"size": 4, "drop_remainer": true}})",
       "batch.drop_remainer: unknown field (expected one of: bucket, drop_remainder, size)"},
      {R"({"source": {"type": "range"}, "batch": {"size": 4}})",
       "source.count: missing (expected a positive integer)"},
      {R"({"source": {"type": "rang", "count": 1}, "batch": {"size": 4}})",
       R"(source.type: expected one of "range", ...)"},
      {R"({"batch": {"size": 4}})", "source: missing (expected an object)"},
      {"{" + range + "}", "batch: missing (expected an object)"},
      {"{" + range + R"(, "batch": {"size": 4}, "bad_records": "ignore"})",
       R"(bad_records: expected "skip" or "fail", got "ignore")"},
      {"{" + range + R"(, "batch": {"size": 4}, "ops": [{"op": "random_flip"}]})",
       R"(ops[0]: op "random_flip" needs image elements, the source gives indices)"},
      {"{" + range + R"(, "batch": {"size": 4}, "ops": {"op": "shuffle"}})",
       R"(ops: expected an array of op objects, got {"op":"shuffle"})"},
      {"{" + range + R"(, "batch": {"size": 4}, "ops": [{"op": "shuffle"}]})",
       "ops[0].buffer_size: missing (expected an integer in [1, 16777216])"},
      {"{" + range + R"(, "batch": {"size": 4}, "ops": [{"op": "blur"}]})",
       R"(ops[0].op: expected one of "decode", ...)"},
      {"{" + images + R"(, "batch": {"size": 4}, "ops": [{"op": "random_flip"},
           {"op": "decode"}]})",
       "ops[1]: decode must come before the other image ops"},
      {"{" + images + R"(, "batch": {"size": 4}, "ops": [{"op": "decode", "channels": 2}]})",
       "ops[0].channels: expected 1 or 3, got 2"},
      {R"({"source": {"type": "webdataset", "files": "a.tar"}, "batch": {"size": 4}})",
       "ops: the output image size is not fixed: ..."},
      {R"({"source": {"type": "webdataset", "files": "a.tar"}, "batch": {"size": 4},
           "ops": [{"op": "resize", "size": 256}]})",
       "ops: the output image size is not fixed: ..."},
      {R"({"source": {"type": "webdataset", "files": []}, "batch": {"size": 4}})",
       "source.files: expected a string or a non-empty array of strings, got []"},
      {R"({"source": {"type": "synthetic_tokens", "count": 4}, "batch": {"size": 4}})",
       "ops: a text pipeline needs a truncate op (its max_length bounds the batch size)"},
      {R"({"source": {"type": "synthetic_tokens", "count": 4}, "ops": [{"op": "truncate",
           "max_length": 100}], "batch": {"bucket": {"boundaries": [10, 5], "sizes": [1, 2, 3]}}})",
       "batch.bucket.boundaries[1]: expected more than the previous boundary (10), got 5"},
      {R"({"source": {"type": "synthetic_tokens", "count": 4}, "ops": [{"op": "truncate",
           "max_length": 100}], "batch": {"bucket": {"boundaries": [10], "sizes": [1]}}})",
       "batch.bucket.sizes: expected 2 batch sizes (one more than boundaries), got 1"},
      {R"({"source": {"type": "synthetic_tokens", "count": 4}, "ops": [{"op": "truncate",
           "max_length": 100}], "batch": {"bucket": {"boundaries": [200], "sizes": [1, 1]}}})",
       "batch.bucket.boundaries[0]: expected at most the truncate op's max_length (100), got 200"},
      {"{" + range + R"(, "batch": {"size": 4, "bucket": {}}})",
       "batch: expected either size or bucket, not both"},
      {R"({"source": {"type": "tfrecord", "files": "a", "content": "tokens", "image_size": 3},
           "ops": [{"op": "truncate", "max_length": 4}], "batch": {"size": 4}})",
       "source.image_size: unknown field ..."},
      {"[1, 2]", "(top level): expected an object, got [1,2]"},
      {"{\"source\": ", "pipeline spec is not valid JSON (byte 12): ..."},
  };
  for (const auto& c : cases) {
    auto spec = parse_pipeline_spec(c.json);
    ASSERT_FALSE(spec.is_ok()) << c.json;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    const std::string& m = spec.status().message();
    if (c.message.size() > 3 && c.message.substr(c.message.size() - 3) == "...") {
      EXPECT_EQ(m.substr(0, c.message.size() - 3), c.message.substr(0, c.message.size() - 3))
          << c.json;
    } else {
      EXPECT_EQ(m, c.message) << c.json;
    }
  }
}

}  // namespace
}  // namespace stoker::pipeline
