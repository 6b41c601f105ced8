// Peers that die mid-stream, as real processes killed with SIGKILL: the
// survivor reports the failure, gets its slots back and keeps going; nothing
// hangs. The peers are stoker-perf processes.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "tests/support/byte_batch.h"
#include "tests/support/child_process.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::byte_batch;
using testing::ChildProcess;
using testing::stoker_perf_path;

class PeerFailure : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { setenv("UCX_TLS", GetParam(), 1); }
  std::string log_path(const std::string& name) const {
    return ::testing::TempDir() + "/" + name + "-" + std::to_string(getpid()) + ".log";
  }
  void kill_a_sender_mid_stream(uint32_t progress_threads);
};

// A victim streaming "forever" and a survivor sending a known number into one
// receiver with `progress_threads`; the victim is killed mid-stream.
void PeerFailure::kill_a_sender_mid_stream(uint32_t progress_threads) {
  std::mutex mu;
  std::vector<PeerEvent> events;
  auto started = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                       .slot_bytes = 256 << 10,
                                       .slot_count = 16,
                                       .credits_per_sender = 8,
                                       .progress_threads = progress_threads,
                                       .on_peer_event = [&](const PeerEvent& e) {
                                         std::lock_guard lock(mu);
                                         events.push_back(e);
                                       }});
  ASSERT_TRUE(started.is_ok()) << started.status().to_string();
  auto& receiver = **started;
  const std::string connect = "127.0.0.1:" + std::to_string(receiver.port());

  // The victim streams "forever"; the survivor sends a known number.
  ChildProcess victim({stoker_perf_path(), "client", "--connect", connect, "--size", "256K",
                       "--iterations", "100000000", "--warmup", "0", "--name", "victim"},
                      log_path("victim"));
  constexpr int kSurvivorBatches = 400;
  ChildProcess survivor(
      {stoker_perf_path(), "client", "--connect", connect, "--size", "64K", "--iterations",
       std::to_string(kSurvivorBatches), "--warmup", "0", "--name", "survivor"},
      log_path("survivor"));
  ASSERT_EQ(victim.spawn_error(), 0)
      << stoker_perf_path() << ": " << strerror(victim.spawn_error());
  ASSERT_EQ(survivor.spawn_error(), 0);

  std::map<uint32_t, int> landed;  // per sender id
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto batch = receiver.next(100ms);
    if (batch.is_ok()) {
      ++landed[batch->sender_id()];
      // Hold nothing: release at once, so only in-flight slots are at stake.
    }
    if (!killed) {
      for (auto& [id, n] : landed) {
        if (n >= 50 && batch.is_ok() && batch->payload().size() == (256u << 10)) {
          victim.kill_now(SIGKILL);
          killed = true;
          break;
        }
      }
    }
    const ReceiverStats stats = receiver.stats();
    if (killed && stats.senders_failed == 1 && stats.senders_finished == 1) break;
  }
  ASSERT_TRUE(killed) << "the victim never streamed:\n" << victim.log();
  ASSERT_EQ(survivor.wait(30s), 0) << survivor.log();

  const ReceiverStats stats = receiver.stats();
  EXPECT_EQ(stats.senders_failed, 1u);
  EXPECT_EQ(stats.senders_finished, 1u);
  // Every landed batch of the survivor was taken: its count is exact.
  int survivor_batches = 0;
  {
    std::lock_guard lock(mu);
    int connected = 0, failed = 0;
    for (const auto& e : events) {
      if (e.kind == PeerEvent::Kind::kConnected) ++connected;
      if (e.kind == PeerEvent::Kind::kFailed) {
        ++failed;
        EXPECT_NE(e.peer.find("victim"), std::string::npos) << e.peer;
        EXPECT_EQ(e.status.code(), StatusCode::kUnavailable) << e.status.to_string();
      }
    }
    EXPECT_EQ(connected, 2);
    EXPECT_EQ(failed, 1);
  }
  while (true) {  // drain what landed before the survivor's goodbye
    auto batch = receiver.next(0ms);
    if (!batch.is_ok()) break;
    ++landed[batch->sender_id()];
  }
  for (auto& [id, n] : landed) {
    if (n == kSurvivorBatches) ++survivor_batches;
  }
  EXPECT_EQ(survivor_batches, 1) << "the survivor's batches did not all land";
  // The victim's slots (granted, or mid-transfer when it died) all came back.
  const auto slots_deadline = std::chrono::steady_clock::now() + 5s;
  while (receiver.stats().slots_free != 16u && std::chrono::steady_clock::now() < slots_deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(receiver.stats().slots_free, 16u);
}

TEST_P(PeerFailure, SenderKilledMidStreamIsReportedAndOthersCarryOn) {
  kill_a_sender_mid_stream(1);
}

// The two senders land on different progress threads: one thread's peer
// failure leaves the other's sender untouched, and the slots of both return.
TEST_P(PeerFailure, SenderKilledOnOneProgressThreadLeavesTheOtherServing) {
  kill_a_sender_mid_stream(2);
}

class ReceiverFailure : public PeerFailure {};

TEST_P(ReceiverFailure, ReceiverKilledMidStreamFailsTheSenderWithoutHanging) {
  const std::string port_file = log_path("port");
  std::remove(port_file.c_str());
  ChildProcess server({stoker_perf_path(), "server", "--listen", "127.0.0.1:0", "--port-file",
                       port_file, "--slot-bytes", "1M", "--slots", "8", "--credits", "8"},
                      log_path("server"));
  ASSERT_EQ(server.spawn_error(), 0)
      << stoker_perf_path() << ": " << strerror(server.spawn_error());
  const std::string port = testing::wait_for_port_file(port_file);
  ASSERT_FALSE(port.empty()) << server.log();

  auto sender = BatchSender::connect({.receiver_address = "127.0.0.1:" + port, .name = "test"});
  ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
  std::vector<std::byte> payload(1 << 20);
  std::atomic<int> failed_completions{0};
  Status failure;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 1'000'000 && std::chrono::steady_clock::now() - t0 < 30s; ++i) {
    if (i == 100) server.kill_now(SIGKILL);
    BatchDescriptor d = byte_batch(payload.size(), static_cast<uint64_t>(i));
    d.round = 1;
    failure = (*sender)->post(
        d, payload,
        [&](const Status& s) {
          if (!s.is_ok()) ++failed_completions;
        },
        10s);
    if (!failure.is_ok()) break;
    if (Status st = (*sender)->flush(10s); !st.is_ok()) {
      failure = st;
      break;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(failure.is_ok()) << "sending went on after the receiver died";
  EXPECT_EQ(failure.code(), StatusCode::kUnavailable) << failure.to_string();
  EXPECT_NE(failure.message().find("127.0.0.1:" + port), std::string::npos) << failure.to_string();
  EXPECT_LT(elapsed, 20s);
  EXPECT_FALSE((*sender)->health().is_ok());
  // Closing a sender whose receiver is gone is prompt too.
  const auto c0 = std::chrono::steady_clock::now();
  (void)(*sender)->close(5s);
  EXPECT_LT(std::chrono::steady_clock::now() - c0, 4s);
}

// A sender killed while it writes into UCX 1.13's shared-memory FIFO blocks
// it for the receiver's other shared-memory senders (docs/protocol.md,
// Limitations). Into the receiver's default pool, mapped by senders on its
// host, nothing a sender sends passes through that FIFO: the sender-death
// test runs over shared memory too (with the notices in the FIFO it stalled
// the survivor in 4 of 60 runs; since, in none of 190, nor of 50 under
// AddressSanitizer). Receiver death is tested on both.
INSTANTIATE_TEST_SUITE_P(Transports, PeerFailure, ::testing::Values("tcp", "sm,tcp"),
                         [](const auto& param_info) {
                           return std::string(param_info.param[0] == 't' ? "tcp" : "shm");
                         });

INSTANTIATE_TEST_SUITE_P(Transports, ReceiverFailure, ::testing::Values("tcp", "sm,tcp"),
                         [](const auto& param_info) {
                           return std::string(param_info.param[0] == 't' ? "tcp" : "shm");
                         });

}  // namespace
}  // namespace stoker
