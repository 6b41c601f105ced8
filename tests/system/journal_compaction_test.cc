// The coordinator's journal and memory stay bounded over many epochs:
// iterations every reader is past are retired, and the journal is compacted
// into a snapshot once it grows past its threshold. A coordinator killed
// after compacting, with the temporary file of a compaction left behind,
// restarts and loses nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kElements = 2'000;
constexpr uint64_t kSplitSize = 20;  // 100 splits an epoch
constexpr uint32_t kBatch = 20;
constexpr uint64_t kThreshold = 32 << 10;

std::filesystem::path journal_of(const Cluster& cluster) {
  return cluster.dir() / "coordinator" / "journal.log";
}

// The iterations the coordinator holds for each job, from stoker-ctl --json.
std::vector<size_t> iterations_held(const Cluster& cluster) {
  const std::vector<std::string> argv{binary("STOKER_CTL"), "--coordinator",
                                      cluster.coordinator_address(), "--json"};
  ChildProcess ctl(argv, (cluster.dir() / "ctl.out").string());
  EXPECT_EQ(ctl.wait(10s), 0) << ctl.log();
  const auto json = nlohmann::json::parse(ctl.log(), nullptr, false);
  std::vector<size_t> held;
  if (json.is_discarded()) return held;
  for (const auto& job : json["jobs"]) held.push_back(job["iterations"].size());
  return held;
}

void count_elements(const Batch& batch, std::map<int64_t, int>& seen) {
  for (int64_t i : indices_of(batch)) ++seen[i];
}

// Every element of the epoch that ended came exactly once; starts the next.
void expect_each_once(std::map<int64_t, int>& seen, uint64_t epoch, const Cluster& cluster) {
  EXPECT_EQ(seen.size(), kElements) << "epoch " << epoch << cluster.logs();
  for (const auto& [element, times] : seen) {
    EXPECT_EQ(times, 1) << "element " << element << " in epoch " << epoch;
  }
  seen.clear();
}

TEST(JournalCompaction, ManyEpochsKeepTheJournalAndTheIterationsBounded) {
  Cluster cluster({.journal_compaction_bytes = kThreshold});
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  constexpr uint64_t kEpochs = 30;
  auto reader = client->open_reader({.job_name = "bounded",
                                     .pipeline_spec = range_spec(kElements, kSplitSize, kBatch),
                                     .epochs = kEpochs});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  std::vector<uint64_t> sizes;  // the journal's size after each epoch
  std::map<int64_t, int> seen;
  const Status st = read_to_end(
      **reader, [&](const Batch& batch) { count_elements(batch, seen); },
      [&](uint64_t epoch) {
        expect_each_once(seen, epoch, cluster);
        sizes.push_back(std::filesystem::file_size(journal_of(cluster)));
      },
      10s);
  ASSERT_TRUE(st.is_ok()) << st.to_string() << cluster.logs();
  ASSERT_EQ(sizes.size(), kEpochs);
  std::cout << "journal sizes after each epoch (bytes):";
  for (uint64_t s : sizes) std::cout << " " << s;
  std::cout << "\n";
  // Uncompacted, at the ~4.8 KB an epoch the journal grows between two
  // compactions (the sizes printed above), 30 epochs would take ~140 KB.
  // Compacted, the journal stays under its threshold plus what is appended
  // between two checks (one tick, well under an epoch's worth).
  EXPECT_LT(*std::max_element(sizes.begin(), sizes.end()), 2 * kThreshold);
  EXPECT_NE(cluster.coordinator().log().find("compacted the journal"), std::string::npos)
      << cluster.logs();
  // The reader is past every epoch: only the newest iteration stays.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::vector<size_t> held;
  while (std::chrono::steady_clock::now() < deadline) {
    held = iterations_held(cluster);
    if (held.size() == 1 && held[0] <= 2) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(held.size(), 1u) << cluster.logs();
  EXPECT_LE(held[0], 2u) << cluster.logs();
}

TEST(JournalCompaction, ACoordinatorKilledAfterCompactingRestartsAndLosesNothing) {
  Cluster cluster({.journal_compaction_bytes = 16 << 10});
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  constexpr uint64_t kEpochs = 8;
  auto reader = client->open_reader({.job_name = "restarted",
                                     .pipeline_spec = range_spec(kElements, kSplitSize, kBatch),
                                     .epochs = kEpochs});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  std::map<int64_t, int> seen;
  uint64_t epochs = 0, batches = 0;
  bool restarted = false;
  const Status st = read_to_end(
      **reader,
      [&](const Batch& batch) {
        count_elements(batch, seen);
        // Mid-epoch, once the journal has been compacted: killed, and the
        // temporary file of a compaction that never got renamed left behind.
        if (++batches == 30 && !restarted &&
            cluster.coordinator().log().find("compacted the journal") != std::string::npos) {
          restarted = true;
          cluster.kill_coordinator();
          std::ofstream(journal_of(cluster).string() + ".tmp") << "a snapshot cut short";
          std::this_thread::sleep_for(300ms);
          cluster.start_coordinator();
        }
        std::this_thread::sleep_for(1ms);
      },
      [&](uint64_t epoch) {
        expect_each_once(seen, epoch, cluster);
        ++epochs;
        batches = 0;
      },
      10s);
  ASSERT_TRUE(st.is_ok()) << st.to_string() << cluster.logs();
  EXPECT_EQ(epochs, kEpochs);
  ASSERT_TRUE(restarted) << "the journal was never compacted\n" << cluster.logs();
  EXPECT_FALSE(std::filesystem::exists(journal_of(cluster).string() + ".tmp"));
  EXPECT_EQ((*reader)->stats().splits_lost, 0u);
}

}  // namespace
}  // namespace stoker::testing
