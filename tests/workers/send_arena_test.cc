// SendArena's tenants: a tenant that fills the arena leaves every other its
// reserve; reserves above the arena are scaled down alike; a tenant that
// leaves gives its reserve up; buffers may outlive their tenant.
#include "workers/send_arena.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace stoker::workers {
namespace {

using namespace std::chrono_literals;
constexpr size_t kMiB = size_t{1} << 20;

// acquire(), given up after 100 ms of waiting: an error when it had to wait.
Result<pipeline::SendBuffer> acquire_now(SendArena::Tenant& tenant, size_t bytes) {
  std::atomic<bool> cancel{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    cancel = true;
  });
  auto buffer = tenant.acquire(bytes, cancel);
  stopper.join();
  return buffer;
}

// Takes `bytes`-sized buffers until one has to wait; returns those taken.
std::vector<pipeline::SendBuffer> take_all(SendArena::Tenant& tenant, size_t bytes) {
  std::vector<pipeline::SendBuffer> taken;
  while (true) {
    auto buffer = acquire_now(tenant, bytes);
    if (!buffer.is_ok()) {
      EXPECT_EQ(buffer.status().code(), StatusCode::kCancelled) << buffer.status().to_string();
      return taken;
    }
    taken.push_back(std::move(buffer).value());
  }
}

TEST(SendArena, ALoneTenantTakesTheWholeArena) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto tenant = arena->join(kMiB);
  EXPECT_EQ(take_all(*tenant, kMiB).size(), 4u);
}

TEST(SendArena, ATenantThatFillsTheArenaLeavesTheOthersTheirReserve) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto greedy = arena->join(kMiB);
  auto other = arena->join(kMiB);
  auto taken = take_all(*greedy, kMiB);
  EXPECT_EQ(taken.size(), 3u);
  EXPECT_EQ(greedy->bytes_in_use(), 3 * kMiB);
  auto reserved = acquire_now(*other, kMiB);
  ASSERT_TRUE(reserved.is_ok()) << reserved.status().to_string();
  EXPECT_EQ(other->bytes_in_use(), kMiB);
  // Beyond its reserve, the other waits like anyone for memory to free.
  EXPECT_FALSE(acquire_now(*other, SendArena::kAlignment).is_ok());
  taken.pop_back();
  EXPECT_TRUE(acquire_now(*other, kMiB).is_ok());
}

TEST(SendArena, AReserveIsKeptWhileItsTenantHoldsPartOfIt) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto greedy = arena->join(kMiB);
  auto other = arena->join(2 * kMiB);
  auto half = acquire_now(*other, kMiB);
  ASSERT_TRUE(half.is_ok());
  // 4 MiB, less the other's 1 MiB held and 1 MiB still owed to it.
  EXPECT_EQ(take_all(*greedy, kMiB / 2).size(), 4u);
  EXPECT_TRUE(acquire_now(*other, kMiB).is_ok());
}

TEST(SendArena, ReservesAboveTheArenaAreScaledDownAlike) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto first = arena->join(4 * kMiB);
  auto second = arena->join(4 * kMiB);
  auto taken = take_all(*first, kMiB);
  EXPECT_EQ(taken.size(), 2u);  // each is owed half the arena
  EXPECT_EQ(take_all(*second, kMiB).size(), 2u);
}

TEST(SendArena, ATenantThatLeavesGivesUpItsReserve) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto staying = arena->join(kMiB);
  auto leaving = arena->join(kMiB);
  auto taken = take_all(*staying, kMiB);
  EXPECT_EQ(taken.size(), 3u);
  leaving.reset();
  EXPECT_TRUE(acquire_now(*staying, kMiB).is_ok());
}

TEST(SendArena, BuffersOutliveTheirTenant) {
  auto arena = SendArena::create(4 * kMiB).value();
  auto tenant = arena->join(2 * kMiB);
  auto other = arena->join(kMiB);
  auto buffer = acquire_now(*tenant, kMiB);
  ASSERT_TRUE(buffer.is_ok());
  EXPECT_FALSE(acquire_now(*other, 3 * kMiB).is_ok());  // 1 MiB is still owed to the tenant
  tenant.reset();
  // Gone, it is owed nothing, and its buffer returns as usual.
  auto rest = acquire_now(*other, 3 * kMiB);
  EXPECT_TRUE(rest.is_ok());
  buffer->reset();
  EXPECT_EQ(arena->bytes_in_use(), 3 * kMiB);
  rest->reset();
  EXPECT_EQ(arena->bytes_in_use(), 0u);
  EXPECT_EQ(other->bytes_in_use(), 0u);
}

TEST(SendArena, ABudgetBeyondWhatATokenAddressesIsRefused) {
  auto arena = SendArena::create(SendArena::kMaxBytes + 1);
  ASSERT_FALSE(arena.is_ok());
  EXPECT_EQ(arena.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(arena.status().message().find("above the most"), std::string::npos);
}

}  // namespace
}  // namespace stoker::workers
