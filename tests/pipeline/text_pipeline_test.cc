// Text pipelines: token sequences, truncation, bucketing by length, the
// tokens/offsets/label layout, TFRecord token shards read back against an
// independent reader, and token ids that do not fit int32.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pipeline/example_codec.h"
#include "pipeline/tfrecord.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::CollectedBatch;
using testing::TempDir;

struct Sequences {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<int32_t> labels;
};

// Unpacks a text batch, checking its layout.
Sequences unpack(const CollectedBatch& b, bool labels) {
  Sequences out;
  const TensorDescriptor* tokens = b.tensor("tokens");
  const TensorDescriptor* offsets = b.tensor("offsets");
  EXPECT_NE(tokens, nullptr);
  EXPECT_NE(offsets, nullptr);
  if (tokens == nullptr || offsets == nullptr) return out;
  EXPECT_EQ(tokens->dtype, DType::kInt32);
  EXPECT_EQ(offsets->dtype, DType::kInt32);
  EXPECT_EQ(offsets->offset % 64, 0u);
  const auto t = b.values<int32_t>("tokens");
  const auto o = b.values<int32_t>("offsets");
  EXPECT_FALSE(o.empty());
  if (o.empty()) return out;
  EXPECT_EQ(o.front(), 0);
  EXPECT_EQ(static_cast<size_t>(o.back()), t.size());
  for (size_t i = 0; i + 1 < o.size(); ++i) {
    EXPECT_LE(o[i], o[i + 1]);
    out.tokens.emplace_back(t.begin() + o[i], t.begin() + o[i + 1]);
  }
  if (labels) {
    out.labels = b.values<int32_t>("label");
    EXPECT_EQ(out.labels.size(), o.size() - 1);
  } else {
    EXPECT_EQ(b.tensor("label"), nullptr);
  }
  EXPECT_TRUE(b.descriptor.validate().is_ok());
  return out;
}

std::string synthetic_spec(const std::string& batch, const std::string& extra = "") {
  return fmt::format(
      R"({{"source": {{"type": "synthetic_tokens", "count": 3000, "split_size": 1000,
                       "distribution": "lognormal", "mean_length": 60, "sigma": 0.9,
                       "min_length": 1, "max_length": 400, "vocab_size": 5000,
                       "num_classes": 4, "data_seed": 3}},
          "ops": [{{"op": "truncate", "max_length": 256}}{}],
          "batch": {}}})",
      extra, batch);
}

TEST(TextPipeline, BucketsHoldSimilarLengthsAndEverySequenceArrives) {
  // The same data without bucketing, one sequence per batch: the reference.
  auto plain = testing::make_pipeline(synthetic_spec(R"({"size": 1})"));
  ASSERT_TRUE(plain);
  std::multiset<std::vector<int32_t>> expected;
  for (const auto& [id, list] : testing::run_splits(*plain, *plain->splits())) {
    for (const auto& b : list) {
      for (auto& s : unpack(b, true).tokens) {
        EXPECT_LE(s.size(), 256u);
        EXPECT_GE(s.size(), 1u);
        for (int32_t t : s) EXPECT_TRUE(t >= 0 && t < 5000);
        expected.insert(std::move(s));
      }
    }
  }
  ASSERT_EQ(expected.size(), 3000u);

  const std::vector<uint32_t> bounds = {32, 64, 128};
  const std::vector<uint32_t> sizes = {64, 32, 16, 8};
  auto p = testing::make_pipeline(
      synthetic_spec(R"({"bucket": {"boundaries": [32, 64, 128], "sizes": [64, 32, 16, 8]}})"));
  ASSERT_TRUE(p);
  std::multiset<std::vector<int32_t>> got;
  size_t full = 0, partial = 0;
  for (const auto& [id, list] : testing::run_splits(*p, *p->splits(), 0, 2)) {
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& b = list[i];
      EXPECT_LE(b.descriptor.payload_bytes, p->max_batch_bytes());
      EXPECT_EQ(b.descriptor.flags, i + 1 == list.size() ? uint32_t{kLastOfSplit} : 0u);
      const Sequences s = unpack(b, true);
      ASSERT_FALSE(s.tokens.empty());
      // All sequences of a batch fall in one bucket, whose size the batch has
      // unless it is the bucket's remainder at the end of the split.
      const auto bucket_of = [&](size_t length) {
        return static_cast<size_t>(std::upper_bound(bounds.begin(), bounds.end(), length) -
                                   bounds.begin());
      };
      const size_t bucket = bucket_of(s.tokens[0].size());
      for (const auto& seq : s.tokens) EXPECT_EQ(bucket_of(seq.size()), bucket);
      if (s.tokens.size() == sizes[bucket]) {
        ++full;
      } else {
        EXPECT_LT(s.tokens.size(), sizes[bucket]);
        ++partial;
      }
      for (const auto& seq : s.tokens) got.insert(seq);
    }
  }
  EXPECT_EQ(got, expected);
  EXPECT_GT(full, 10u);
  EXPECT_LE(partial, 3u * 4u);  // at most one remainder per bucket per split
}

TEST(TextPipeline, DropRemainderAndDeterminismAcrossThreads) {
  const std::string batch = R"({"bucket": {"boundaries": [50], "sizes": [32, 8]},
                                "drop_remainder": true})";
  auto p =
      testing::make_pipeline(synthetic_spec(batch, R"(, {"op": "shuffle", "buffer_size": 64})"));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  const auto a = testing::run_splits(*p, splits, 5, 1);
  const auto b = testing::run_splits(*p, splits, 5, 3);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [id, list] : a) {
    ASSERT_EQ(list.size(), b.at(id).size());
    for (size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(list[i].payload, b.at(id)[i].payload);
      const auto s = unpack(list[i], true);
      // Full batches only; a trailing empty batch may carry the last flag.
      if (!s.tokens.empty()) {
        EXPECT_TRUE(s.tokens.size() == 32 || s.tokens.size() == 8);
      } else {
        EXPECT_EQ(list[i].descriptor.flags, uint32_t{kLastOfSplit});
      }
    }
  }
}

TEST(TextPipeline, TokenShardsFromMkdataMatchAnIndependentReader) {
  TempDir dir;
  const auto r = testing::run_command(
      fmt::format("{} tokens --count 500 --records-per-shard 200 --distribution uniform "
                  "--min-length 0 --max-length 90 --vocab-size 1000 --classes 3 --output {}",
                  STOKER_MKDATA_PATH, dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto reader =
      testing::run_command(testing::python() + " " + testing::helper("tfrecord_reader.py") + " " +
                           dir.file("tokens-*.tfrecord"));
  ASSERT_EQ(reader.exit_code, 0) << reader.output;
  std::vector<std::vector<int32_t>> expected_tokens;
  std::vector<int32_t> expected_labels;
  std::istringstream lines(reader.output);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    auto t = j["tokens"].get<std::vector<int32_t>>();
    if (t.size() > 64) t.resize(64);  // the pipeline truncates to 64
    expected_tokens.push_back(std::move(t));
    expected_labels.push_back(j["label"].get<int32_t>());
  }
  ASSERT_EQ(expected_tokens.size(), 500u);
  auto p = testing::make_pipeline(fmt::format(
      R"({{"source": {{"type": "tfrecord", "files": "{}", "content": "tokens", "split_size": 100,
                       "num_classes": 3}},
          "ops": [{{"op": "truncate", "max_length": 64}}], "batch": {{"size": 7}}}})",
      dir.file("tokens-*.tfrecord")));
  ASSERT_TRUE(p);
  std::vector<std::vector<int32_t>> tokens;
  std::vector<int32_t> labels;
  for (const auto& [id, list] : testing::run_splits(*p, *p->splits())) {
    for (const auto& b : list) {
      auto s = unpack(b, true);
      tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
      labels.insert(labels.end(), s.labels.begin(), s.labels.end());
    }
  }
  EXPECT_EQ(tokens, expected_tokens);  // in order: no shuffle, splits in id order
  EXPECT_EQ(labels, expected_labels);
  EXPECT_TRUE(std::any_of(tokens.begin(), tokens.end(), [](const auto& t) { return t.empty(); }));
}

TEST(TextPipeline, TokenIdsBeyondInt32AreBadRecords) {
  TempDir dir;
  std::string file;
  const std::vector<int32_t> good = {1, 2, 3};
  append_tfrecord(file, make_tokens_example(good, std::nullopt));
  // A hand-built Example whose int64 list holds 2^40.
  std::string big = make_tokens_example(good, std::nullopt);
  Record r;
  ASSERT_FALSE(parse_example(big, RecordContent::kTokens, {"", "", "tokens"}, r).has_value());
  {
    // tokens = [2^40]: Example{features{feature{key "tokens" value{int64_list{value: 2^40}}}}}
    // Built by appending: GCC 12 at -O3 misreports `"literal" + std::string`
    // as an overlapping memcpy (-Wrestrict, GCC bug 105329).
    const auto field = [](char tag, const std::string& body) {
      std::string out(1, tag);
      out.push_back(static_cast<char>(body.size()));
      out.append(body);
      return out;
    };
    std::string int64_list("\x0a\x06", 2);
    int64_list.append("\x80\x80\x80\x80\x80\x20");
    const std::string feature = field('\x1a', int64_list);
    std::string entry("\x0a\x06", 2);
    entry.append("tokens");
    entry.append(field('\x12', feature));
    big = field('\x0a', field('\x0a', entry));
  }
  append_tfrecord(file, big);
  append_tfrecord(file, make_tokens_example(good, std::nullopt));
  testing::write_file(dir.file("t.tfrecord"), file);
  auto p = testing::make_pipeline(fmt::format(
      R"({{"source": {{"type": "tfrecord", "files": "{}", "content": "tokens",
                       "features": {{"label": ""}}}},
          "ops": [{{"op": "truncate", "max_length": 8}}], "batch": {{"size": 4}}}})",
      dir.file("t.tfrecord")));
  ASSERT_TRUE(p);
  size_t n = 0;
  for (const auto& [id, list] : testing::run_splits(*p, *p->splits())) {
    for (const auto& b : list) n += unpack(b, false).tokens.size();
  }
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(p->bad_records()[BadRecordReason::kTokenOutOfRange], 1u);
}

TEST(TextPipeline, MaxBatchBytesBoundsTheBuckets) {
  auto p = testing::make_pipeline(
      synthetic_spec(R"({"bucket": {"boundaries": [10], "sizes": [100, 2]}})"));
  ASSERT_TRUE(p);
  // Bucket 0: 100 sequences of at most 9 tokens; bucket 1: 2 of at most 256.
  const size_t bucket0 = ((100 * 9 * 4 + 63) / 64 * 64 + 101 * 4 + 63) / 64 * 64 + 100 * 4;
  const size_t bucket1 = ((2 * 256 * 4 + 63) / 64 * 64 + 3 * 4 + 63) / 64 * 64 + 2 * 4;
  EXPECT_EQ(p->max_batch_bytes(), std::max(bucket0, bucket1));
}

}  // namespace
}  // namespace stoker::pipeline
