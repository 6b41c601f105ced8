// A sender run by another user on the receiver's host, as a real process:
// UCX 1.13 cannot attach the receiver's shared memory (its segments are open
// to the receiver's user and group only), so the sender sends its batches
// over its control connection (TCP) instead, and every one lands intact.
// Needs root, to start the sender as `nobody`; skipped otherwise.
#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "perf/verify_pattern.h"
#include "stoker/batch_receiver.h"
#include "tests/support/child_process.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::stoker_perf_path;

constexpr const char* kSetpriv = "/usr/bin/setpriv";

std::string log_path(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "-" + std::to_string(getpid()) + ".log";
}

class OtherUserSender : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root, to start a sender as another user";
    if (access(kSetpriv, X_OK) != 0) GTEST_SKIP() << kSetpriv << " is missing (util-linux)";
    const passwd* nobody = getpwnam("nobody");
    if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
    as_nobody_ = {kSetpriv,
                  "--reuid",
                  std::to_string(nobody->pw_uid),
                  "--regid",
                  std::to_string(nobody->pw_gid),
                  "--clear-groups",
                  stoker_perf_path()};
    ChildProcess help(command({"--help"}), log_path("probe"));
    if (help.wait(10s) != 0) {
      GTEST_SKIP() << "'nobody' cannot run " << stoker_perf_path() << ":\n" << help.log();
    }
    // Shared memory allowed on both sides: the receiver's default pool is
    // then a shared-memory segment, and UCX would pick shared memory for the
    // sender's data endpoint.
    setenv("UCX_TLS", "sm,tcp", 1);
  }

  // stoker-perf with `args`, run as nobody.
  std::vector<std::string> command(std::initializer_list<std::string> args) const {
    std::vector<std::string> argv = as_nobody_;
    argv.insert(argv.end(), args);
    return argv;
  }

 private:
  std::vector<std::string> as_nobody_;
};

TEST_F(OtherUserSender, SendsOverItsControlConnectionAndEveryBatchLands) {
  std::mutex mu;
  std::vector<PeerEvent> events;
  auto started = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                       .slot_bytes = 256 << 10,
                                       .slot_count = 8,
                                       .credits_per_sender = 8,
                                       .on_peer_event = [&](const PeerEvent& e) {
                                         std::lock_guard lock(mu);
                                         events.push_back(e);
                                       }});
  ASSERT_TRUE(started.is_ok()) << started.status().to_string();
  auto& receiver = **started;

  constexpr int kBatches = 300;
  const std::string connect = "127.0.0.1:" + std::to_string(receiver.port());
  const auto client =
      command({"client", "--connect", connect, "--size", "256K", "--iterations",
               std::to_string(kBatches), "--warmup", "0", "--verify", "--name", "other-user"});
  ChildProcess sender(client, log_path("other-user"));
  ASSERT_EQ(sender.spawn_error(), 0) << strerror(sender.spawn_error());

  const perf::VerifyPattern pattern(256 << 10);
  int landed = 0;
  int intact = 0;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (landed < kBatches && std::chrono::steady_clock::now() < deadline) {
    auto batch = receiver.next(100ms);
    if (!batch.is_ok()) {
      if (!sender.running()) break;  // it has gone, and nothing more landed
      continue;
    }
    ++landed;
    const auto payload = batch->payload();
    if (pattern.check(payload.data(), payload.size(), batch->descriptor().sequence)) ++intact;
  }
  EXPECT_EQ(sender.wait(30s), 0) << sender.log();
  EXPECT_EQ(landed, kBatches) << sender.log();
  EXPECT_EQ(intact, landed);
  EXPECT_NE(sender.log().find("sending batches over the control connection"), std::string::npos)
      << "the sender did not say it fell back:\n"
      << sender.log();
  const auto finished_by = std::chrono::steady_clock::now() + 5s;
  while (receiver.stats().senders_finished != 1 && std::chrono::steady_clock::now() < finished_by) {
    std::this_thread::sleep_for(10ms);
  }
  const ReceiverStats stats = receiver.stats();
  EXPECT_EQ(stats.senders_finished, 1u);
  EXPECT_EQ(stats.senders_failed, 0u);
  EXPECT_EQ(stats.rejected_total(), 0u);
  std::lock_guard lock(mu);
  for (const auto& e : events) EXPECT_NE(e.kind, PeerEvent::Kind::kFailed) << e.status.to_string();
}

// Put mode needs the pool's key, which such a sender cannot unpack (UCX 1.13
// crashes trying): the sender refuses it with a precise error and exits
// cleanly, and nothing lands.
TEST_F(OtherUserSender, InPutModeIsRefusedPrecisely) {
  auto started = BatchReceiver::start(
      {.listen_address = "127.0.0.1:0", .slot_bytes = 64 << 10, .slot_count = 8});
  ASSERT_TRUE(started.is_ok()) << started.status().to_string();
  auto& receiver = **started;
  const std::string connect = "127.0.0.1:" + std::to_string(receiver.port());
  ChildProcess sender(command({"client", "--connect", connect, "--size", "64K", "--iterations",
                               "10", "--warmup", "0", "--mode", "put", "--name", "other-put"}),
                      log_path("other-put"));
  ASSERT_EQ(sender.spawn_error(), 0) << strerror(sender.spawn_error());
  EXPECT_EQ(sender.wait(30s), 1) << "not a clean refusal:\n" << sender.log();
  EXPECT_NE(sender.log().find("put mode to the receiver at " + connect +
                              " needs its shared memory, which this process may not attach"),
            std::string::npos)
      << sender.log();
  EXPECT_EQ(receiver.stats().batches_landed, 0u);
}

}  // namespace
}  // namespace stoker
