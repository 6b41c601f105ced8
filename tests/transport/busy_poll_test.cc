// ReceiverOptions::busy_poll and SenderOptions::busy_poll over real TCP
// endpoints: each side polls for that long after its last event, then
// sleeps; a negative value is refused. The CPU time a thread or the process
// spends is the evidence: a poll burns it, a sleep does not.
#include <gtest/gtest.h>

#include <time.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "tests/support/byte_batch.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::byte_batch;

std::chrono::nanoseconds cpu_time(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// CPU time `clock` accrues while `body` runs.
template <typename Body>
std::chrono::milliseconds cpu_during(clockid_t clock, Body body) {
  const auto before = cpu_time(clock);
  body();
  return std::chrono::duration_cast<std::chrono::milliseconds>(cpu_time(clock) - before);
}

class BusyPoll : public ::testing::Test {
 protected:
  void SetUp() override { setenv("UCX_TLS", "tcp", 1); }
};

TEST_F(BusyPoll, ANegativeDurationIsRefused) {
  auto receiver = BatchReceiver::start({.busy_poll = -1us});
  EXPECT_EQ(receiver.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(receiver.status().message().find("busy_poll of -1 us"), std::string::npos)
      << receiver.status().to_string();
  auto sender = BatchSender::connect({.receiver_address = "127.0.0.1:1", .busy_poll = -5us});
  EXPECT_EQ(sender.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(sender.status().message().find("busy_poll of -5 us"), std::string::npos)
      << sender.status().to_string();
}

TEST_F(BusyPoll, TheReceiverPollsThatLongAfterItsLastEventThenSleeps) {
  auto receiver = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                        .slot_bytes = 4096,
                                        .slot_count = 8,
                                        .credits_per_sender = 4,
                                        .busy_poll = 600ms});
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  auto& rx = **receiver;
  {
    auto sender = BatchSender::connect({.receiver_address = rx.address()});
    ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
    std::vector<std::byte> payload(1024, std::byte{7});
    for (uint64_t i = 0; i < 3; ++i) {
      ASSERT_TRUE((*sender)->post(byte_batch(payload.size(), i), payload, nullptr, 5s).is_ok());
      ASSERT_TRUE((*sender)->flush(5s).is_ok());
    }
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(rx.next(5s).is_ok());
    ASSERT_TRUE((*sender)->close(5s).is_ok());
  }
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (rx.stats().senders_finished == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(rx.stats().senders_finished, 1u);
  // Within 600 ms of its last event the progress thread polls: it takes CPU
  // time while this thread sleeps. Generous bounds: under a loaded CI host it
  // gets only part of a core.
  const auto polling =
      cpu_during(CLOCK_PROCESS_CPUTIME_ID, [] { std::this_thread::sleep_for(300ms); });
  EXPECT_GE(polling, 60ms) << "the receiver did not poll after its last event";
  std::this_thread::sleep_for(500ms);
  // Long after it, the thread sleeps on the worker's wakeup fd.
  const auto idle =
      cpu_during(CLOCK_PROCESS_CPUTIME_ID, [] { std::this_thread::sleep_for(500ms); });
  EXPECT_LT(idle, 150ms) << "the receiver kept polling while idle";
}

TEST_F(BusyPoll, ASenderWaitingForACreditPollsThatLongThenSleeps) {
  auto receiver = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                        .slot_bytes = 4096,
                                        .slot_count = 1,
                                        .credits_per_sender = 1});
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  auto sender =
      BatchSender::connect({.receiver_address = (*receiver)->address(), .busy_poll = 300ms});
  ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
  auto& tx = **sender;
  std::vector<std::byte> payload(1024, std::byte{7});
  ASSERT_TRUE(tx.post(byte_batch(payload.size()), payload, nullptr, 5s).is_ok());
  ASSERT_TRUE(tx.flush(5s).is_ok());
  // Its only credit is held by the landed batch, which nobody releases: the
  // wait times out, polling for the first 300 ms and sleeping after.
  Status waited;
  const auto spent =
      cpu_during(CLOCK_THREAD_CPUTIME_ID, [&] { waited = tx.wait_for_credit(1000ms); });
  EXPECT_EQ(waited.code(), StatusCode::kTimedOut) << waited.to_string();
  EXPECT_GE(spent, 60ms) << "the sender did not poll while it waited";
  EXPECT_LT(spent, 700ms) << "the sender kept polling past its busy_poll";
  auto landed = (*receiver)->next(5s);
  ASSERT_TRUE(landed.is_ok()) << landed.status().to_string();
  landed->release();
  EXPECT_TRUE(tx.close(5s).is_ok());
}

}  // namespace
}  // namespace stoker
