// stoker-mkdata, run as a process: its Fashion-MNIST shards checked record by
// record against the IDX files by an independent Python reader, the whole
// test split read back through stoker's pipeline (every record once, right
// label, exact pixels), synthetic ImageNet-like shards of realistic size, and
// bad arguments.
#include <gtest/gtest.h>

#include "pipeline/idx_file.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::TempDir;

const std::string kMkdata = STOKER_MKDATA_PATH;
const std::string kDir = STOKER_FASHION_MNIST_DIR;

bool have_fashion_mnist() { return std::filesystem::exists(kDir + "/t10k-images-idx3-ubyte.gz"); }

std::string check_shards(const std::string& encoding, const std::string& shards) {
  const auto r = testing::run_command(fmt::format("{} {} {} t10k {} {}", testing::python(),
                                                  testing::helper("check_fashion_mnist_shards.py"),
                                                  kDir, encoding, shards));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

TEST(Mkdata, FashionMnistTfrecordPngIsTheWholeSplitExactly) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  const auto r = testing::run_command(
      fmt::format("{} fashion-mnist --split t10k --format tfrecord --encoding png "
                  "--records-per-shard 3000 --output {}",
                  kMkdata, dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::filesystem::exists(
        dir.file(fmt::format("fashion-mnist-test-{:05d}-of-00004.tfrecord", i))));
  }
  EXPECT_EQ(check_shards("png", dir.file("*.tfrecord")).substr(0, 8), "ok 10000");

  // Read back through the pipeline, split by split on two threads: every
  // record exactly once, with the IDX file's label and pixels.
  auto idx_images = read_idx(kDir + "/t10k-images-idx3-ubyte.gz");
  auto idx_labels = read_idx(kDir + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_TRUE(idx_images.is_ok() && idx_labels.is_ok());
  auto p = testing::make_pipeline(fmt::format(
      R"({{"source": {{"type": "tfrecord", "files": "{}", "split_size": 500, "num_classes": 10,
                       "image_size": [28, 28]}},
          "ops": [{{"op": "decode", "channels": 1}}], "batch": {{"size": 64}}}})",
      dir.file("fashion-mnist-test-*.tfrecord")));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  ASSERT_EQ(splits.size(), 3u * 6u + 2u);  // shards of 3000, 3000, 3000 and 1000
  std::vector<int> seen(10000, 0);
  for (const auto& [id, list] : testing::run_splits(*p, splits, 0, 2)) {
    uint64_t index = splits[id].shard * 3000 + splits[id].begin;
    for (const auto& b : list) {
      const auto labels = b.values<int32_t>("label");
      for (size_t e = 0; e < labels.size(); ++e, ++index) {
        ASSERT_LT(index, 10000u);
        ++seen[index];
        EXPECT_EQ(labels[e], static_cast<uint8_t>(idx_labels->data[index]));
        EXPECT_EQ(
            std::memcmp(b.bytes_of("image") + e * 784, idx_images->data.data() + index * 784, 784),
            0);
      }
    }
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

TEST(Mkdata, FashionMnistWebDatasetJpeg) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  const auto r = testing::run_command(
      fmt::format("{} fashion-mnist --split t10k --format webdataset --encoding jpeg "
                  "--quality 95 --limit 2500 --records-per-shard 1000 --output {}",
                  kMkdata, dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(check_shards("jpeg", dir.file("*.tar")).substr(0, 7), "ok 2500");
}

TEST(Mkdata, ImagenetLikeJpegsHaveRealisticSizes) {
  TempDir dir;
  const auto r = testing::run_command(
      fmt::format("{} imagenet-like --count 12 --records-per-shard 6 --classes 5 --output {}",
                  kMkdata, dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Pillow reads every image: 500x375 RGB, 80-160 KB at quality 90, label i % 5.
  const auto check = testing::run_command(testing::python() + " -c '" +
                                          fmt::format(R"(
import glob, tarfile, io
from PIL import Image
n = 0
for path in sorted(glob.glob("{}/*.tar")):
    with tarfile.open(path) as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if m.name.endswith(".jpg"):
                im = Image.open(io.BytesIO(data))
                assert im.size == (500, 375) and im.mode == "RGB", (m.name, im.size, im.mode)
                assert 80000 < len(data) < 160000, (m.name, len(data))
                n += 1
            else:
                assert int(data) == int(m.name[6:15]) % 5, m.name
print(n)
)",
                                                      dir.path()) +
                                          "'");
  ASSERT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "12\n");
}

TEST(Mkdata, RejectsBadArguments) {
  TempDir dir;
  EXPECT_NE(testing::run_command(kMkdata).exit_code, 0);
  EXPECT_NE(
      testing::run_command(kMkdata + " imagenet-like --count 0 --output " + dir.path()).exit_code,
      0);
  const auto missing = testing::run_command(kMkdata + " fashion-mnist --input " +
                                            dir.file("nowhere") + " --output " + dir.path());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("nowhere"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace stoker::pipeline
