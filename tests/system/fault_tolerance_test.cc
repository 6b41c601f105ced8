// Failures with real processes: a worker killed with SIGKILL mid-epoch (at
// most once by default, at least once with redelivery), the coordinator
// killed and restarted mid-epoch (exactly once), and a reader closed,
// killed or frozen mid-epoch while another goes on, and a worker or a
// reader frozen past its liveness timeout and thawed.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kElements = 12'000;
constexpr uint64_t kSplitSize = 200;
constexpr uint32_t kBatch = 20;

struct Outcome {
  Status status;
  std::map<int64_t, int> seen;   // element -> times
  std::set<uint64_t> producers;  // workers that delivered
  ReaderStats stats;
  bool during_ran = false;
};

// Reads one epoch, sleeping `pace` per batch so the epoch takes a while and
// a failure can land in the middle of it. `during` runs once, after
// `after_batches` batches and once `producers` workers have each delivered
// one: a worker killed before it streamed anything would lose nothing.
Outcome read_epoch(Reader& reader, std::chrono::microseconds pace, uint64_t after_batches,
                   const std::function<void()>& during, size_t producers = 0) {
  Outcome out;
  uint64_t batches = 0;
  std::set<uint64_t>& delivered_by = out.producers;
  while (true) {
    auto next = reader.next(10s);
    if (!next.is_ok()) {
      if (next.status().code() != StatusCode::kOutOfRange) out.status = next.status();
      break;
    }
    if (!next->has_value()) continue;
    for (int64_t i : indices_of(**next)) ++out.seen[i];
    delivered_by.insert((*next)->producer());
    if (++batches >= after_batches && delivered_by.size() >= producers && !out.during_ran &&
        during) {
      out.during_ran = true;
      during();
    }
    std::this_thread::sleep_for(pace);
  }
  out.stats = reader.stats();
  return out;
}

std::unique_ptr<Reader> open(Cluster& cluster, bool redeliver, std::string name = "job",
                             std::string spec = range_spec(kElements, kSplitSize, kBatch)) {
  auto client = cluster.client();
  if (!client) return nullptr;
  auto reader = client->open_reader({.job_name = std::move(name),
                                     .pipeline_spec = std::move(spec),
                                     .redeliver = redeliver,
                                     .epochs = 1});
  EXPECT_TRUE(reader.is_ok()) << reader.status().to_string();
  return reader.is_ok() ? std::move(reader).value() : nullptr;
}

// A reader of job "shared" in its own process (stoker-read), slow (2 ms a
// batch), writing every element it hands out to a file.
class ReaderProcess {
 public:
  ReaderProcess(Cluster& cluster, const std::string& spec, const std::string& name)
      : indices_((cluster.dir() / (name + ".indices")).string()) {
    const auto spec_file = (cluster.dir() / (name + ".json")).string();
    std::ofstream(spec_file) << spec;
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{binary("STOKER_READ"), "--coordinator",
                                 cluster.coordinator_address(), "--spec", spec_file, "--job",
                                 "shared", "--pace-ms", "2", "--record-indices", indices_},
        (cluster.dir() / (name + ".log")).string());
    EXPECT_EQ(process_->spawn_error(), 0);
  }
  ChildProcess& process() { return *process_; }
  // The elements it has handed out, and how often.
  std::map<int64_t, int> recorded() const {
    std::ifstream in(indices_);
    std::map<int64_t, int> seen;
    int64_t i;
    while (in >> i) ++seen[i];
    return seen;
  }
  // Waits (10 s at most) until it has handed out `elements`; false if not.
  bool wait_for(size_t elements) const {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (recorded().size() < elements) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

 private:
  std::string indices_;
  std::unique_ptr<ChildProcess> process_;
};

TEST(FaultTolerance, AWorkerKilledMidEpochLosesAtMostItsSplits) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto reader = open(cluster, /*redeliver=*/false);
  ASSERT_NE(reader, nullptr);
  Outcome out = read_epoch(
      *reader, 1ms, 100, [&] { cluster.worker(1).kill_now(SIGKILL); }, /*producers=*/3);
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  ASSERT_TRUE(out.during_ran) << "no kill: not every worker delivered a batch" << cluster.logs();
  std::set<int64_t> splits_missing;
  for (int64_t e = 0; e < static_cast<int64_t>(kElements); ++e) {
    auto it = out.seen.find(e);
    if (it == out.seen.end()) {
      splits_missing.insert(e / static_cast<int64_t>(kSplitSize));
    } else {
      ASSERT_EQ(it->second, 1) << "element " << e << " arrived twice under at-most-once";
    }
  }
  // What is missing lies in the splits the coordinator counted as lost.
  EXPECT_LE(splits_missing.size(), out.stats.splits_lost) << cluster.logs();
  EXPECT_GT(out.seen.size(), kElements / 2);
  // The coordinator may declare the worker dead, and so end the epoch,
  // before this reader's receiver has seen the connection fail.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (reader->stats().workers_lost == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(reader->stats().workers_lost, 1u) << cluster.logs();
}

TEST(FaultTolerance, AWorkerKilledMidEpochWithRedeliveryLosesNothing) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto reader = open(cluster, /*redeliver=*/true);
  ASSERT_NE(reader, nullptr);
  Outcome out = read_epoch(
      *reader, 1ms, 100, [&] { cluster.worker(1).kill_now(SIGKILL); }, /*producers=*/3);
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  ASSERT_TRUE(out.during_ran) << "no kill: not every worker delivered a batch" << cluster.logs();
  ASSERT_EQ(out.seen.size(), kElements) << "at least once: every element" << cluster.logs();
  uint64_t duplicates = 0;
  for (const auto& [element, times] : out.seen) duplicates += static_cast<uint64_t>(times - 1);
  // Duplicates come only from the dead worker's partly delivered splits.
  EXPECT_LE(duplicates, 3 * kSplitSize);
  EXPECT_EQ(out.stats.splits_lost, 0u);
}

TEST(FaultTolerance, AWorkerKilledAtTheEndOfAnEpochWithRedeliveryLosesNothing) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto client = cluster.client();
  ASSERT_NE(client, nullptr);
  constexpr uint64_t kEpochs = 2;
  auto reader = client->open_reader({.job_name = "job",
                                     .pipeline_spec = range_spec(kElements, kSplitSize, kBatch),
                                     .redeliver = true,
                                     .epochs = kEpochs});
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  // Killed with a few splits of epoch 0 left: the others move on to epoch 1
  // and fill this reader's slots with its batches, which it keeps until
  // epoch 0 ends, while the dead worker's split of epoch 0 comes back.
  constexpr uint64_t kKillAfter = kElements / kBatch - 30;
  std::map<uint64_t, std::map<int64_t, int>> seen;  // epoch -> element -> times
  uint64_t batches = 0;
  std::set<uint64_t> producers;
  bool killed = false;
  const Status st = read_to_end(
      **reader,
      [&](const Batch& batch) {
        for (int64_t i : indices_of(batch)) ++seen[batch.epoch()][i];
        producers.insert(batch.producer());
        if (++batches >= kKillAfter && producers.size() == 3 && !killed) {
          killed = true;
          cluster.worker(1).kill_now(SIGKILL);
        }
        std::this_thread::sleep_for(2ms);
      },
      nullptr, 20s);
  ASSERT_TRUE(st.is_ok()) << st.to_string() << " after " << seen[0].size()
                          << " elements of epoch 0 and " << seen[1].size() << " of epoch 1\n"
                          << cluster.logs();
  ASSERT_TRUE(killed) << cluster.logs();
  for (uint64_t e = 0; e < kEpochs; ++e) {
    EXPECT_EQ(seen[e].size(), kElements) << "epoch " << e << ": at least once, every element";
  }
}

TEST(FaultTolerance, AWorkerFrozenPastItsTimeoutRejoinsAsANewWorker) {
  Cluster cluster;  // heartbeats every 100 ms, dead after 1 s of silence
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1);
  auto reader = open(cluster, /*redeliver=*/true);
  ASSERT_NE(reader, nullptr);
  // Paced to last about 6 s, so the worker thaws with most of the epoch
  // still to produce.
  Outcome out = read_epoch(
      *reader, 10ms, 50,
      [&] {
        cluster.worker(1).kill_now(SIGSTOP);
        std::this_thread::sleep_for(1500ms);
        cluster.worker(1).kill_now(SIGCONT);
      },
      /*producers=*/2);
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  ASSERT_TRUE(out.during_ran) << "no freeze: not every worker delivered a batch" << cluster.logs();
  ASSERT_EQ(out.seen.size(), kElements) << "at least once: every element" << cluster.logs();
  EXPECT_EQ(out.stats.splits_lost, 0u);
  // The thawed worker learns that its old registration is void, drops the
  // splits it held (the coordinator gave them to others) and registers as
  // a new worker, which produces again.
  const std::string log = cluster.coordinator().log();
  EXPECT_NE(log.find("(w1) is dead"), std::string::npos) << cluster.logs();
  std::vector<uint64_t> ids;  // w1's registrations, in order
  // Lines "coordinator: worker <id> (w1) registered from ...". (No
  // std::regex: GCC 12 warns inside it under the sanitizers.)
  const std::string registered = " (w1) registered";
  for (size_t at = log.find(registered); at != std::string::npos;
       at = log.find(registered, at + 1)) {
    const size_t id = log.rfind(' ', at - 1) + 1;
    ids.push_back(std::stoull(log.substr(id, at - id)));
  }
  ASSERT_EQ(ids.size(), 2u) << cluster.logs();
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(out.producers.count(ids[1]), 0u) << "the new worker never produced\n" << cluster.logs();
}

TEST(FaultTolerance, TheCoordinatorKilledAndRestartedMidEpochLosesNothing) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 3; ++i) cluster.start_worker(1);
  auto reader = open(cluster, /*redeliver=*/false);
  ASSERT_NE(reader, nullptr);
  Outcome out = read_epoch(*reader, 1ms, 100, [&] {
    cluster.kill_coordinator();
    std::this_thread::sleep_for(300ms);
    cluster.start_coordinator();
  });
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  ASSERT_EQ(out.seen.size(), kElements) << cluster.logs();
  for (const auto& [element, times] : out.seen) {
    ASSERT_EQ(times, 1) << "element " << element << "\n" << cluster.logs();
  }
  EXPECT_EQ(out.stats.splits_lost, 0u);
}

TEST(FaultTolerance, AReaderThatLeavesMidEpochLeavesTheJobToTheOthers) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1);
  auto staying = open(cluster, false, "shared");
  auto leaving = open(cluster, false, "shared");
  ASSERT_NE(staying, nullptr);
  ASSERT_NE(leaving, nullptr);
  std::map<int64_t, int> left_with;
  std::thread leaver([&] {
    for (int b = 0; b < 30; ++b) {
      auto next = leaving->next(30s);
      if (!next.is_ok() || !next->has_value()) break;
      for (int64_t i : indices_of(**next)) ++left_with[i];
    }
    EXPECT_TRUE(leaving->close().is_ok());
  });
  Outcome out = read_epoch(*staying, 500us, 0, nullptr);
  leaver.join();
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  // Together they saw every element once, except what was still in the
  // leaving reader's slots when it closed (at most its credits' worth).
  for (const auto& [element, times] : left_with) {
    EXPECT_FALSE(out.seen.contains(element)) << "element " << element << " went to both";
  }
  const uint64_t together = out.seen.size() + left_with.size();
  EXPECT_LE(together, kElements);
  EXPECT_GE(together, kElements - 32 * kBatch) << cluster.logs();
}

TEST(FaultTolerance, AReaderKilledMidEpochLeavesTheRestOfTheEpochToTheOthers) {
  Cluster cluster;
  cluster.start_coordinator();
  for (int i = 0; i < 2; ++i) cluster.start_worker(1);
  // A reader in its own process, slow, recording what it hands out...
  ReaderProcess doomed(cluster, range_spec(kElements, kSplitSize, kBatch), "doomed-reader");
  // ...and one here that reads the same job.
  auto survivor = open(cluster, false, "shared");
  ASSERT_NE(survivor, nullptr);
  Outcome out = read_epoch(*survivor, 500us, 60, [&] {
    // Kill it once it has handed out a few batches.
    doomed.wait_for(5 * kBatch);
    doomed.process().kill_now(SIGKILL);
  });
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  const auto dead = doomed.recorded();
  EXPECT_GE(dead.size(), 5 * kBatch);
  for (const auto& [element, times] : dead) {
    EXPECT_EQ(times, 1);
    EXPECT_FALSE(out.seen.contains(element)) << "element " << element << " went to both readers";
  }
  for (const auto& [element, times] : out.seen) ASSERT_EQ(times, 1) << "element " << element;
  // Lost: at most what sat in the dead reader's 32 landing slots.
  const uint64_t together = out.seen.size() + dead.size();
  EXPECT_LE(together, kElements);
  EXPECT_GE(together, kElements - 32 * kBatch) << cluster.logs();
}

TEST(FaultTolerance, AFrozenReaderDoesNotStopItsWorkersHeartbeats) {
  Cluster cluster;  // heartbeats every 100 ms, dead after 1 s of silence
  cluster.start_coordinator();
  cluster.start_worker(1);
  // Batches of 80 KiB go by rendezvous: some are in flight to the reader
  // when it freezes, and never complete, so closing its link takes seconds.
  // Splits of 300 batches: the worker asks for a split only every few
  // seconds, and its heartbeats alone must keep it alive meanwhile.
  const std::string spec = range_spec(kElements, kElements / 2, kBatch, 4096);
  ReaderProcess frozen(cluster, spec, "frozen-reader");
  auto survivor = open(cluster, false, "shared", spec);
  ASSERT_NE(survivor, nullptr);
  // Paced to last about 6 s: the freeze, the drop and the link's close all
  // fall inside the epoch.
  Outcome out = read_epoch(*survivor, 10ms, 20, [&] {
    // Freeze it once it reads: the coordinator drops it after a second of
    // silence, and the worker closes its link to a peer that answers
    // nothing, while it must go on heartbeating and serving the other.
    ASSERT_TRUE(frozen.wait_for(1)) << "the reader to freeze never read\n" << cluster.logs();
    frozen.process().kill_now(SIGSTOP);
  });
  ASSERT_TRUE(out.status.is_ok()) << out.status.to_string() << cluster.logs();
  const std::string log = cluster.coordinator().log();
  EXPECT_NE(log.find("no heartbeat"), std::string::npos) << "the frozen reader was never dropped";
  EXPECT_EQ(log.find("is dead"), std::string::npos) << cluster.logs();
  frozen.process().kill_now(SIGKILL);
}

TEST(FaultTolerance, AReaderFrozenPastItsTimeoutFailsPreciselyWhenItThaws) {
  Cluster cluster;  // heartbeats every 100 ms, dead after 1 s of silence
  cluster.start_coordinator();
  cluster.start_worker(1);
  ReaderProcess frozen(cluster, range_spec(kElements, kSplitSize, kBatch), "frozen-reader");
  ASSERT_TRUE(frozen.wait_for(1)) << "the reader never read\n" << cluster.logs();
  frozen.process().kill_now(SIGSTOP);
  // Thawed once the coordinator has dropped it: its batches have gone
  // elsewhere or are lost, so it must not go on as if nothing happened.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (cluster.coordinator().log().find("no heartbeat") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  frozen.process().kill_now(SIGCONT);
  ASSERT_NE(cluster.coordinator().log().find("left job"), std::string::npos) << cluster.logs();
  const auto exit_code = frozen.process().wait(10s);
  ASSERT_TRUE(exit_code.has_value()) << "the thawed reader hangs\n" << frozen.process().log();
  EXPECT_EQ(*exit_code, 1) << frozen.process().log();
  EXPECT_NE(frozen.process().log().find("was declared dead"), std::string::npos)
      << frozen.process().log();
}

}  // namespace
}  // namespace stoker::testing
