// TFRecord sources on real files written by the test: every record with its
// pixels and label, an independent reader's view of the same bytes, index
// caching, DATA sharding, and every kind of bad record planted in a file.
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "pipeline/example_codec.h"
#include "pipeline/image_synth.h"
#include "pipeline/jpeg_codec.h"
#include "pipeline/png_codec.h"
#include "pipeline/tfrecord.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::TempDir;

constexpr uint32_t kW = 32, kH = 24;

struct Written {
  std::vector<uint64_t> offsets;  // of each record
  std::vector<std::vector<uint8_t>> pixels;
  std::vector<int64_t> labels;
  std::string bytes;  // the file
};

std::string png_of(const std::vector<uint8_t>& pixels, uint32_t w, uint32_t h) {
  auto png = encode_png(pixels.data(), w, h, 3);
  EXPECT_TRUE(png.is_ok());
  return png.is_ok() ? *png : std::string();
}

// `count` good image records, label i % 10, then written to `path`.
Written write_images(const std::string& path, int count, uint64_t seed) {
  Written w;
  for (int i = 0; i < count; ++i) {
    auto pixels = synthesize_image(kW, kH, 3, seed + static_cast<uint64_t>(i));
    w.offsets.push_back(w.bytes.size());
    append_tfrecord(w.bytes, make_image_example(png_of(pixels, kW, kH), i % 10));
    w.pixels.push_back(std::move(pixels));
    w.labels.push_back(i % 10);
  }
  testing::write_file(path, w.bytes);
  return w;
}

std::string image_spec(const std::string& files, uint64_t split_size, uint32_t batch,
                       const std::string& extra = "") {
  return fmt::format(
      R"({{"source": {{"type": "tfrecord", "files": "{}", "split_size": {}, "num_classes": 10,
                       "image_size": [{}, {}]}},
          "batch": {{"size": {}}}{}}})",
      files, split_size, kH, kW, batch, extra);
}

TEST(TFRecordSource, ReadsEveryRecordWithItsPixelsAndLabel) {
  TempDir dir;
  const Written a = write_images(dir.file("a.tfrecord"), 37, 0);
  const Written b = write_images(dir.file("b.tfrecord"), 50, 1000);
  auto p = testing::make_pipeline(image_spec(dir.file("*.tfrecord"), 16, 8));
  ASSERT_TRUE(p);
  auto splits = p->splits();
  ASSERT_TRUE(splits.is_ok()) << splits.status().to_string();
  ASSERT_EQ(splits->size(), 3u + 4u);  // 37 -> 16+16+5, 50 -> 16+16+16+2
  EXPECT_EQ((*splits)[3].shard, 1u);
  EXPECT_EQ((*splits)[6].begin, 48u);
  EXPECT_EQ(p->max_batch_bytes(), 64 * ((8 * kW * kH * 3 + 63) / 64) + 8 * 4);
  const auto batches = testing::run_splits(*p, *splits, 0, 2);
  size_t seen = 0;
  for (const auto& [id, list] : batches) {
    const Split& s = (*splits)[id];
    const Written& w = s.shard == 0 ? a : b;
    uint64_t record = s.begin;
    for (const auto& batch : list) {
      const auto labels = batch.values<int32_t>("label");
      const uint8_t* image = batch.bytes_of("image");
      ASSERT_NE(image, nullptr);
      for (size_t e = 0; e < labels.size(); ++e, ++record) {
        EXPECT_EQ(labels[e], w.labels[record]);
        EXPECT_EQ(std::memcmp(image + e * kW * kH * 3, w.pixels[record].data(), kW * kH * 3), 0)
            << "shard " << s.shard << " record " << record;
        ++seen;
      }
    }
    EXPECT_EQ(record, s.end);
  }
  EXPECT_EQ(seen, 87u);
  EXPECT_EQ(p->bad_records().total(), 0u);
}

TEST(TFRecordSource, AnIndependentReaderSeesTheSameRecords) {
  TempDir dir;
  const Written w = write_images(dir.file("a.tfrecord"), 20, 7);
  const auto r =
      testing::run_command(testing::python() + " " + testing::helper("tfrecord_reader.py") + " " +
                           dir.file("a.tfrecord"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_LT(i, w.offsets.size());
    EXPECT_EQ(j["offset"].get<uint64_t>(), w.offsets[i]);
    EXPECT_EQ(j["label"].get<int64_t>(), w.labels[i]);
  }
  EXPECT_EQ(i, 20u);
  // And the known bytes of an empty record: length 0, masked CRCs of "" and of 8 zero bytes.
  std::string empty;
  append_tfrecord(empty, "");
  const unsigned char expected[] = {0,    0,    0,    0,    0,    0,    0,    0,
                                    0x29, 0x03, 0x98, 0x07, 0xd8, 0xea, 0x82, 0xa2};
  ASSERT_EQ(empty.size(), sizeof expected);
  EXPECT_EQ(std::memcmp(empty.data(), expected, sizeof expected), 0);
}

TEST(TFRecordSource, IndexIsCachedAndRebuiltWhenTheShardChanges) {
  TempDir dir;
  const std::string shard = dir.file("a.tfrecord");
  write_images(shard, 10, 0);
  {
    auto p = testing::make_pipeline(image_spec(shard, 4, 4));
    ASSERT_EQ(p->splits()->size(), 3u);
  }
  ASSERT_TRUE(std::filesystem::exists(shard + ".stoker-index"));
  // A glob over the directory does not pick the index up as a shard.
  {
    auto p = testing::make_pipeline(image_spec(dir.file("*"), 4, 4));
    ASSERT_EQ(p->splits()->size(), 3u);
  }
  // The shard grows: the cached index no longer describes it.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_images(shard, 13, 0);
  {
    auto p = testing::make_pipeline(image_spec(shard, 4, 4));
    ASSERT_EQ(p->splits()->size(), 4u);
  }
  // A corrupt index is ignored and rebuilt.
  testing::write_file(shard + ".stoker-index", "garbage");
  {
    auto p = testing::make_pipeline(image_spec(shard, 4, 4));
    ASSERT_EQ(p->splits()->size(), 4u);
  }
  // Elsewhere when asked to.
  std::filesystem::remove(shard + ".stoker-index");
  PipelineOptions options;
  options.index_next_to_shard = false;
  options.index_dir = dir.file("cache");
  auto p = testing::make_pipeline(image_spec(shard, 4, 4), options);
  ASSERT_EQ(p->splits()->size(), 4u);
  EXPECT_FALSE(std::filesystem::exists(shard + ".stoker-index"));
  size_t cached = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("cache"))) {
    cached += e.path().string().find("a.tfrecord.stoker-index") != std::string::npos;
  }
  EXPECT_EQ(cached, 1u);
}

TEST(TFRecordSource, DataShardingVisitsEveryRecordOnce) {
  TempDir dir;
  write_images(dir.file("a.tfrecord"), 25, 0);
  auto p = testing::make_pipeline(image_spec(dir.file("a.tfrecord"), 0, 4));
  const auto splits = *p->splits();
  ASSERT_EQ(splits.size(), 1u);
  std::vector<int> per_label(10, 0);
  for (uint32_t w = 0; w < 3; ++w) {
    for (const auto& [id, list] :
         testing::run_splits(*p, static_shard(splits, ShardingMode::kData, w, 3))) {
      for (const auto& b : list) {
        for (int32_t l : b.values<int32_t>("label")) ++per_label[static_cast<size_t>(l)];
      }
    }
  }
  // Labels are i % 10 for i in [0, 25): 3 of labels 0-4, 2 of 5-9.
  for (int l = 0; l < 10; ++l) EXPECT_EQ(per_label[static_cast<size_t>(l)], l < 5 ? 3 : 2) << l;
}

// A file with every kind of bad record, and where each one is.
struct Planted {
  std::string path;
  uint64_t good = 0;
  std::map<BadRecordReason, std::vector<uint64_t>> offsets;
};

Planted plant_bad_records(const TempDir& dir) {
  Planted out;
  out.path = dir.file("bad.tfrecord");
  std::string file;
  auto good_image = [&](int i) {
    return png_of(synthesize_image(kW, kH, 3, static_cast<uint64_t>(i)), kW, kH);
  };
  auto add = [&](const std::string& record, std::optional<BadRecordReason> reason) {
    if (reason) {
      out.offsets[*reason].push_back(file.size());
    } else {
      ++out.good;
    }
    append_tfrecord(file, record);
  };
  add(make_image_example(good_image(0), 1), std::nullopt);
  // Data CRC: flip a byte of this record's data after framing it.
  const uint64_t crc_at = file.size();
  add(make_image_example(good_image(1), 2), BadRecordReason::kCrcMismatch);
  file[crc_at + kTFRecordHeaderBytes + 20] ^= 0x40;
  add(make_image_example("definitely not an image", 3), BadRecordReason::kUndecodableImage);
  const auto jpeg_pixels = synthesize_image(kW, kH, 3, 9);
  const std::string jpeg = *encode_jpeg(jpeg_pixels.data(), kW, kH, 3, 90);
  add(make_image_example(jpeg.substr(0, jpeg.size() / 2), 4), BadRecordReason::kUndecodableImage);
  add(make_image_example(png_of(synthesize_image(30, 30, 3, 1), 30, 30), 5),
      BadRecordReason::kWrongImageSize);
  add(make_image_example(good_image(2), 10), BadRecordReason::kLabelOutOfRange);
  add(make_image_example(good_image(3), -1), BadRecordReason::kLabelOutOfRange);
  add("\xff\xff\xff not a protobuf", BadRecordReason::kMalformedRecord);
  add(make_image_example(good_image(4), std::nullopt), BadRecordReason::kMalformedRecord);
  add(make_image_example(jpeg, 6), std::nullopt);
  add(make_image_example(good_image(5), 7), std::nullopt);
  // The file ends in the middle of the last record.
  const uint64_t tail = file.size();
  std::string last;
  append_tfrecord(last, make_image_example(good_image(6), 8));
  file += last.substr(0, last.size() / 2);
  out.offsets[BadRecordReason::kTruncated].push_back(tail);
  testing::write_file(out.path, file);
  return out;
}

TEST(TFRecordSource, BadRecordsAreSkippedCountedAndLogged) {
  TempDir dir;
  const Planted planted = plant_bad_records(dir);
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", ring));
  auto p = testing::make_pipeline(image_spec(planted.path, 4, 3));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  uint64_t delivered = 0;
  std::vector<int32_t> labels;
  for (const auto& [id, list] : testing::run_splits(*p, splits)) {
    EXPECT_EQ(list.back().descriptor.flags, uint32_t{kLastOfSplit});
    for (const auto& b : list) {
      for (int32_t l : b.values<int32_t>("label")) labels.push_back(l);
    }
  }
  spdlog::set_default_logger(previous);
  delivered = labels.size();
  EXPECT_EQ(delivered, planted.good);
  EXPECT_EQ(labels, (std::vector<int32_t>{1, 6, 7}));
  const BadRecordCounts counts = p->bad_records();
  for (const auto& [reason, where] : planted.offsets) {
    EXPECT_EQ(counts[reason], where.size()) << bad_record_reason_name(reason);
  }
  EXPECT_EQ(counts.total(), 9u);
  // Each skip is logged with the file and the record's byte offset.
  const auto logged = ring->last_formatted();
  for (const auto& [reason, where] : planted.offsets) {
    for (uint64_t offset : where) {
      const std::string needle =
          fmt::format("{} at byte {}: {}", planted.path, offset, bad_record_reason_name(reason));
      EXPECT_TRUE(std::any_of(logged.begin(), logged.end(), [&](const std::string& l) {
        return l.find(needle) != std::string::npos;
      })) << needle;
    }
  }
}

TEST(TFRecordSource, FailPolicyNamesTheFileAndOffset) {
  TempDir dir;
  const Planted planted = plant_bad_records(dir);
  auto p = testing::make_pipeline(image_spec(planted.path, 0, 3, R"(, "bad_records": "fail")"));
  ASSERT_TRUE(p);
  testing::CollectingSink sink;
  std::atomic<bool> cancel{false};
  Status st = p->run_split((*p->splits())[0], 0, sink.sink(), cancel);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  const uint64_t offset = planted.offsets.at(BadRecordReason::kCrcMismatch)[0];
  EXPECT_NE(
      st.message().find(fmt::format("{} at byte {}: crc_mismatch: data CRC", planted.path, offset)),
      std::string::npos)
      << st.message();
  // The options can override the spec's policy.
  PipelineOptions skip;
  skip.bad_records = BadRecordPolicy::kSkip;
  auto q =
      testing::make_pipeline(image_spec(planted.path, 0, 3, R"(, "bad_records": "fail")"), skip);
  EXPECT_TRUE(q->run_split((*q->splits())[0], 0, sink.sink(), cancel).is_ok());
}

TEST(TFRecordSource, BrokenLengthCrcEndsTheShardOncePerEpoch) {
  TempDir dir;
  Written w = write_images(dir.file("a.tfrecord"), 10, 0);
  // Corrupt record 6's length CRC: its framing, and all after it, are lost.
  w.bytes[w.offsets[6] + 9] ^= 0x01;
  testing::write_file(dir.file("a.tfrecord"), w.bytes);
  auto p = testing::make_pipeline(image_spec(dir.file("a.tfrecord"), 4, 4));
  const auto splits = *p->splits();
  ASSERT_EQ(splits.back().end, 7u);  // 6 good records and the damaged tail
  for (uint64_t epoch = 0; epoch < 2; ++epoch) {
    size_t n = 0;
    for (const auto& [id, list] : testing::run_splits(*p, splits, epoch)) {
      for (const auto& b : list) n += b.values<int32_t>("label").size();
    }
    EXPECT_EQ(n, 6u);
  }
  EXPECT_EQ(p->bad_records()[BadRecordReason::kCrcMismatch], 2u);
  EXPECT_EQ(p->bad_records().total(), 2u);
}

TEST(TFRecordSource, MissingFilesAreErrorsNotEmptyDatasets) {
  TempDir dir;
  auto spec = parse_pipeline_spec(image_spec(dir.file("nothing-*.tfrecord"), 4, 4));
  ASSERT_TRUE(spec.is_ok());
  auto p = Pipeline::create(*spec);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_NE(p.status().message().find("nothing-*.tfrecord"), std::string::npos);
}

TEST(TFRecordSource, GlobsNeverMatchIndexFilesOrTheirTemporaries) {
  TempDir dir;
  // A crash between writing an index's temporary file and renaming it leaves
  // <shard>.stoker-index.tmp-XXXXXXXX behind; it must not become a shard.
  for (const char* name : {"a.tfrecord", "a.tfrecord.stoker-index",
                           "a.tfrecord.stoker-index.tmp-0000abcd", "b.stoker-index.tmp-1"}) {
    testing::write_file(dir.file(name), "x");
  }
  auto files = resolve_files({dir.file("*")}, "");
  ASSERT_TRUE(files.is_ok()) << files.status().to_string();
  EXPECT_EQ(*files, (std::vector<std::string>{dir.file("a.tfrecord")}));
  // Only temporaries match: nothing does.
  auto none = resolve_files({dir.file("*.tmp-*")}, "");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  // A directory whose name has the marker does not hide its shards.
  std::filesystem::create_directories(dir.file("x.stoker-index.d"));
  testing::write_file(dir.file("x.stoker-index.d/c.tfrecord"), "x");
  auto nested = resolve_files({dir.file("x.stoker-index.d/*")}, "");
  ASSERT_TRUE(nested.is_ok()) << nested.status().to_string();
  EXPECT_EQ(nested->size(), 1u);
}

TEST(TFRecordSource, MoreSplitsThanAJobCanHoldAreRefused) {
  TempDir dir;
  // 2^20 + 1 empty records (16 bytes each): one split each is one too many.
  std::string bytes;
  for (uint64_t i = 0; i <= kMaxSplits; ++i) append_tfrecord(bytes, "");
  testing::write_file(dir.file("many.tfrecord"), bytes);
  auto p = testing::make_pipeline(image_spec(dir.file("many.tfrecord"), 1, 4));
  ASSERT_TRUE(p);
  auto splits = p->splits();
  ASSERT_FALSE(splits.is_ok());
  EXPECT_EQ(splits.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(splits.status().message().find(dir.file("many.tfrecord") +
                                           ": 1048577 records in splits of 1 make 1048577 splits, "
                                           "more than the 1048576 a job can hold"),
            std::string::npos)
      << splits.status().message();
  // Larger splits of the same shard are fine.
  auto q = testing::make_pipeline(image_spec(dir.file("many.tfrecord"), 1024, 4));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->splits()->size(), 1025u);
}

TEST(TFRecordSource, RelativePathsResolveAgainstTheBaseDir) {
  TempDir dir;
  write_images(dir.file("rel.tfrecord"), 3, 0);
  PipelineOptions options;
  options.base_dir = dir.path();
  auto p = testing::make_pipeline(image_spec("rel.tfrecord", 4, 4), options);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->splits()->size(), 1u);
}

TEST(TFRecordSource, ConcurrentPipelinesShareOneIndexFile) {
  TempDir dir;
  write_images(dir.file("a.tfrecord"), 40, 0);
  std::vector<std::thread> threads;
  std::vector<size_t> counts(4, 0);
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto spec = parse_pipeline_spec(image_spec(dir.file("a.tfrecord"), 8, 4));
      auto p = Pipeline::create(*spec);
      if (!p.is_ok()) return;
      auto splits = (*p)->splits();
      if (splits.is_ok()) counts[t] = splits->size();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counts, (std::vector<size_t>{5, 5, 5, 5}));
  // The index on disk is whole: a fresh pipeline loads it and agrees.
  auto p = testing::make_pipeline(image_spec(dir.file("a.tfrecord"), 8, 4));
  EXPECT_EQ(p->splits()->size(), 5u);
  size_t leftovers = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    leftovers += e.path().string().find(".tmp-") != std::string::npos;
  }
  EXPECT_EQ(leftovers, 0u);
}

TEST(TFRecordSource, RandomCorruptionNeverCrashes) {
  // JPEG records (the decoder is the most exposed part) with random bytes
  // flipped anywhere in the file, including headers and CRCs.
  TempDir dir;
  std::string file;
  for (int i = 0; i < 12; ++i) {
    const auto pixels = synthesize_image(48, 40, 3, static_cast<uint64_t>(i));
    append_tfrecord(file, make_image_example(*encode_jpeg(pixels.data(), 48, 40, 3, 80), i % 10));
  }
  std::mt19937 rng(5);
  for (int trial = 0; trial < 60; ++trial) {
    std::string damaged = file;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      damaged[rng() % damaged.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    if (trial % 5 == 0) damaged.resize(rng() % damaged.size());
    const std::string path = dir.file(fmt::format("c{}.tfrecord", trial));
    testing::write_file(path, damaged);
    auto p = testing::make_pipeline(fmt::format(
        R"({{"source": {{"type": "tfrecord", "files": "{}", "split_size": 5, "num_classes": 10}},
            "ops": [{{"op": "random_resized_crop", "size": 32}}], "batch": {{"size": 4}}}})",
        path));
    ASSERT_TRUE(p);
    auto splits = p->splits();
    ASSERT_TRUE(splits.is_ok()) << splits.status().to_string();
    size_t delivered = 0;
    for (const auto& [id, list] : testing::run_splits(*p, *splits)) {
      for (const auto& b : list) delivered += b.values<int32_t>("label").size();
    }
    EXPECT_LE(delivered + p->bad_records().total(), 13u);
  }
}

}  // namespace
}  // namespace stoker::pipeline
