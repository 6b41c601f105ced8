// NCCL fan-out: a batch (an image tensor and a label tensor inside one flat
// device payload) broadcast from rank 0 to a group of 1 and, where the
// machine has several GPUs, to a group of all of them driven by this thread.
// Every rank's tensors are copied back and compared with what rank 0 sent.
#include "gpu/nccl_fanout.h"

#include <gtest/gtest.h>
#include <nccl.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "gpu/stream.h"

namespace stoker {
namespace {

constexpr size_t kImageBytes = 2 * 8 * 8 * 3;
constexpr size_t kLabelOffset = 384;  // just past the image
constexpr size_t kPayloadBytes = 512;

class NcclFanoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine";
  }
};

// Rank 0's payload on `device`: bytes i -> i * 7 + 1, labels 41 and 42.
Buffer make_payload(int device) {
  auto memory = make_memory_resource(MemoryKind::kDevice, device);
  EXPECT_TRUE(memory.is_ok()) << memory.status().to_string();
  auto buffer = (*memory)->allocate(kPayloadBytes);
  EXPECT_TRUE(buffer.is_ok());
  std::vector<std::byte> host(kPayloadBytes);
  for (size_t i = 0; i < kImageBytes; ++i) host[i] = static_cast<std::byte>(i * 7 + 1);
  const int32_t labels[] = {41, 42};
  std::memcpy(host.data() + kLabelOffset, labels, sizeof labels);
  EXPECT_TRUE(copy_async(buffer->data(), host.data(), kPayloadBytes, {}).is_ok());
  EXPECT_TRUE(synchronize_stream({}).is_ok());
  return std::move(*buffer);
}

std::vector<NamedTensor> tensors_of(const Buffer& payload, int device) {
  const int64_t image_shape[] = {2, 8, 8, 3};
  const int64_t label_shape[] = {2};
  auto image = TensorView::contiguous(payload.data(), DType::kUInt8, image_shape,
                                      MemoryKind::kDevice, device);
  auto label = TensorView::contiguous(payload.data() + kLabelOffset, DType::kInt32, label_shape,
                                      MemoryKind::kDevice, device);
  EXPECT_TRUE(image.is_ok() && label.is_ok());
  return {{"image", *image}, {"label", *label}};
}

void expect_received(const FanoutBatch& batch, StreamRef stream, int rank) {
  SCOPED_TRACE("rank " + std::to_string(rank));
  ASSERT_TRUE(synchronize_stream(stream).is_ok());
  ASSERT_EQ(batch.tensors.size(), 2u);
  EXPECT_EQ(batch.name(0), "image");
  EXPECT_EQ(batch.name(1), "label");
  EXPECT_EQ(batch.tensors[0].to_string().substr(0, 17), "uint8[2, 8, 8, 3]");
  std::vector<std::byte> image(kImageBytes);
  ASSERT_TRUE(copy_async(image.data(), batch.tensors[0].data(), kImageBytes, stream).is_ok());
  int32_t labels[2] = {};
  ASSERT_TRUE(copy_async(labels, batch.tensors[1].data(), sizeof labels, stream).is_ok());
  ASSERT_TRUE(synchronize_stream(stream).is_ok());
  for (size_t i = 0; i < kImageBytes; ++i) {
    ASSERT_EQ(image[i], static_cast<std::byte>(i * 7 + 1)) << "byte " << i;
  }
  EXPECT_EQ(labels[0], 41);
  EXPECT_EQ(labels[1], 42);
}

TEST_F(NcclFanoutTest, GroupOfOne) {
  const int devices[] = {0};
  auto group = NcclCommunicator::create_local_group(devices);
  ASSERT_TRUE(group.is_ok()) << group.status().to_string();
  ASSERT_EQ(group->size(), 1u);
  EXPECT_EQ((*group)[0].rank(), 0);
  EXPECT_EQ((*group)[0].size(), 1);
  auto fanout = BatchFanout::create((*group)[0]);
  ASSERT_TRUE(fanout.is_ok()) << fanout.status().to_string();
  auto stream = CudaStream::create(0);
  ASSERT_TRUE(stream.is_ok());
  const Buffer payload = make_payload(0);
  const auto tensors = tensors_of(payload, 0);
  const FanoutSource source{payload.data(), kPayloadBytes, tensors};
  for (int round = 0; round < 3; ++round) {  // the header buffers are reused
    auto batch = fanout->broadcast(&source, stream->ref());
    ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
    EXPECT_EQ(batch->tensors[0].data(), payload.data());  // rank 0 keeps its own payload
    expect_received(*batch, stream->ref(), 0);
  }
  // A receiver's call on rank 0 is a usage error, said precisely.
  const Status st = fanout->enqueue_header(nullptr, stream->ref());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("rank 0 passes the batch"), std::string::npos) << st.to_string();
}

TEST_F(NcclFanoutTest, TensorsOutsideThePayloadAreRefused) {
  const int devices[] = {0};
  auto group = NcclCommunicator::create_local_group(devices);
  ASSERT_TRUE(group.is_ok()) << group.status().to_string();
  auto fanout = BatchFanout::create((*group)[0]);
  ASSERT_TRUE(fanout.is_ok());
  const Buffer payload = make_payload(0);
  const auto tensors = tensors_of(payload, 0);
  const FanoutSource short_source{payload.data(), kLabelOffset, tensors};
  const Status st = fanout->enqueue_header(&short_source, {});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'label' lies outside the 384-byte payload"), std::string::npos)
      << st.to_string();
}

TEST_F(NcclFanoutTest, EveryGpuOfTheMachine) {
  const int count = cuda_device_count();
  if (count < 2) GTEST_SKIP() << "needs 2 or more GPUs, this machine has " << count;
  std::vector<int> devices(static_cast<size_t>(count));
  std::iota(devices.begin(), devices.end(), 0);
  auto group = NcclCommunicator::create_local_group(devices);
  ASSERT_TRUE(group.is_ok()) << group.status().to_string();
  std::vector<BatchFanout> fanouts;
  std::vector<CudaStream> streams;
  for (int r = 0; r < count; ++r) {
    auto fanout = BatchFanout::create((*group)[static_cast<size_t>(r)]);
    auto stream = CudaStream::create(r);
    ASSERT_TRUE(fanout.is_ok() && stream.is_ok());
    fanouts.push_back(std::move(*fanout));
    streams.push_back(std::move(*stream));
  }
  const Buffer payload = make_payload(0);
  const auto tensors = tensors_of(payload, 0);
  const FanoutSource source{payload.data(), kPayloadBytes, tensors};
  // One thread drives every rank: each phase is one NCCL group.
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int r = 0; r < count; ++r) {
    const Status st = fanouts[static_cast<size_t>(r)].enqueue_header(
        r == 0 ? &source : nullptr, streams[static_cast<size_t>(r)].ref());
    EXPECT_TRUE(st.is_ok()) << st.to_string();
  }
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  std::vector<FanoutBatch> batches;
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  for (int r = 0; r < count; ++r) {
    auto batch =
        fanouts[static_cast<size_t>(r)].enqueue_payload(streams[static_cast<size_t>(r)].ref());
    ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
    batches.push_back(std::move(*batch));
  }
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  for (int r = 0; r < count; ++r) {
    EXPECT_EQ(batches[static_cast<size_t>(r)].tensors[0].device(), r);
    expect_received(batches[static_cast<size_t>(r)], streams[static_cast<size_t>(r)].ref(), r);
  }
}

}  // namespace
}  // namespace stoker
