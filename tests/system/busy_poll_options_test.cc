// The daemons' --busy-poll-us against a real cluster: a worker's setting
// reaches the senders of its consumer links, and a negative one is refused
// on the command line of stoker-worker and stoker-read.
#include <gtest/gtest.h>

#include <time.h>

#include <fstream>
#include <thread>

#include "tests/system/cluster.h"

namespace stoker::testing {
namespace {

using namespace std::chrono_literals;

// The CPU time process `pid` has used so far (its CPU-time clock).
std::chrono::nanoseconds cpu_time_of(pid_t pid) {
  clockid_t clock;
  timespec t{};
  if (clock_getcpuclockid(pid, &clock) != 0 || clock_gettime(clock, &t) != 0) return {};
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

// Reads `batches` batches of a job from the cluster's one worker, holding
// each for `pause` (a slow trainer): each credit the reader returns wakes
// the worker's consumer link once. Returns the CPU time the worker spent.
std::chrono::milliseconds worker_cpu_while_reading(Cluster& cluster, int batches,
                                                   std::chrono::milliseconds pause) {
  auto client = cluster.client();
  if (client == nullptr) return {};
  auto reader =
      client->open_reader({.pipeline_spec = range_spec(static_cast<uint64_t>(batches) * 4, 8, 4),
                           .credits_per_worker = 1});
  EXPECT_TRUE(reader.is_ok()) << reader.status().to_string() << cluster.logs();
  if (!reader.is_ok()) return {};
  const auto before = cpu_time_of(cluster.worker(0).pid());
  for (int read = 0; read < batches;) {
    auto next = (*reader)->next(30s);
    EXPECT_TRUE(next.is_ok()) << next.status().to_string() << cluster.logs();
    if (!next.is_ok()) return {};
    if (!next->has_value()) continue;
    std::this_thread::sleep_for(pause);
    ++read;
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      cpu_time_of(cluster.worker(0).pid()) - before);
}

// With one credit, the worker's link waits for each batch's credit; after
// the batch goes it polls for busy_poll (20 ms here) before it sleeps, so
// a 30 ms pause per batch costs it about 20 ms of CPU each. With the
// default 50 us it sleeps almost at once.
TEST(BusyPollOptions, AWorkersBusyPollReachesItsConsumerLinks) {
  constexpr int kBatches = 40;
  std::chrono::milliseconds spent[2];
  for (const bool polling : {false, true}) {
    Cluster cluster;
    cluster.start_coordinator();
    cluster.start_worker(1, polling ? std::vector<std::string>{"--busy-poll-us", "20000"}
                                    : std::vector<std::string>{});
    ASSERT_TRUE(cluster.wait_for_registrations(1)) << cluster.logs();
    spent[polling] = worker_cpu_while_reading(cluster, kBatches, 30ms);
    ASSERT_FALSE(::testing::Test::HasFailure());
  }
  // 40 x 20 ms is 800 ms; a loaded 2-core machine runs the poller for less.
  EXPECT_GE(spent[true], 300ms) << "a worker at --busy-poll-us 20000 (default: "
                                << spent[false].count() << " ms of CPU)";
  EXPECT_LT(spent[false], spent[true] / 2)
      << "the default busy poll (polling: " << spent[true].count() << " ms of CPU)";
}

TEST(BusyPollOptions, ANegativeBusyPollIsRefusedOnTheCommandLine) {
  Cluster cluster;
  cluster.start_coordinator();
  const std::string spec_file = (cluster.dir() / "spec.json").string();
  std::ofstream(spec_file) << range_spec(10, 10, 5);
  const std::vector<std::vector<std::string>> commands = {
      {binary("STOKER_WORKER"), "--coordinator", cluster.coordinator_address(),
       "--busy-poll-us=-1"},
      {binary("STOKER_READ"), "--coordinator", cluster.coordinator_address(), "--spec", spec_file,
       "--busy-poll-us=-1"}};
  for (const auto& argv : commands) {
    SCOPED_TRACE(argv[0]);
    const auto log = (cluster.dir() / "refused.log").string();
    ChildProcess process(argv, log);
    ASSERT_EQ(process.spawn_error(), 0);
    const auto status = process.wait(10s);
    ASSERT_TRUE(status.has_value()) << "still running";
    EXPECT_NE(*status, 0);
    EXPECT_NE(process.log().find("--busy-poll-us"), std::string::npos) << process.log();
    EXPECT_NE(process.log().find("not in range 0 to 10000000"), std::string::npos) << process.log();
  }
}

}  // namespace
}  // namespace stoker::testing
