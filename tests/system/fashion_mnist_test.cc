// Fashion-MNIST end to end: the IDX files of the dataset-fashion-mnist
// package, read by three worker processes under DYNAMIC sharding and
// delivered to two readers sharing the job. Every one of the 60,000 training
// records must arrive exactly once per epoch, pixels intact, with its own
// label: the test reads the same files itself (zlib) and matches each
// delivered (image, label) pair against them.
#include <gtest/gtest.h>
#include <zlib.h>

#include <map>
#include <mutex>
#include <thread>

#include "common/crc32c.h"
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

TEST(FashionMnist, EveryTrainingRecordArrivesExactlyOncePerEpochWithItsLabel) {
  if (!std::filesystem::exists(kDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const Census reference = reference_census();
  ASSERT_FALSE(reference.empty());
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  const std::string spec = R"({"seed": 5, "source": {"type": "idx",
      "images": ")" + kDir +
                           R"(/train-images-idx3-ubyte.gz",
      "labels": ")" + kDir +
                           R"(/train-labels-idx1-ubyte.gz",
      "split_size": 1000, "num_classes": 10},
    "ops": [{"op": "shuffle", "buffer_size": 500}], "batch": {"size": 128}})";
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

}  // namespace
}  // namespace stoker::testing
