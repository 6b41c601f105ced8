// DLPack export: every field of the versioned and legacy tensors, the dtype
// and device mappings, and the keep-alive dropped exactly once by the
// deleter, whoever runs it.
#include "stoker/dlpack.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace stoker {
namespace {

// Counts its destructions: stands for the object that returns a landing slot.
struct SlotReturn {
  explicit SlotReturn(std::atomic<int>* returned) : returned_(returned) {}
  ~SlotReturn() { returned_->fetch_add(1); }
  std::atomic<int>* returned_;
};

TensorView view_of(void* data, DType dtype, std::vector<int64_t> shape,
                   MemoryKind memory = MemoryKind::kHost, int device = -1) {
  auto v = TensorView::contiguous(data, dtype, shape, memory, device);
  EXPECT_TRUE(v.is_ok()) << v.status().to_string();
  return *v;
}

TEST(DLPack, VersionedTensorDescribesTheViewAndItsDeleterDropsTheKeepAliveOnce) {
  std::vector<float> data(2 * 3 * 4);
  std::atomic<int> returned{0};
  auto slot = std::make_shared<SlotReturn>(&returned);
  auto exported = to_dlpack(view_of(data.data(), DType::kFloat32, {2, 3, 4}), slot);
  ASSERT_TRUE(exported.is_ok()) << exported.status().to_string();
  slot.reset();  // the tensor holds the only reference now
  EXPECT_EQ(returned.load(), 0);

  DLManagedTensorVersioned* t = exported->get();
  EXPECT_EQ(t->version.major, 1u);
  EXPECT_EQ(t->version.minor, 0u);
  EXPECT_EQ(t->flags, 0u);
  EXPECT_EQ(t->dl_tensor.data, data.data());
  EXPECT_EQ(t->dl_tensor.byte_offset, 0u);
  EXPECT_EQ(t->dl_tensor.device.device_type, kDLCPU);
  EXPECT_EQ(t->dl_tensor.device.device_id, 0);
  EXPECT_EQ(t->dl_tensor.ndim, 3);
  EXPECT_EQ(t->dl_tensor.dtype.code, kDLFloat);
  EXPECT_EQ(t->dl_tensor.dtype.bits, 32);
  EXPECT_EQ(t->dl_tensor.dtype.lanes, 1);
  EXPECT_EQ(std::vector<int64_t>(t->dl_tensor.shape, t->dl_tensor.shape + 3),
            (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(std::vector<int64_t>(t->dl_tensor.strides, t->dl_tensor.strides + 3),
            (std::vector<int64_t>{12, 4, 1}));
  ASSERT_NE(t->deleter, nullptr);

  // Handed on (as to a capsule), then deleted by the consumer, on another thread.
  DLManagedTensorVersioned* raw = exported->release();
  std::thread consumer([raw] { raw->deleter(raw); });
  consumer.join();
  EXPECT_EQ(returned.load(), 1);
}

TEST(DLPack, TheSlotReturnsWhenTheLastTensorOfTheBatchIsDeleted) {
  std::vector<uint8_t> payload(64);
  std::atomic<int> returned{0};
  auto slot = std::make_shared<SlotReturn>(&returned);
  auto a = to_dlpack(view_of(payload.data(), DType::kUInt8, {32}), slot);
  auto b = to_legacy_dlpack(view_of(payload.data() + 32, DType::kUInt8, {4, 8}), slot);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  slot.reset();
  a->reset();  // unique_ptr runs the deleter
  EXPECT_EQ(returned.load(), 0);
  b->reset();
  EXPECT_EQ(returned.load(), 1);
}

TEST(DLPack, LegacyTensorHasTheSameLayout) {
  std::vector<int64_t> data(5);
  std::atomic<int> returned{0};
  auto exported = to_legacy_dlpack(view_of(data.data(), DType::kInt64, {5}),
                                   std::make_shared<SlotReturn>(&returned));
  ASSERT_TRUE(exported.is_ok());
  const DLTensor& t = (*exported)->dl_tensor;
  EXPECT_EQ(t.data, data.data());
  EXPECT_EQ(t.ndim, 1);
  EXPECT_EQ(t.shape[0], 5);
  EXPECT_EQ(t.strides[0], 1);
  EXPECT_EQ(t.dtype.code, kDLInt);
  EXPECT_EQ(t.dtype.bits, 64);
  EXPECT_EQ((*exported)->manager_ctx != nullptr, true);
  DLManagedTensor* raw = exported->release();
  raw->deleter(raw);
  EXPECT_EQ(returned.load(), 1);
}

TEST(DLPack, ReadOnlyFlagAndScalarTensors) {
  float value = 3.0f;
  auto exported = to_dlpack(view_of(&value, DType::kFloat32, {}), nullptr, /*read_only=*/true);
  ASSERT_TRUE(exported.is_ok());
  EXPECT_EQ((*exported)->flags, DLPACK_FLAG_BITMASK_READ_ONLY);
  EXPECT_EQ((*exported)->dl_tensor.ndim, 0);
}

TEST(DLPack, EveryDtypeMaps) {
  struct Case {
    DType dtype;
    uint8_t code, bits;
  };
  const Case cases[] = {
      {DType::kUInt8, kDLUInt, 8},        {DType::kInt8, kDLInt, 8},
      {DType::kUInt16, kDLUInt, 16},      {DType::kInt16, kDLInt, 16},
      {DType::kUInt32, kDLUInt, 32},      {DType::kInt32, kDLInt, 32},
      {DType::kUInt64, kDLUInt, 64},      {DType::kInt64, kDLInt, 64},
      {DType::kFloat16, kDLFloat, 16},    {DType::kBFloat16, kDLBfloat, 16},
      {DType::kFloat32, kDLFloat, 32},    {DType::kFloat64, kDLFloat, 64},
      {DType::kBool, kDLPackBoolCode, 8},
  };
  for (const Case& c : cases) {
    const DLDataType t = dlpack_dtype(c.dtype);
    EXPECT_EQ(t.code, c.code) << dtype_name(c.dtype);
    EXPECT_EQ(t.bits, c.bits) << dtype_name(c.dtype);
    EXPECT_EQ(t.lanes, 1) << dtype_name(c.dtype);
  }
  EXPECT_EQ(kDLPackBoolCode, kDLBool);
  // Legacy consumers do not know kDLBool: the same bytes as uint8.
  EXPECT_EQ(dlpack_dtype(DType::kBool, /*legacy=*/true).code, kDLUInt);
  EXPECT_EQ(dlpack_dtype(DType::kBool, /*legacy=*/true).bits, 8);
  bool flags[3] = {true, false, true};
  auto legacy = to_legacy_dlpack(view_of(flags, DType::kBool, {3}), nullptr);
  ASSERT_TRUE(legacy.is_ok());
  EXPECT_EQ((*legacy)->dl_tensor.dtype.code, kDLUInt);
}

TEST(DLPack, DeviceTypesFollowTheMemoryKind) {
  alignas(16) static std::byte fake[64];  // never dereferenced
  EXPECT_EQ(dlpack_device(view_of(fake, DType::kUInt8, {64})).device_type, kDLCPU);
  const DLDevice pinned = dlpack_device(view_of(fake, DType::kUInt8, {64}, MemoryKind::kPinned));
  EXPECT_EQ(pinned.device_type, kDLCUDAHost);
  EXPECT_EQ(pinned.device_id, 0);
  auto exported =
      to_dlpack(view_of(fake, DType::kFloat32, {4, 4}, MemoryKind::kDevice, 3), nullptr);
  ASSERT_TRUE(exported.is_ok());
  EXPECT_EQ((*exported)->dl_tensor.device.device_type, kDLCUDA);
  EXPECT_EQ((*exported)->dl_tensor.device.device_id, 3);
}

TEST(DLPack, AnEmptyViewIsRefused) {
  auto exported = to_dlpack(TensorView(), nullptr);
  EXPECT_EQ(exported.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stoker
