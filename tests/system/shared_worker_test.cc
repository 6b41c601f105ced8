// Jobs that share a worker: one whose reader stops reading must not take
// the worker's whole memory budget from the others (SendArena tenants).
#include <gtest/gtest.h>

#include <set>

#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

TEST(SharedWorker, AJobWhoseReaderPausesLeavesMemoryForTheOthers) {
  Cluster cluster;
  cluster.start_coordinator();
  // A budget of 16 batches of 256 KiB. The paused job alone would keep 16
  // finished batches queued (--max-queued-batches' default) plus the one its
  // thread is making: more than the whole budget.
  constexpr uint64_t kBytes = 256 << 10;  // one element a batch
  cluster.start_worker(/*threads=*/1, {"--memory-budget", "4M"});
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  auto paused = client->open_reader(
      {.job_name = "paused", .pipeline_spec = range_spec(1024, 16, 1, kBytes), .epochs = 1});
  ASSERT_TRUE(paused.is_ok()) << paused.status().to_string();
  constexpr uint64_t kElements = 256;
  auto busy = client->open_reader(
      {.job_name = "busy", .pipeline_spec = range_spec(kElements, 16, 1, kBytes, 1), .epochs = 1});
  ASSERT_TRUE(busy.is_ok()) << busy.status().to_string();
  // Both jobs run; then one reader stops reading, and keeps heartbeating:
  // its job stays, its slots stay full, and the worker's batches for it
  // pile up, as many as the job may hold.
  ASSERT_TRUE((*paused)->next(10s).is_ok()) << cluster.logs();
  std::set<int64_t> seen;
  const Status st = read_to_end(
      **busy,
      [&](const Batch& batch) {
        for (int64_t i : indices_of(batch)) EXPECT_TRUE(seen.insert(i).second) << i << " twice";
      },
      nullptr, 10s);
  ASSERT_TRUE(st.is_ok()) << "after " << seen.size() << " elements: " << st.to_string() << "\n"
                          << cluster.logs();
  EXPECT_EQ(seen.size(), kElements);
  // The paused job goes on where it stopped once its reader reads again.
  auto resumed = (*paused)->next(10s);
  ASSERT_TRUE(resumed.is_ok()) << resumed.status().to_string() << cluster.logs();
}

}  // namespace
}  // namespace stoker::testing
