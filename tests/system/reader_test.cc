// The trainer's side against a real cluster: collation of landed batches,
// tensors by name, DLPack exports that keep a batch's memory alive after the
// batch is released, and the precise errors of misuse.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "gpu/stream.h"
#include "pipeline/range_payload.h"
#include "stoker/dlpack.h"
#include "stoker/landing.h"
#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

class ReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.start_coordinator();
    cluster_.start_worker(1);
    client_ = cluster_.client();
    ASSERT_NE(client_, nullptr);
  }
  Batch next_batch(Reader& reader) {
    while (true) {
      auto next = reader.next(30s);
      EXPECT_TRUE(next.is_ok()) << next.status().to_string() << cluster_.logs();
      if (!next.is_ok()) return {};
      if (next->has_value()) return std::move(**next);
    }
  }
  Cluster cluster_;
  std::shared_ptr<Client> client_;
};

// A tensor's elements, copied to the host (from any memory kind).
template <typename T>
std::vector<T> host_copy(const Batch& batch, std::string_view name) {
  auto t = batch.tensor(name);
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  if (!t.is_ok()) return {};
  std::vector<T> out(static_cast<size_t>(t->element_count()));
  const Status copied = batch.copy_to_host(name, std::as_writable_bytes(std::span(out)));
  EXPECT_TRUE(copied.is_ok()) << copied.to_string();
  return out;
}

// Collates the range pipeline's uint8 'payload' into float32 'features' in [0, 1].
void collate_payload_to_float(ReaderOptions& options) {
  options.collation.dense_features = {"payload"};
  options.collation.dense.output_dtype = DType::kFloat32;
  options.collation.dense.uint8_scale = 1.0f / 255.0f;
}

// Checks a batch whose 'payload' was collated into float32 'features' in [0, 1].
void expect_dense_features(const Batch& batch, uint64_t bytes) {
  const auto indices = host_copy<int64_t>(batch, "index");
  const auto features = host_copy<float>(batch, "features");
  ASSERT_EQ(features.size(), indices.size() * bytes);
  for (size_t e = 0; e < indices.size(); ++e) {
    for (uint64_t j = 0; j < bytes; ++j) {
      const float want =
          static_cast<float>(pipeline::range_payload_byte(static_cast<uint64_t>(indices[e]), j)) /
          255.0f;
      ASSERT_NEAR(features[e * bytes + j], want, 1e-6f)
          << "element " << indices[e] << " byte " << j;
    }
  }
}

TEST_F(ReaderTest, DenseCollationConvertsPayloadsAndPassesOtherTensorsThrough) {
  constexpr uint64_t kBytes = 24;
  ReaderOptions options{.pipeline_spec = range_spec(500, 100, 10, kBytes)};
  collate_payload_to_float(options);
  auto reader = client_->open_reader(options);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  uint64_t checked = 0;
  for (int b = 0; b < 5; ++b) {
    Batch batch = next_batch(**reader);
    ASSERT_TRUE(batch.valid());
    EXPECT_EQ(batch.tensor_names(), (std::vector<std::string>{"features", "index"}));
    auto features = batch.tensor("features");
    ASSERT_TRUE(features.is_ok()) << features.status().to_string();
    ASSERT_EQ(features->dtype(), DType::kFloat32);
    const auto indices = indices_of(batch);
    ASSERT_EQ(features->dim(0), static_cast<int64_t>(indices.size()));
    ASSERT_EQ(features->dim(1), static_cast<int64_t>(kBytes));
    const float* f = features->data_as<const float>();
    for (size_t e = 0; e < indices.size(); ++e) {
      for (uint64_t j = 0; j < kBytes; ++j) {
        const float want =
            static_cast<float>(pipeline::range_payload_byte(static_cast<uint64_t>(indices[e]), j)) /
            255.0f;
        ASSERT_NEAR(f[e * kBytes + j], want, 1e-6f) << "element " << indices[e] << " byte " << j;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 5u * 10 * kBytes);
}

TEST_F(ReaderTest, ADlpackExportOutlivesItsReleasedBatch) {
  // Two slots: were the exported one returned at release(), the batches read
  // below would land in it and overwrite what the exports show.
  auto reader = client_->open_reader(
      {.pipeline_spec = range_spec(200, 100, 10, 16), .slots = 2, .credits_per_worker = 2});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Batch batch = next_batch(**reader);
  const auto indices = indices_of(batch);
  auto exported = batch.to_dlpack("index");
  ASSERT_TRUE(exported.is_ok()) << exported.status().to_string();
  auto legacy = batch.to_legacy_dlpack("payload");
  ASSERT_TRUE(legacy.is_ok()) << legacy.status().to_string();
  EXPECT_EQ((*exported)->dl_tensor.device.device_type, kDLCPU);
  EXPECT_EQ((*exported)->dl_tensor.ndim, 1);
  EXPECT_EQ((*exported)->dl_tensor.shape[0], static_cast<int64_t>(indices.size()));
  EXPECT_EQ((*legacy)->dl_tensor.shape[1], 16);
  ASSERT_TRUE(batch.release().is_ok());
  // The slot is still held by the exports: the rest of the epoch goes
  // through the other slot, and the exported data stays intact.
  uint64_t more = 0;
  while (true) {
    auto next = (*reader)->next(30s);
    ASSERT_TRUE(next.is_ok()) << next.status().to_string();
    if (!next->has_value()) break;
    ++more;
  }
  EXPECT_EQ(more, 19u);
  const auto* data = static_cast<const int64_t*>((*exported)->dl_tensor.data);
  for (size_t i = 0; i < indices.size(); ++i) EXPECT_EQ(data[i], indices[i]);
  exported->reset();
  legacy->reset();  // the last deleter returns the slot
}

TEST_F(ReaderTest, ABatchAndItsExportOutliveTheReader) {
  auto reader = client_->open_reader({.pipeline_spec = range_spec(200, 100, 10, 16)});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Batch batch = next_batch(**reader);
  const auto indices = indices_of(batch);
  auto exported = batch.to_dlpack("index");
  ASSERT_TRUE(exported.is_ok()) << exported.status().to_string();
  reader->reset();  // the Reader and its receiver stop; the landing memory stays
  EXPECT_EQ(indices_of(batch), indices);
  ASSERT_TRUE(batch.release().is_ok());
  const auto* data = static_cast<const int64_t*>((*exported)->dl_tensor.data);
  for (size_t i = 0; i < indices.size(); ++i) EXPECT_EQ(data[i], indices[i]);
  exported->reset();  // the last holder frees the slot of a receiver that is gone
}

TEST_F(ReaderTest, MisuseGetsPreciseErrors) {
  auto reader = client_->open_reader({.pipeline_spec = range_spec(100, 100, 10)});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Batch batch = next_batch(**reader);
  auto missing = batch.tensor("image");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("has 'index'"), std::string::npos)
      << missing.status().to_string();
  ASSERT_TRUE(batch.release().is_ok());
  EXPECT_EQ(batch.release().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(batch.tensor("index").status().code(), StatusCode::kFailedPrecondition);

  ReaderOptions collate_missing{.pipeline_spec = range_spec(100, 100, 10)};
  collate_missing.collation.image = ImageCollation{};
  auto bad = client_->open_reader(collate_missing);
  ASSERT_TRUE(bad.is_ok());
  auto next = (*bad)->next(30s);
  ASSERT_FALSE(next.is_ok());
  EXPECT_NE(next.status().message().find("image collation needs a tensor 'image'"),
            std::string::npos)
      << next.status().to_string();

  if (!build_has_cuda()) {
    auto device = client_->open_reader(
        {.pipeline_spec = range_spec(100, 100, 10), .memory = MemoryKind::kDevice});
    ASSERT_FALSE(device.is_ok());
    EXPECT_EQ(device.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(device.status().message().find("STOKER_CUDA"), std::string::npos)
        << device.status().to_string();
  }
}

// On a machine with a GPU (and a CUDA build): batches handed out in GPU
// memory, collated on the trainer's own stream, exported as kDLCUDA, and
// read back intact. Landing goes through pinned memory and an asynchronous
// copy unless UCX reaches GPU memory itself.
TEST_F(ReaderTest, DeviceOutputIsCollatedOnTheTrainersStream) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  auto stream = CudaStream::create(0);
  ASSERT_TRUE(stream.is_ok()) << stream.status().to_string();
  constexpr uint64_t kBytes = 40;
  ReaderOptions options{.pipeline_spec = range_spec(400, 100, 10, kBytes),
                        .memory = MemoryKind::kDevice,
                        .device = 0,
                        .stream = stream->ref()};
  collate_payload_to_float(options);
  auto reader = client_->open_reader(options);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  uint64_t batches = 0;
  while (true) {
    auto next = (*reader)->next(30s);
    ASSERT_TRUE(next.is_ok()) << next.status().to_string() << cluster_.logs();
    if (!next->has_value()) break;
    Batch& batch = **next;
    ASSERT_EQ(batch.memory(), MemoryKind::kDevice);
    ASSERT_EQ(batch.device(), 0);
    auto features = batch.tensor("features");
    ASSERT_TRUE(features.is_ok()) << features.status().to_string();
    EXPECT_EQ(features->memory(), MemoryKind::kDevice);
    auto exported = batch.to_dlpack("features");
    ASSERT_TRUE(exported.is_ok()) << exported.status().to_string();
    EXPECT_EQ((*exported)->dl_tensor.device.device_type, kDLCUDA);
    EXPECT_EQ((*exported)->dl_tensor.device.device_id, 0);
    expect_dense_features(batch, kBytes);
    ++batches;
  }
  EXPECT_EQ(batches, 40u);
}

// Pinned output: readable by the host as it is handed out, kDLCUDAHost.
TEST_F(ReaderTest, PinnedOutputIsHostReadableAndExportedAsCudaHost) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  constexpr uint64_t kBytes = 16;
  ReaderOptions options{.pipeline_spec = range_spec(200, 100, 10, kBytes),
                        .memory = MemoryKind::kPinned};
  collate_payload_to_float(options);
  auto reader = client_->open_reader(options);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Batch batch = next_batch(**reader);
  ASSERT_TRUE(batch.valid());
  EXPECT_EQ(batch.memory(), MemoryKind::kPinned);
  EXPECT_EQ(batch.device(), -1);
  auto exported = batch.to_dlpack("features");
  ASSERT_TRUE(exported.is_ok()) << exported.status().to_string();
  EXPECT_EQ((*exported)->dl_tensor.device.device_type, kDLCUDAHost);
  const auto indices = indices_of(batch);  // host pointers work for pinned memory
  ASSERT_FALSE(indices.empty());
  expect_dense_features(batch, kBytes);
}

// A GPU ordinal the machine does not have is refused when the reader opens.
TEST_F(ReaderTest, AMissingGpuIsRefusedPrecisely) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  auto reader = client_->open_reader({.pipeline_spec = range_spec(100, 100, 10),
                                      .memory = MemoryKind::kDevice,
                                      .device = cuda_device_count()});
  ASSERT_FALSE(reader.is_ok());
  EXPECT_NE(reader.status().message().find("does not exist"), std::string::npos)
      << reader.status().to_string();
}

}  // namespace
}  // namespace stoker::testing
