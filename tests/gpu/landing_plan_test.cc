// Where batches land, for every requested kind, with and without CUDA in the
// build and in UCX; and the precise errors when memory cannot be had.
#include "stoker/landing.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "stoker/batch_receiver.h"

namespace stoker {
namespace {

const TransportInfo kUcxWithoutCuda{.ucx_version = "UCX 1.13.1", .cuda_memory = false};
const TransportInfo kUcxWithCuda{.ucx_version = "UCX 1.18.0", .cuda_memory = true};

TEST(LandingPlan, HostIsAlwaysHost) {
  for (const auto& ucx : {kUcxWithoutCuda, kUcxWithCuda}) {
    auto plan = plan_landing(MemoryKind::kHost, ucx);
    ASSERT_TRUE(plan.is_ok());
    EXPECT_EQ(plan->land_in, MemoryKind::kHost);
    EXPECT_FALSE(plan->copy_to_device);
    EXPECT_TRUE(plan->note.empty());
  }
}

TEST(LandingPlan, DeviceFallsBackToPinnedWhenUcxLacksCuda) {
  auto plan = plan_landing(MemoryKind::kDevice, kUcxWithoutCuda);
  if (!build_has_cuda()) {
    ASSERT_FALSE(plan.is_ok());
    EXPECT_EQ(plan.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(plan.status().message().find("STOKER_CUDA"), std::string::npos);
    return;
  }
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->land_in, MemoryKind::kPinned);
  EXPECT_TRUE(plan->copy_to_device);
  EXPECT_NE(plan->note.find("UCX 1.13.1 was built without CUDA"), std::string::npos);
}

TEST(LandingPlan, DeviceLandsDirectlyWhenUcxHasCuda) {
  auto plan = plan_landing(MemoryKind::kDevice, kUcxWithCuda);
  if (!build_has_cuda()) {
    EXPECT_EQ(plan.status().code(), StatusCode::kUnsupported);
    return;
  }
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->land_in, MemoryKind::kDevice);
  EXPECT_FALSE(plan->copy_to_device);
}

TEST(LandingPlan, PinnedNeedsACudaBuild) {
  auto plan = plan_landing(MemoryKind::kPinned, kUcxWithoutCuda);
  EXPECT_EQ(plan.is_ok(), build_has_cuda());
}

TEST(MemoryResources, HostAllocatesPageAlignedMemory) {
  auto host = make_memory_resource(MemoryKind::kHost);
  ASSERT_TRUE(host.is_ok());
  auto buffer = (*host)->allocate(10000);
  ASSERT_TRUE(buffer.is_ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer->data()) % 4096, 0u);
  EXPECT_EQ(buffer->kind(), MemoryKind::kHost);
  buffer->data()[9999] = std::byte{1};  // writable to the end
  EXPECT_EQ((*host)->allocate(0).status().code(), StatusCode::kInvalidArgument);
}

// Landing memory is faulted in when it is allocated, so that no batch pays
// for zeroing a fresh page in the middle of a stream.
TEST(MemoryResources, HostMemoryIsResidentWhenAllocated) {
  auto host = make_memory_resource(MemoryKind::kHost);
  ASSERT_TRUE(host.is_ok());
  constexpr size_t kBytes = 8 << 20;
  auto buffer = (*host)->allocate(kBytes);
  ASSERT_TRUE(buffer.is_ok());
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident(kBytes / page);
  ASSERT_EQ(mincore(buffer->data(), kBytes, resident.data()), 0) << std::strerror(errno);
  EXPECT_EQ(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }),
            static_cast<std::ptrdiff_t>(resident.size()));
}

TEST(MemoryResources, CudaKindsFailPreciselyWithoutAGpu) {
  for (auto kind : {MemoryKind::kPinned, MemoryKind::kDevice}) {
    auto resource = make_memory_resource(kind);
    if (!build_has_cuda()) {
      ASSERT_FALSE(resource.is_ok());
      EXPECT_EQ(resource.status().code(), StatusCode::kUnsupported);
      EXPECT_NE(resource.status().message().find("this build of stoker has none"),
                std::string::npos);
      continue;
    }
    // A CUDA build: works on a GPU machine, fails with CUDA's own words elsewhere.
    if (!resource.is_ok()) {
      EXPECT_NE(resource.status().message().find("CUDA"), std::string::npos)
          << resource.status().to_string();
      continue;
    }
    auto buffer = (*resource)->allocate(1 << 20);
    ASSERT_TRUE(buffer.is_ok()) << buffer.status().to_string();
    EXPECT_EQ(buffer->kind(), kind);
  }
  EXPECT_EQ(make_memory_resource(MemoryKind::kDevice, -1).status().code(),
            StatusCode::kInvalidArgument);
}

// A resource that claims device memory but hands out host memory: what a
// receiver sees when asked to land in GPU memory through a UCX without CUDA.
class FakeDeviceResource final : public MemoryResource {
 public:
  MemoryKind kind() const override { return MemoryKind::kDevice; }
  Result<Buffer> allocate(size_t bytes) override { return host_memory_resource()->allocate(bytes); }
};

TEST(ReceiverLanding, RefusesDeviceMemoryWhenUcxCannotReachIt) {
  auto ucx = query_transport();
  ASSERT_TRUE(ucx.is_ok());
  if (ucx->cuda_memory) GTEST_SKIP() << ucx->ucx_version << " has CUDA support";
  auto receiver = BatchReceiver::start(
      {.listen_address = "127.0.0.1:0", .landing_memory = std::make_shared<FakeDeviceResource>()});
  ASSERT_FALSE(receiver.is_ok());
  EXPECT_EQ(receiver.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(receiver.status().message().find("without CUDA support"), std::string::npos)
      << receiver.status().to_string();
}

}  // namespace
}  // namespace stoker
