// Fashion-MNIST end to end: the IDX files of the dataset-fashion-mnist
// package, read by three worker processes under DYNAMIC sharding and
// delivered to two readers sharing the job. Every one of the 60,000 training
// records must arrive exactly once per epoch, pixels intact, with its own
// label: the test reads the same files itself (zlib) and matches each
// delivered (image, label) pair against them. On a GPU, the same census
// through device output: batches copied to the GPU in slices and collated
// (with random flips) slice by slice, then undone on the host.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <map>
#include <mutex>
#include <thread>

#include "common/crc32c.h"
#include "gpu/stream.h"
#include "stoker/collate.h"
#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

const std::string kDir = "/usr/share/datasets/fashion-mnist";

std::vector<uint8_t> gunzip(const std::string& path) {
  std::vector<uint8_t> out;
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  uint8_t buffer[1 << 16];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.insert(out.end(), buffer, buffer + n);
  gzclose(f);
  return out;
}

// (CRC32C of the 784 pixels, label) -> how many records have it.
using Census = std::map<std::pair<uint32_t, int32_t>, int>;

Census reference_census() {
  const auto images = gunzip(kDir + "/train-images-idx3-ubyte.gz");
  const auto labels = gunzip(kDir + "/train-labels-idx1-ubyte.gz");
  Census census;
  if (images.size() != 16 + 60000 * 784 || labels.size() != 8 + 60000) return census;
  for (size_t i = 0; i < 60000; ++i) {
    const auto* pixels = reinterpret_cast<const std::byte*>(images.data() + 16 + i * 784);
    ++census[{crc32c({pixels, 784}), labels[8 + i]}];
  }
  return census;
}

// The training set, shuffled, in splits of `split_size` records.
std::string train_spec(uint32_t split_size, uint32_t batch) {
  return R"({"seed": 5, "source": {"type": "idx",
      "images": ")" +
         kDir + R"(/train-images-idx3-ubyte.gz",
      "labels": ")" +
         kDir + R"(/train-labels-idx1-ubyte.gz",
      "split_size": )" +
         std::to_string(split_size) + R"(, "num_classes": 10},
    "ops": [{"op": "shuffle", "buffer_size": 500}], "batch": {"size": )" +
         std::to_string(batch) + "}}";
}

TEST(FashionMnist, EveryTrainingRecordArrivesExactlyOncePerEpochWithItsLabel) {
  if (!std::filesystem::exists(kDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const Census reference = reference_census();
  ASSERT_FALSE(reference.empty());
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  const std::string spec = train_spec(1000, 128);
  constexpr uint32_t kEpochs = 2;
  ReaderOptions options{.job_name = "fashion", .pipeline_spec = spec, .epochs = kEpochs};
  auto a = client->open_reader(options);
  auto b = client->open_reader(options);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();

  std::mutex mu;
  std::vector<Census> seen(kEpochs);
  const auto read = [&](Reader& reader) -> Status {
    while (true) {
      auto next = reader.next(60s);
      if (!next.is_ok()) {
        return next.status().code() == StatusCode::kOutOfRange ? Status::ok() : next.status();
      }
      if (!next->has_value()) continue;
      const Batch& batch = **next;
      STOKER_ASSIGN_OR_RETURN(auto image, batch.tensor("image"));
      STOKER_ASSIGN_OR_RETURN(auto label, batch.tensor("label"));
      if (image.dtype() != DType::kUInt8 || image.element_count() != label.element_count() * 784 ||
          label.dtype() != DType::kInt32) {
        return internal_error("unexpected batch layout");
      }
      const auto* pixels = static_cast<const std::byte*>(image.data());
      const auto* labels = label.data_as<const int32_t>();
      std::lock_guard lock(mu);
      for (int64_t i = 0; i < label.element_count(); ++i) {
        ++seen[batch.epoch()][{crc32c({pixels + i * 784, 784}), labels[i]}];
      }
    }
  };
  Status sa, sb;
  std::thread ta([&] { sa = read(**a); });
  std::thread tb([&] { sb = read(**b); });
  ta.join();
  tb.join();
  ASSERT_TRUE(sa.is_ok()) << sa.to_string() << cluster.logs();
  ASSERT_TRUE(sb.is_ok()) << sb.to_string() << cluster.logs();
  for (uint32_t e = 0; e < kEpochs; ++e) {
    EXPECT_EQ(seen[e], reference) << "epoch " << e << ": records missing, repeated, altered or "
                                  << "carrying another label";
  }
  EXPECT_GT((*a)->stats().batches, 0u);
  EXPECT_GT((*b)->stats().batches, 0u);
}

// Batches of 2,000 images (1.5 MiB) land in pinned memory, are copied to the
// GPU in slices and collated behind each slice with random flips; the host
// undoes the flips and the scaling, and the census must match exactly.
TEST(FashionMnist, DeviceOutputCollatedInSlicesKeepsEveryRecordIntact) {
  if (!std::filesystem::exists(kDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  const Census reference = reference_census();
  ASSERT_FALSE(reference.empty());
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1, {"--memory-budget", "64M"});
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  auto stream = CudaStream::create(0);
  ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
  ImageCollation collation{.output_dtype = DType::kFloat32,
                           .layout = ImageLayout::kNHWC,
                           .mean = {0.0f},
                           .stddev = {1.0f},
                           .random_flip = true,
                           .seed = 11};
  ReaderOptions options{.pipeline_spec = train_spec(6000, 2000),
                        .memory = MemoryKind::kDevice,
                        .stream = stream->ref(),
                        .slots = 8,
                        .credits_per_worker = 2};
  options.collation.image = collation;
  auto reader = client->open_reader(options);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Census seen;
  uint64_t flipped = 0;
  std::vector<float> image;
  std::vector<int32_t> labels;
  std::vector<std::byte> pixels(784);
  while (true) {
    auto next = (*reader)->next(60s);
    ASSERT_TRUE(next.is_ok()) << next.status().to_string() << cluster.logs();
    if (!next->has_value()) break;
    const Batch& batch = **next;
    auto view = batch.tensor("image");
    ASSERT_TRUE(view.is_ok()) << view.status().to_string();
    ASSERT_EQ(view->memory(), MemoryKind::kDevice);
    const auto n = static_cast<size_t>(view->dim(0));
    image.resize(n * 784);
    labels.resize(n);
    ASSERT_TRUE(batch.copy_to_host("image", std::as_writable_bytes(std::span(image))).is_ok());
    ASSERT_TRUE(batch.copy_to_host("label", std::as_writable_bytes(std::span(labels))).is_ok());
    for (size_t i = 0; i < n; ++i) {
      const bool flip = image_sample_flipped(collation, i);
      flipped += flip ? 1 : 0;
      for (size_t y = 0; y < 28; ++y) {
        for (size_t x = 0; x < 28; ++x) {
          const float v = image[i * 784 + y * 28 + (flip ? 27 - x : x)];
          pixels[y * 28 + x] = static_cast<std::byte>(std::lround(v * 255.0f));
        }
      }
      ++seen[{crc32c(pixels), labels[i]}];
    }
  }
  EXPECT_EQ(seen, reference) << "records missing, repeated, altered or carrying another label";
  EXPECT_GT(flipped, 20000u);  // about half of 60,000
  EXPECT_LT(flipped, 40000u);
}

}  // namespace
}  // namespace stoker::testing
