// The control plane end to end with real processes: a coordinator, workers
// and readers over loopback, DYNAMIC sharding of a numbered dataset. Every
// element must arrive exactly once per epoch, across readers that share a job.
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "pipeline/range_payload.h"
#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

// Reads every epoch of `reader`, recording each element's epoch; checks payloads.
struct Seen {
  std::mutex mu;
  std::map<uint64_t, std::map<int64_t, int>> count;  // epoch -> element -> times
  uint64_t batches = 0;
  uint64_t bad_payloads = 0;
};

Status read_all(Reader& reader, Seen& seen, uint64_t element_bytes) {
  while (true) {
    auto next = reader.next(30s);
    if (!next.is_ok()) {
      return next.status().code() == StatusCode::kOutOfRange ? Status::ok() : next.status();
    }
    if (!next->has_value()) continue;  // end of an epoch
    const Batch& batch = **next;
    const auto indices = indices_of(batch);
    bool payload_ok = true;
    if (element_bytes > 0) {
      auto payload = batch.tensor("payload");
      if (!payload.is_ok()) return payload.status();
      const auto* bytes = payload->data_as<const uint8_t>();
      for (size_t e = 0; e < indices.size(); ++e) {
        for (uint64_t j = 0; j < element_bytes; ++j) {
          if (bytes[e * element_bytes + j] !=
              pipeline::range_payload_byte(static_cast<uint64_t>(indices[e]), j)) {
            payload_ok = false;
          }
        }
      }
    }
    std::lock_guard lock(seen.mu);
    ++seen.batches;
    if (!payload_ok) ++seen.bad_payloads;
    for (int64_t i : indices) ++seen.count[batch.epoch()][i];
  }
}

TEST(DynamicSharding, ThreeWorkersTwoReadersEveryElementExactlyOnce) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(/*threads=*/2);
  constexpr uint64_t kElements = 20'000;
  constexpr uint64_t kBytes = 64;
  constexpr uint32_t kEpochs = 2;
  const std::string spec = range_spec(kElements, 500, 64, kBytes, /*seed=*/7);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  ReaderOptions options{.job_name = "shared", .pipeline_spec = spec, .epochs = kEpochs};
  auto a = client->open_reader(options);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  // The second reader lands with two progress threads, which share the
  // three workers between them.
  ReaderOptions two_threads = options;
  two_threads.receiver_threads = 2;
  auto b = client->open_reader(two_threads);
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ((*a)->job_id(), (*b)->job_id());

  Seen seen;
  Status sa, sb;
  std::thread ta([&] { sa = read_all(**a, seen, kBytes); });
  std::thread tb([&] { sb = read_all(**b, seen, kBytes); });
  ta.join();
  tb.join();
  ASSERT_TRUE(sa.is_ok()) << sa.to_string() << cluster.logs();
  ASSERT_TRUE(sb.is_ok()) << sb.to_string() << cluster.logs();
  EXPECT_EQ(seen.bad_payloads, 0u);
  for (uint64_t e = 0; e < kEpochs; ++e) {
    ASSERT_EQ(seen.count[e].size(), kElements) << "epoch " << e << "\n" << cluster.logs();
    for (const auto& [element, times] : seen.count[e]) {
      ASSERT_EQ(times, 1) << "element " << element << " of epoch " << e;
      ASSERT_GE(element, 0);
      ASSERT_LT(element, static_cast<int64_t>(kElements));
    }
  }
  // Both readers got a share.
  EXPECT_GT((*a)->stats().batches, 0u);
  EXPECT_GT((*b)->stats().batches, 0u);
  EXPECT_EQ((*a)->stats().epochs_completed, kEpochs);
}

// A worker whose queue fills with batches of the next epoch while one of its
// threads still has to hear that the current epoch has no splits left: that
// thread must still ask, or the next epoch's batches wait for it forever
// (Task::run_pipeline_thread). Found on a 16-core machine, where 4 runs in
// 100 of the test above hung; many small splits on 8 threads and few credits
// keep the queue full, but on 2 cores this rarely meets the window.
TEST(DynamicSharding, AFullQueueOfTheNextEpochDoesNotStopTheCurrentOne) {
  Cluster cluster;
  cluster.start_coordinator();
  cluster.start_worker(/*threads=*/8);
  constexpr uint64_t kElements = 2'000;
  constexpr uint32_t kEpochs = 4;
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  auto reader = client->open_reader(
      {.pipeline_spec = range_spec(kElements, 20, 2), .epochs = kEpochs, .credits_per_worker = 2});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  Seen seen;
  const Status st = read_all(**reader, seen, 0);
  ASSERT_TRUE(st.is_ok()) << st.to_string() << cluster.logs();
  for (uint64_t e = 0; e < kEpochs; ++e) {
    ASSERT_EQ(seen.count[e].size(), kElements) << "epoch " << e;
  }
}

// A worker whose send arena fills with batches of the next epoch while one
// of its threads is still producing the current one: that thread must still
// get memory, or the next epoch's batches (held back until this worker has
// delivered the current one) wait for it forever while nothing frees any
// (Task::Sink). A budget of three ~256 KiB batches and splits of sixteen:
// when one thread moves on to the next epoch, another is likely in the
// middle of the current one's last split. Before the fix, 9 runs in 10 with
// two threads hung in their first or second epoch.
void read_epochs_on_a_small_budget(uint32_t threads) {
  Cluster cluster;
  cluster.start_coordinator();
  constexpr uint64_t kBytes = 256 << 10;  // one element a batch
  cluster.start_worker(threads, {"--memory-budget", "1M"});
  constexpr uint64_t kElements = 128;
  constexpr uint32_t kEpochs = 4;
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  auto reader = client->open_reader(
      {.pipeline_spec = range_spec(kElements, /*split_size=*/16, /*batch=*/1, kBytes),
       .epochs = kEpochs});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  std::map<uint64_t, std::set<int64_t>> seen;  // epoch -> elements
  uint64_t epochs_ended = 0;
  // Each epoch takes well under a second; a hang would last for good.
  const Status st = read_to_end(
      **reader,
      [&](const Batch& batch) {
        for (int64_t i : indices_of(batch)) {
          EXPECT_TRUE(seen[batch.epoch()].insert(i).second) << "element " << i << " twice";
        }
      },
      [&](uint64_t) { ++epochs_ended; }, 20s);
  ASSERT_TRUE(st.is_ok()) << "after " << epochs_ended << " epochs and " << seen[epochs_ended].size()
                          << " elements of the next: " << st.to_string() << "\n"
                          << cluster.logs();
  EXPECT_EQ(epochs_ended, kEpochs);
  for (uint64_t e = 0; e < kEpochs; ++e) {
    EXPECT_EQ(seen[e].size(), kElements) << "epoch " << e;
  }
}

TEST(DynamicSharding, AnArenaFullOfTheNextEpochDoesNotStopTheCurrentOne) {
  read_epochs_on_a_small_budget(/*threads=*/2);
}

// The budget holds fewer batches than there are threads: batches of the next
// epoch get no memory until this worker has delivered the current one.
TEST(DynamicSharding, ABudgetOfFewerBatchesThanThreadsFinishesEveryEpoch) {
  read_epochs_on_a_small_budget(/*threads=*/4);
}

}  // namespace
}  // namespace stoker::testing
