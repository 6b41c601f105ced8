// WebDataset tar shards: sample grouping by key, record-range splits that
// start in the middle of a shard, a tar written by Python's tarfile (GNU
// format, long names), and bad samples planted in real files.
#include <gtest/gtest.h>

#include "pipeline/image_synth.h"
#include "pipeline/jpeg_codec.h"
#include "pipeline/png_codec.h"
#include "pipeline/tar_shard.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::TempDir;

constexpr uint32_t kW = 20, kH = 16;

std::string png(uint64_t seed, uint32_t w = kW, uint32_t h = kH) {
  const auto pixels = synthesize_image(w, h, 3, seed);
  return *encode_png(pixels.data(), w, h, 3);
}

std::string spec(const std::string& files, uint64_t split_size, const std::string& extra = "") {
  return fmt::format(
      R"({{"source": {{"type": "webdataset", "files": "{}", "split_size": {}, "num_classes": 100,
                       "image_size": [{}, {}]{}}},
          "batch": {{"size": 4}}}})",
      files, split_size, kH, kW, extra);
}

std::vector<int32_t> all_labels(Pipeline& p, const std::vector<Split>& splits) {
  std::vector<int32_t> out;
  for (const auto& [id, list] : testing::run_splits(p, splits)) {
    for (const auto& b : list) {
      const auto l = b.values<int32_t>("label");
      out.insert(out.end(), l.begin(), l.end());
    }
  }
  return out;
}

TEST(WebDatasetSource, GroupsMembersBySampleKey) {
  TempDir dir;
  auto w = TarWriter::create(dir.file("a.tar"));
  ASSERT_TRUE(w.is_ok());
  // Keys hold directories with dots; members other than image and label are ignored.
  for (int i = 0; i < 23; ++i) {
    const std::string key = fmt::format("train.v1/part.{}/s{:03d}", i % 3, i);
    ASSERT_TRUE((*w)->add(key + ".json", "{}").is_ok());
    ASSERT_TRUE((*w)->add(key + (i % 2 ? ".png" : ".PNG"), png(static_cast<uint64_t>(i))).is_ok());
    ASSERT_TRUE((*w)->add(key + ".seg.png", "not the image").is_ok());
    ASSERT_TRUE((*w)->add(key + ".cls", fmt::format(" {}\n", i)).is_ok());
  }
  ASSERT_TRUE((*w)->close().is_ok());
  // One split per shard, and splits of 5 samples that start mid-shard.
  for (uint64_t split_size : {uint64_t{0}, uint64_t{5}}) {
    auto p = testing::make_pipeline(spec(dir.file("a.tar"), split_size));
    ASSERT_TRUE(p);
    const auto splits = *p->splits();
    EXPECT_EQ(splits.size(), split_size ? 5u : 1u);
    const auto labels = all_labels(*p, splits);
    ASSERT_EQ(labels.size(), 23u);
    for (int i = 0; i < 23; ++i) EXPECT_EQ(labels[static_cast<size_t>(i)], i);
    EXPECT_EQ(p->bad_records().total(), 0u);
  }
  // DATA sharding within the shard.
  auto p = testing::make_pipeline(spec(dir.file("a.tar"), 0));
  const auto splits = *p->splits();
  std::vector<int32_t> seen;
  for (uint32_t i = 0; i < 2; ++i) {
    const auto l = all_labels(*p, static_shard(splits, ShardingMode::kData, i, 2));
    seen.insert(seen.end(), l.begin(), l.end());
  }
  std::sort(seen.begin(), seen.end());
  ASSERT_EQ(seen.size(), 23u);
  for (int i = 0; i < 23; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);
}

// Writes n PNGs, 0.png .. (n-1).png, into `dir` for a tar-writing script.
void write_pngs(const TempDir& dir, int n, uint64_t first_seed) {
  for (int i = 0; i < n; ++i) {
    testing::write_file(dir.file(fmt::format("{}.png", i)),
                        png(first_seed + static_cast<uint64_t>(i)));
  }
}

// Runs a Python script (Python's tarfile writes the shard) from `dir`.
void run_tar_script(const TempDir& dir, const std::string& script) {
  testing::write_file(dir.file("make_tar.py"), script);
  const auto r = testing::run_command(testing::python() + " " + dir.file("make_tar.py"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

TEST(WebDatasetSource, ReadsATarWrittenByPythonTarfile) {
  TempDir dir;
  write_pngs(dir, 6, 7);
  // GNU format with a member name longer than 100 bytes (a long-name header).
  const std::string script = fmt::format(R"(
import io, tarfile
with tarfile.open("{0}/py.tar", "w", format=tarfile.GNU_FORMAT) as tar:
    for i in range(6):
        key = ("deep/" * 25) + f"sample{{i}}"
        for name, data in ((key + ".png", open(f"{0}/{{i}}.png", "rb").read()),
                           (key + ".cls", str(40 + i).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
)",
                                         dir.path());
  ASSERT_NO_FATAL_FAILURE(run_tar_script(dir, script));
  auto p = testing::make_pipeline(spec(dir.file("py.tar"), 2));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  EXPECT_EQ(splits.size(), 3u);
  EXPECT_EQ(all_labels(*p, splits), (std::vector<int32_t>{40, 41, 42, 43, 44, 45}));
  EXPECT_EQ(p->bad_records().total(), 0u);
}

TEST(WebDatasetSource, BadSamplesAreCountedPerReason) {
  TempDir dir;
  auto w = TarWriter::create(dir.file("bad.tar"));
  ASSERT_TRUE(w.is_ok());
  const auto add = [&](const std::string& name, const std::string& data) {
    ASSERT_TRUE((*w)->add(name, data).is_ok());
  };
  add("s0.png", png(0));
  add("s0.cls", "0");
  add("s1.png", png(1));  // no label
  add("s2.cls", "2");     // no image
  add("s3.png", png(3));
  add("s3.cls", "three");  // not a number
  add("s4.png", "\x89PNG\r\n\x1a\n but then nothing");
  add("s4.cls", "4");
  add("s5.png", png(5, 30, 30));  // wrong size
  add("s5.cls", "5");
  add("s6.png", png(6));
  add("s6.cls", "100");  // num_classes is 100
  add("s7.png", png(7));
  add("s7.cls", "7");
  add("s8.png", png(8));
  add("s8.cls", "8");
  ASSERT_TRUE((*w)->close().is_ok());
  // Cut the file inside s8's image.
  std::string bytes = testing::read_file(dir.file("bad.tar"));
  const size_t s8 = bytes.find("s8.png");
  ASSERT_NE(s8, std::string::npos);
  testing::write_file(dir.file("bad.tar"), bytes.substr(0, s8 + 512 + 100));

  auto p = testing::make_pipeline(spec(dir.file("bad.tar"), 3));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  EXPECT_EQ(all_labels(*p, splits), (std::vector<int32_t>{0, 7}));
  const auto counts = p->bad_records();
  EXPECT_EQ(counts[BadRecordReason::kMalformedRecord], 3u);  // s1, s2, s3
  EXPECT_EQ(counts[BadRecordReason::kUndecodableImage], 1u);
  EXPECT_EQ(counts[BadRecordReason::kWrongImageSize], 1u);
  EXPECT_EQ(counts[BadRecordReason::kLabelOutOfRange], 1u);
  EXPECT_EQ(counts[BadRecordReason::kTruncated], 1u);
  EXPECT_EQ(counts.total(), 7u);

  // Fail policy: the first bad sample stops the split, naming file and offset.
  auto q = testing::make_pipeline(spec(dir.file("bad.tar"), 0),
                                  PipelineOptions{.bad_records = BadRecordPolicy::kFail});
  testing::CollectingSink sink;
  std::atomic<bool> cancel{false};
  Status st = q->run_split((*q->splits())[0], 0, sink.sink(), cancel);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find(dir.file("bad.tar") + " at byte "), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("sample 's1' has no .cls member"), std::string::npos) << st.message();
}

TEST(WebDatasetSource, AMemberClaimingAHugeSizeIsAMalformedRecord) {
  TempDir dir;
  write_pngs(dir, 4, 0);
  // pax "real sizes" set the member's logical size freely: 2^40 bytes for a
  // member with a few hundred bytes of data. Sample 3 claims 1 MiB, past the
  // end of the file but not absurd.
  const std::string script = fmt::format(R"(
import io, os, tarfile
with tarfile.open("{0}/huge.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    for i, claim in ((0, None), (1, ("GNU.sparse.size", str(1 << 40))),
                     (2, ("SCHILY.realsize", str(1 << 40))), (3, ("GNU.sparse.size", str(1 << 20)))):
        for name, data in ((f"s{{i}}.png", open(f"{0}/{{i}}.png", "rb").read()),
                           (f"s{{i}}.cls", str(i).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if claim and name.endswith(".png"):
                info.pax_headers = dict([claim])
            tar.addfile(info, io.BytesIO(data))
)",
                                         dir.path());
  ASSERT_NO_FATAL_FAILURE(run_tar_script(dir, script));

  auto p = testing::make_pipeline(spec(dir.file("huge.tar"), 2));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  EXPECT_EQ(all_labels(*p, splits), (std::vector<int32_t>{0}));
  EXPECT_EQ(p->bad_records()[BadRecordReason::kMalformedRecord], 3u);
  EXPECT_EQ(p->bad_records().total(), 3u);

  // Fail policy: the error names the claim.
  auto q = testing::make_pipeline(spec(dir.file("huge.tar"), 0),
                                  PipelineOptions{.bad_records = BadRecordPolicy::kFail});
  testing::CollectingSink sink;
  std::atomic<bool> cancel{false};
  Status st = q->run_split((*q->splits())[0], 0, sink.sink(), cancel);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("malformed_record: the header claims 1099511627776 bytes of data, "
                              "more than the "),
            std::string::npos)
      << st.message();
}

TEST(WebDatasetSource, RandomCorruptionNeverCrashes) {
  TempDir dir;
  auto w = TarWriter::create(dir.file("good.tar"));
  ASSERT_TRUE(w.is_ok());
  for (int i = 0; i < 10; ++i) {
    const auto pixels = synthesize_image(kW, kH, 3, static_cast<uint64_t>(i));
    ASSERT_TRUE(
        (*w)->add(fmt::format("s{}.jpg", i), *encode_jpeg(pixels.data(), kW, kH, 3, 80)).is_ok());
    ASSERT_TRUE((*w)->add(fmt::format("s{}.cls", i), std::to_string(i)).is_ok());
  }
  ASSERT_TRUE((*w)->close().is_ok());
  const std::string tar = testing::read_file(dir.file("good.tar"));
  std::mt19937 rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    std::string damaged = tar;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    if (trial % 5 == 0) damaged.resize(rng() % damaged.size());
    const std::string path = dir.file(fmt::format("c{}.tar", trial));
    testing::write_file(path, damaged);
    auto p = testing::make_pipeline(spec(path, 3));
    ASSERT_TRUE(p);
    // Damage is bad records, never an error of the whole shard.
    auto splits = p->splits();
    ASSERT_TRUE(splits.is_ok()) << splits.status().to_string();
    Status error;
    const auto batches = testing::run_splits(*p, *splits, 0, 1, &error);
    size_t delivered = 0;
    for (const auto& [id, list] : batches) {
      for (const auto& b : list) delivered += b.values<int32_t>("label").size();
    }
    EXPECT_TRUE(error.is_ok()) << error.to_string();
    EXPECT_LE(delivered, 10u);
    EXPECT_GE(delivered + p->bad_records().total(), 1u);
  }
}

TEST(WebDatasetSource, SplitNameAtTheFirstDotOfTheBaseName) {
  EXPECT_EQ(split_sample_name("a/b.c/x.seg.png"),
            (std::pair<std::string_view, std::string_view>{"a/b.c/x", "seg.png"}));
  EXPECT_EQ(split_sample_name("x.jpg"),
            (std::pair<std::string_view, std::string_view>{"x", "jpg"}));
  EXPECT_EQ(split_sample_name("dir/noext"),
            (std::pair<std::string_view, std::string_view>{"dir/noext", ""}));
}

}  // namespace
}  // namespace stoker::pipeline
