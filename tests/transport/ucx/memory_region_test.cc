// Memory that UCX allocates, and whether a peer's remote key maps it into the
// peer's address space: the test behind SlotReach::kMapped. Two real UCX
// workers, one endpoint between them by worker address, as a sender's data
// endpoint is made.
#include "transport/ucx/memory_region.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "transport/ucx/endpoint.h"
#include "transport/ucx/worker.h"

namespace stoker::ucx {
namespace {

constexpr size_t kBytes = size_t{4} << 20;

// A receiving and a sending worker of one context, and the sender's
// endpoint to the receiver, its handshake done: both workers are progressed
// from this thread until a flush of the endpoint completes. (Progressing the
// receiver on a thread of its own while the endpoint closes meets one of UCX
// 1.13's races, docs/protocol.md section 12.)
struct Peers {
  explicit Peers(const char* tls) {
    setenv("UCX_TLS", tls, 1);
    context = Context::create().value();
    receiver = Worker::create(context).value();
    sender = Worker::create(context).value();
    ep = Endpoint::connect_to_worker(*sender, receiver->address().value(), "receiver").value();
    settle();
  }
  ~Peers() { settle(); }
  // Progresses both workers until everything sent on the endpoint is done.
  void settle() {
    ucp_request_param_t param{};
    ucs_status_ptr_t flush = ucp_ep_flush_nbx(ep->get(), &param);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (UCS_PTR_IS_PTR(flush) && ucp_request_check_status(flush) == UCS_INPROGRESS &&
           std::chrono::steady_clock::now() < deadline) {
      sender->progress();
      receiver->progress();
    }
    if (UCS_PTR_IS_PTR(flush)) {
      EXPECT_EQ(ucp_request_check_status(flush), UCS_OK);
      ucp_request_free(flush);
    } else {
      EXPECT_EQ(UCS_PTR_STATUS(flush), UCS_OK);
    }
  }
  std::unique_ptr<RemoteKey> key_of(const MemoryRegion& region) const {
    auto key = RemoteKey::unpack(ep->get(), region.pack_rkey().value());
    EXPECT_TRUE(key.is_ok()) << key.status().to_string();
    return key.is_ok() ? std::move(key).value() : nullptr;
  }
  std::shared_ptr<Context> context;
  std::unique_ptr<Worker> receiver;
  std::unique_ptr<Worker> sender;
  std::unique_ptr<Endpoint> ep;
};

uint64_t address_of(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// A context alone, for what needs no peer.
std::shared_ptr<Context> context_with(const char* tls) {
  setenv("UCX_TLS", tls, 1);
  auto context = Context::create();
  EXPECT_TRUE(context.is_ok()) << context.status().to_string();
  return context.is_ok() ? std::move(context).value() : nullptr;
}

TEST(MemoryRegion, UcxAllocatedMemoryIsMappedByAPeerOnThisHost) {
  Peers peers("sm,tcp");
  auto region = MemoryRegion::allocate(peers.context, kBytes);
  ASSERT_TRUE(region.is_ok()) << region.status().to_string();
  ASSERT_NE((*region)->data(), nullptr);
  EXPECT_EQ((*region)->size(), kBytes);
  EXPECT_TRUE((*region)->contains((*region)->data(), kBytes));
  std::memset((*region)->data(), 0x5a, kBytes);  // writable, all of it

  auto key = peers.key_of(**region);
  ASSERT_TRUE(key);
  EXPECT_TRUE(key->maps_locally(address_of((*region)->data())));
  EXPECT_TRUE(key->maps_locally(address_of((*region)->data() + kBytes - 1)));
}

TEST(MemoryRegion, UcxAllocatedMemoryIsResident) {
  auto context = context_with("sm,tcp");
  ASSERT_TRUE(context);
  auto region = MemoryRegion::allocate(context, kBytes);
  ASSERT_TRUE(region.is_ok()) << region.status().to_string();
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident(kBytes / page);
  ASSERT_EQ(mincore((*region)->data(), kBytes, resident.data()), 0) << std::strerror(errno);
  size_t in_core = 0;
  for (unsigned char r : resident) in_core += r & 1;
  EXPECT_EQ(in_core, resident.size());
}

TEST(MemoryRegion, RegisteredPrivateMemoryIsNotMapped) {
  Peers peers("sm,tcp");
  void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  {
    auto region = MemoryRegion::map(peers.context, p, kBytes, MemoryKind::kHost);
    ASSERT_TRUE(region.is_ok()) << region.status().to_string();
    auto key = peers.key_of(**region);
    ASSERT_TRUE(key);
    EXPECT_FALSE(key->maps_locally(address_of(p)));
  }
  munmap(p, kBytes);
}

// Without a shared-memory transport UCX allocates from its other allocators
// (UCX_ALLOC_PRIO), and the memory still serves: senders then reach it only
// through UCX's transfers (receivers use their own host pool in that case).
TEST(MemoryRegion, WithoutSharedMemoryUcxStillAllocates) {
  auto context = context_with("tcp");
  ASSERT_TRUE(context);
  auto region = MemoryRegion::allocate(context, kBytes);
  ASSERT_TRUE(region.is_ok()) << region.status().to_string();
  std::memset((*region)->data(), 0x5a, kBytes);
  EXPECT_FALSE((*region)->pack_rkey().value().empty());
}

TEST(MemoryRegion, AllocatingNothingIsRefused) {
  auto context = context_with("tcp");
  ASSERT_TRUE(context);
  auto region = MemoryRegion::allocate(context, 0);
  ASSERT_FALSE(region.is_ok());
  EXPECT_EQ(region.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stoker::ucx
