// TensorView construction and checks, TensorSpec sizes, and the stream and
// event wrappers (synchronous stand-ins without CUDA; real ones on a GPU).
#include "stoker/tensor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "gpu/stream.h"
#include "stoker/landing.h"

namespace stoker {
namespace {

TEST(TensorView, ContiguousViewHasRowMajorStrides) {
  std::vector<float> data(24);
  const int64_t shape[] = {2, 3, 4};
  auto v = TensorView::contiguous(data.data(), DType::kFloat32, shape);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->ndim(), 3);
  EXPECT_EQ(std::vector<int64_t>(v->strides().begin(), v->strides().end()),
            (std::vector<int64_t>{12, 4, 1}));
  EXPECT_EQ(v->element_count(), 24);
  EXPECT_EQ(v->byte_size(), 96u);
  EXPECT_TRUE(v->is_contiguous());
  EXPECT_EQ(v->device(), -1);
  EXPECT_EQ(v->to_string(), "float32[2, 3, 4] in host memory");
  EXPECT_EQ(v->spec(), (TensorSpec{DType::kFloat32, {2, 3, 4}}));
  EXPECT_EQ(v->spec().byte_size(), 96u);
}

TEST(TensorView, StridedViewsAreNotContiguousUnlessTheyAre) {
  std::vector<uint8_t> data(64);
  const int64_t shape[] = {4, 4};
  const int64_t transposed[] = {1, 4};
  auto t = TensorView::strided(data.data(), DType::kUInt8, shape, transposed);
  ASSERT_TRUE(t.is_ok());
  EXPECT_FALSE(t->is_contiguous());
  const int64_t unit_shape[] = {1, 4};
  const int64_t any_outer[] = {99, 1};  // a dimension of extent 1 is never stepped over
  auto u = TensorView::strided(data.data(), DType::kUInt8, unit_shape, any_outer);
  ASSERT_TRUE(u.is_ok());
  EXPECT_TRUE(u->is_contiguous());
}

TEST(TensorView, RowsAreViewsOfTheSameMemory) {
  std::vector<float> data(5 * 3);
  const int64_t shape[] = {5, 3};
  auto t = TensorView::contiguous(data.data(), DType::kFloat32, shape);
  ASSERT_TRUE(t.is_ok());
  auto middle = t->rows(1, 3);
  ASSERT_TRUE(middle.is_ok()) << middle.status().to_string();
  EXPECT_EQ(middle->data(), data.data() + 3);
  EXPECT_EQ(middle->spec(), (TensorSpec{DType::kFloat32, {3, 3}}));
  auto none = t->rows(5, 0);
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none->element_count(), 0);
  EXPECT_EQ(t->rows(3, 3).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(t->rows(-1, 1).status().code(), StatusCode::kOutOfRange);
  const int64_t transposed[] = {1, 5};
  auto strided = TensorView::strided(data.data(), DType::kFloat32, shape, transposed);
  ASSERT_TRUE(strided.is_ok());
  EXPECT_EQ(strided->rows(0, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(TensorView, BadShapesAreRefused) {
  std::vector<uint8_t> data(16);
  const int64_t negative[] = {2, -1};
  EXPECT_NE(TensorView::contiguous(data.data(), DType::kUInt8, negative)
                .status()
                .message()
                .find("dimension 1 is negative (-1)"),
            std::string::npos);
  const int64_t nine[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(TensorView::contiguous(data.data(), DType::kUInt8, nine).status().code(),
            StatusCode::kInvalidArgument);
  const int64_t huge[] = {std::numeric_limits<int64_t>::max() / 2, 4};
  EXPECT_NE(
      TensorView::contiguous(data.data(), DType::kUInt8, huge).status().message().find("overflows"),
      std::string::npos);
  const int64_t some[] = {4};
  EXPECT_NE(
      TensorView::contiguous(nullptr, DType::kUInt8, some).status().message().find("null data"),
      std::string::npos);
  EXPECT_NE(TensorView::contiguous(data.data(), static_cast<DType>(99), some)
                .status()
                .message()
                .find("unknown dtype code 99"),
            std::string::npos);
  EXPECT_NE(TensorView::contiguous(data.data(), DType::kUInt8, some, MemoryKind::kDevice, -1)
                .status()
                .message()
                .find("GPU ordinal"),
            std::string::npos);
  const int64_t empty[] = {0, 5};
  EXPECT_TRUE(TensorView::contiguous(nullptr, DType::kUInt8, empty).is_ok());
}

TEST(TensorView, OfDescriptorPointsIntoThePayload) {
  BatchDescriptor d;
  d.payload_bytes = 4096;
  const uint64_t image_shape[] = {2, 8, 8, 3};
  ASSERT_TRUE(d.add_tensor("image", DType::kUInt8, image_shape, 0).is_ok());
  const uint64_t label_shape[] = {2};
  ASSERT_TRUE(d.add_tensor("label", DType::kInt32, label_shape, 512).is_ok());
  std::vector<std::byte> payload(4096);
  auto label = TensorView::of_descriptor(d.tensors[1], payload.data(), MemoryKind::kPinned);
  ASSERT_TRUE(label.is_ok());
  EXPECT_EQ(label->data(), payload.data() + 512);
  EXPECT_EQ(label->to_string(), "int32[2] in pinned memory");
  auto image = TensorView::of_descriptor(d.tensors[0], payload.data(), MemoryKind::kDevice, 1);
  ASSERT_TRUE(image.is_ok());
  EXPECT_EQ(image->to_string(), "uint8[2, 8, 8, 3] in device memory of GPU 1");
}

TEST(Streams, WithoutCudaEverythingIsSynchronous) {
  if (build_has_cuda()) GTEST_SKIP() << "this build has CUDA";
  EXPECT_EQ(cuda_device_count(), 0);
  auto stream = CudaStream::create(0);
  ASSERT_TRUE(stream.is_ok());
  EXPECT_TRUE(stream->ref().is_default());
  auto start = CudaEvent::create(0, CudaEvent::Kind::kTiming);
  auto end = CudaEvent::create(0, CudaEvent::Kind::kTiming);
  ASSERT_TRUE(start.is_ok() && end.is_ok());
  ASSERT_TRUE(start->record(stream->ref()).is_ok());
  std::vector<char> a(1 << 20, 'x'), b(1 << 20);
  ASSERT_TRUE(copy_async(b.data(), a.data(), a.size(), stream->ref()).is_ok());
  EXPECT_EQ(a, b);  // done when the call returned
  ASSERT_TRUE(end->record(stream->ref()).is_ok());
  EXPECT_TRUE(*end->is_complete());
  EXPECT_TRUE(end->enqueue_wait(stream->ref()).is_ok());
  auto ms = end->elapsed_ms_since(*start);
  ASSERT_TRUE(ms.is_ok());
  EXPECT_GE(*ms, 0.0f);
  auto ordering = CudaEvent::create(0);
  ASSERT_TRUE(ordering.is_ok());
  EXPECT_EQ(ordering->elapsed_ms_since(*start).status().code(), StatusCode::kFailedPrecondition);
}

TEST(Streams, OnAGpuEventsOrderTwoStreams) {
  if (!build_has_cuda() || cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto device = make_memory_resource(MemoryKind::kDevice, 0);
  auto pinned = make_memory_resource(MemoryKind::kPinned, 0);
  ASSERT_TRUE(device.is_ok() && pinned.is_ok());
  constexpr size_t kBytes = 64 << 20;
  auto src = (*pinned)->allocate(kBytes);
  auto mid = (*device)->allocate(kBytes);
  auto dst = (*pinned)->allocate(kBytes);
  ASSERT_TRUE(src.is_ok() && mid.is_ok() && dst.is_ok());
  std::memset(src->data(), 0x5A, kBytes);
  std::memset(dst->data(), 0, kBytes);
  auto copy_stream = CudaStream::create(0);
  auto compute_stream = CudaStream::create(0);
  auto landed = CudaEvent::create(0);
  ASSERT_TRUE(copy_stream.is_ok() && compute_stream.is_ok() && landed.is_ok());
  EXPECT_EQ(*stream_device(copy_stream->ref()), 0);
  // Copy in on one stream; the other waits on the event, then copies out.
  ASSERT_TRUE(copy_async(mid->data(), src->data(), kBytes, copy_stream->ref()).is_ok());
  ASSERT_TRUE(landed->record(copy_stream->ref()).is_ok());
  ASSERT_TRUE(landed->enqueue_wait(compute_stream->ref()).is_ok());
  ASSERT_TRUE(copy_async(dst->data(), mid->data(), kBytes, compute_stream->ref()).is_ok());
  ASSERT_TRUE(synchronize_stream(compute_stream->ref()).is_ok());
  EXPECT_TRUE(*landed->is_complete());
  for (size_t i = 0; i < kBytes; i += 4093) ASSERT_EQ(dst->data()[i], std::byte{0x5A}) << i;
}

}  // namespace
}  // namespace stoker
