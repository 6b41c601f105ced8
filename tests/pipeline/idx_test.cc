// IDX sources on the real Fashion-MNIST files of Debian's
// dataset-fashion-mnist: every record exactly once per epoch with the right
// label and pixels (checked against Python's gzip reading the same files),
// truncated files, and out-of-range labels.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "pipeline/idx_file.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::TempDir;

const std::string kDir = STOKER_FASHION_MNIST_DIR;

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), digest, &n, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

class FashionMnist : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kDir + "/t10k-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "dataset-fashion-mnist is not installed in " << kDir;
    }
  }
};

TEST_F(FashionMnist, EveryRecordOncePerEpochWithItsLabelAndPixels) {
  for (const std::string split : {"t10k", "train"}) {
    auto p = testing::make_pipeline(fmt::format(
        R"({{"source": {{"type": "idx", "images": "{0}/{1}-images-idx3-ubyte.gz",
                         "labels": "{0}/{1}-labels-idx1-ubyte.gz", "split_size": 1000,
                         "num_classes": 10}},
            "batch": {{"size": 250}}}})",
        kDir, split));
    ASSERT_TRUE(p);
    const auto splits = *p->splits();
    const size_t n = split == "train" ? 60000 : 10000;
    ASSERT_EQ(splits.size(), n / 1000);
    // As DYNAMIC sharding hands them out: each split once, on two threads.
    const auto batches = testing::run_splits(*p, splits, 0, 2);
    std::string images(n * 784, '\0');
    std::string labels(n, '\0');
    std::vector<int> seen(n, 0);
    for (const auto& [id, list] : batches) {
      uint64_t record = splits[id].begin;
      for (const auto& b : list) {
        const TensorDescriptor* image = b.tensor("image");
        ASSERT_NE(image, nullptr);
        EXPECT_EQ(image->ndim, 4);
        EXPECT_EQ(image->shape[1], 28u);
        EXPECT_EQ(image->shape[2], 28u);
        EXPECT_EQ(image->shape[3], 1u);
        const auto l = b.values<int32_t>("label");
        for (size_t e = 0; e < l.size(); ++e, ++record) {
          ++seen[record];
          labels[record] = static_cast<char>(l[e]);
          std::memcpy(images.data() + record * 784, b.bytes_of("image") + e * 784, 784);
        }
      }
    }
    ASSERT_TRUE(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
    // Python's gzip on the same files.
    const auto r = testing::run_command(
        testing::python() + " -c '" +
        fmt::format("import gzip, hashlib, json; "
                    "i = gzip.open(\"{0}/{1}-images-idx3-ubyte.gz\").read()[16:]; "
                    "l = gzip.open(\"{0}/{1}-labels-idx1-ubyte.gz\").read()[8:]; "
                    "print(json.dumps([hashlib.sha256(i).hexdigest(), "
                    "hashlib.sha256(l).hexdigest(), [l.count(bytes([k])) for k in range(10)]]))",
                    kDir, split) +
        "'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto expected = nlohmann::json::parse(r.output);
    EXPECT_EQ(sha256_hex(images), expected[0].get<std::string>()) << split;
    EXPECT_EQ(sha256_hex(labels), expected[1].get<std::string>()) << split;
    EXPECT_EQ(expected[2][0].get<size_t>(), n / 10);  // Fashion-MNIST is balanced
    EXPECT_EQ(p->bad_records().total(), 0u);
  }
}

TEST_F(FashionMnist, ATruncatedFileLosesOnlyTheRecordsItNoLongerHolds) {
  TempDir dir;
  // The first 1 MB of the gzip stream: roughly a third of the test images.
  const std::string gz = testing::read_file(kDir + "/t10k-images-idx3-ubyte.gz");
  testing::write_file(dir.file("cut-images.gz"), gz.substr(0, 1 << 20));
  auto p = testing::make_pipeline(fmt::format(
      R"({{"source": {{"type": "idx", "images": "{}", "labels": "{}/t10k-labels-idx1-ubyte.gz"}},
          "batch": {{"size": 100}}}})",
      dir.file("cut-images.gz"), kDir));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  ASSERT_EQ(splits.size(), 10u);  // the header still says 10000
  size_t delivered = 0;
  for (const auto& [id, list] : testing::run_splits(*p, splits)) {
    for (const auto& b : list) delivered += b.values<int32_t>("label").size();
  }
  const auto truncated = p->bad_records()[BadRecordReason::kTruncated];
  EXPECT_GT(delivered, 1000u);
  EXPECT_LT(delivered, 9000u);
  EXPECT_EQ(delivered + truncated, 10000u);
  EXPECT_EQ(p->bad_records().total(), truncated);
  // With the fail policy the error names the file and the record's offset
  // in the decompressed stream.
  auto q = testing::make_pipeline(
      fmt::format(R"({{"source": {{"type": "idx", "images": "{}"}}, "batch": {{"size": 100}},
                      "bad_records": "fail"}})",
                  dir.file("cut-images.gz")));
  testing::CollectingSink sink;
  std::atomic<bool> cancel{false};
  Status st = q->run_split(splits.back(), 0, sink.sink(), cancel);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(
      st.message().find(dir.file("cut-images.gz") + " at byte " + std::to_string(16 + 9000 * 784)),
      std::string::npos)
      << st.message();
}

TEST(IdxSource, LabelsOutOfRangeAndMismatchedFiles) {
  TempDir dir;
  std::string pixels(5 * 4 * 3, '\x7f');
  ASSERT_TRUE(write_idx(dir.file("img"), {5, 4, 3}, pixels).is_ok());
  ASSERT_TRUE(write_idx(dir.file("lab"), {5}, std::string("\x01\x02\x0c\x03\x09", 5)).is_ok());
  auto p = testing::make_pipeline(fmt::format(
      R"({{"source": {{"type": "idx", "images": "{}", "labels": "{}", "num_classes": 10}},
          "ops": [{{"op": "decode", "channels": 3}}], "batch": {{"size": 8}}}})",
      dir.file("img"), dir.file("lab")));
  ASSERT_TRUE(p);
  const auto batches = testing::run_splits(*p, *p->splits());
  const auto& b = batches.begin()->second.at(0);
  EXPECT_EQ(b.values<int32_t>("label"), (std::vector<int32_t>{1, 2, 3, 9}));
  ASSERT_NE(b.tensor("image"), nullptr);
  EXPECT_EQ(b.tensor("image")->shape[3], 3u);  // gray replicated to RGB
  EXPECT_EQ(p->bad_records()[BadRecordReason::kLabelOutOfRange], 1u);

  ASSERT_TRUE(write_idx(dir.file("lab4"), {4}, std::string(4, '\x01')).is_ok());
  auto spec = parse_pipeline_spec(fmt::format(
      R"({{"source": {{"type": "idx", "images": "{}", "labels": "{}"}}, "batch": {{"size": 8}}}})",
      dir.file("img"), dir.file("lab4")));
  ASSERT_TRUE(spec.is_ok());
  auto bad = Pipeline::create(*spec);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("expected 5 labels"), std::string::npos);

  testing::write_file(dir.file("junk"), "this is not an IDX file");
  auto junk = parse_pipeline_spec(
      fmt::format(R"({{"source": {{"type": "idx", "images": "{}"}}, "batch": {{"size": 8}}}})",
                  dir.file("junk")));
  auto j = Pipeline::create(*junk);
  ASSERT_FALSE(j.is_ok());
  EXPECT_NE(j.status().message().find("not an IDX file"), std::string::npos);
}

TEST(IdxSource, AHeaderPromisingMoreThanTheFileHoldsCostsOnlyWhatIsThere) {
  if (testing::kAddressSanitizer) GTEST_SKIP() << "address-space limits do not work under ASan";
  TempDir dir;
  // 16 bytes: a header claiming 2^32-1 items of 2x2 (16 GiB), and no data.
  const std::string path = dir.file("liar-idx3-ubyte");
  ASSERT_TRUE(write_idx(path, {0xffffffffu, 2, 2}, "").is_ok());
  ASSERT_EQ(testing::read_file(path).size(), 16u);
  // Reading it must not allocate what the header promises.
  EXPECT_EQ(testing::run_with_memory_limit(
                uint64_t{1} << 30,
                [&] {
                  auto f = read_idx(path);
                  if (!f.is_ok()) return false;
                  return f->data.empty() && f->damage &&
                         f->damage->reason == BadRecordReason::kTruncated &&
                         f->damage->detail.find("0 of 17179869180 bytes") != std::string::npos;
                }),
            "ok");
  // Through a pipeline: the first record is truncated, precisely.
  EXPECT_EQ(testing::run_with_memory_limit(
                uint64_t{1} << 30,
                [&] {
                  auto p = testing::make_pipeline(fmt::format(
                      R"({{"source": {{"type": "idx", "images": "{}", "split_size": {}}},
                      "batch": {{"size": 8}}, "bad_records": "fail"}})",
                      path, uint64_t{1} << 22));
                  if (!p) return false;
                  testing::CollectingSink sink;
                  std::atomic<bool> cancel{false};
                  const Status st = p->run_split((*p->splits())[0], 0, sink.sink(), cancel);
                  const bool ok =
                      st.code() == StatusCode::kDataLoss &&
                      st.message().find(path + " at byte 16: truncated") != std::string::npos;
                  if (!ok) std::fprintf(stderr, "%s\n", st.to_string().c_str());
                  return ok;
                }),
            "ok");
}

TEST(IdxSource, DimensionsWhoseProductOverflowsAreRefused) {
  TempDir dir;
  // (2^32-1)^3 wraps to about 12 GiB in uint64; an item of (2^32-1)^2 bytes
  // alone is far beyond any file; a zero count must not hide that.
  const std::vector<std::vector<uint32_t>> headers = {
      {0xffffffffu, 0xffffffffu, 0xffffffffu},
      {0, 0xffffffffu, 0xffffffffu, 0xffffffffu},
      {1, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
       0xffffffffu},
      {2, 3, 0},  // items of no bytes
  };
  for (size_t i = 0; i < headers.size(); ++i) {
    const std::string path = dir.file(fmt::format("h{}", i));
    ASSERT_TRUE(write_idx(path, headers[i], "").is_ok());
    auto h = read_idx_header(path);
    ASSERT_FALSE(h.is_ok()) << i;
    EXPECT_EQ(h.status().code(), StatusCode::kDataLoss) << i;
    EXPECT_NE(h.status().message().find("IDX dimensions ["), std::string::npos)
        << h.status().message();
    EXPECT_FALSE(read_idx(path).is_ok()) << i;
  }
  // Within the limit but more splits than a job can hold.
  const std::string many = dir.file("many");
  ASSERT_TRUE(write_idx(many, {0xffffffffu, 2, 2}, "").is_ok());
  auto spec = parse_pipeline_spec(fmt::format(
      R"({{"source": {{"type": "idx", "images": "{}", "split_size": 1}}, "batch": {{"size": 8}}}})",
      many));
  ASSERT_TRUE(spec.is_ok());
  auto p = Pipeline::create(*spec);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find(many + ": 4294967295 records in splits of 1 make "
                                             "4294967295 splits, more than the 1048576"),
            std::string::npos)
      << p.status().message();
}

}  // namespace
}  // namespace stoker::pipeline
