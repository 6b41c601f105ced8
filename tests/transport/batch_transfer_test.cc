// Batches over real UCX endpoints in one process: a BatchReceiver with its
// progress thread, BatchSenders on test threads, over TCP and shared memory,
// in both push modes. Checks contents, ordering per sender, credit bounds and
// slot accounting.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "tests/support/payload_pattern.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::fill_pattern;
using testing::has_pattern;

BatchDescriptor describe(uint64_t sequence, size_t bytes) {
  BatchDescriptor d;
  d.job_id = 1;
  d.sequence = sequence;
  d.payload_bytes = bytes;
  const uint64_t values[] = {bytes / 4};
  EXPECT_TRUE(d.add_tensor("values", DType::kInt32, values, 0).is_ok());
  return d;
}

// Sends `count` patterned 8 KiB batches numbered 0.. with split id `split`
// (one in flight at a time: the payload buffer is reused), then closes.
void send_numbered(BatchSender& sender, uint64_t split, uint64_t count) {
  std::vector<std::byte> payload(8192);
  for (uint64_t i = 0; i < count; ++i) {
    fill_pattern(payload, i);
    BatchDescriptor d = describe(i, payload.size());
    d.split_id = split;
    const Status posted = sender.post(d, payload, nullptr, 10s);
    ASSERT_TRUE(posted.is_ok()) << posted.to_string();
    ASSERT_TRUE(sender.flush(10s).is_ok());
  }
  ASSERT_TRUE(sender.close(10s).is_ok());
}

// The next landed batch, checked against the send_numbered() stream it
// belongs to: next in its sender's order (`next_sequence`, per split id) and
// intact.
LandedBatch next_numbered(BatchReceiver& receiver, std::map<uint64_t, uint64_t>& next_sequence) {
  auto batch = receiver.next(10s);
  EXPECT_TRUE(batch.is_ok()) << batch.status().to_string();
  if (!batch.is_ok()) return {};
  const auto& d = batch->descriptor();
  EXPECT_EQ(d.sequence, next_sequence[d.split_id]++);
  EXPECT_TRUE(has_pattern(batch->payload(), d.sequence));
  return std::move(batch).value();
}

// Releases and goodbyes reach a progress thread asynchronously: waits up to
// 5 s for `settled` to hold.
template <typename Settled>
void wait_until(Settled settled) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!settled() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
}

// What the receiver tells a sender reaches it as the sender makes progress:
// polls `sender` until `value()` equals `want` (up to 5 s) and returns the
// value it reached.
template <typename Value>
auto poll_until(BatchSender& sender, Value value, decltype(value()) want) {
  wait_until([&] {
    sender.poll();
    return value() == want;
  });
  return value();
}

struct Transport {
  const char* tls;
  PushMode mode;
};

class BatchTransfer : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override { setenv("UCX_TLS", GetParam().tls, 1); }

  std::unique_ptr<BatchReceiver> start_receiver(ReceiverOptions options = {}) {
    options.listen_address = "127.0.0.1:0";
    auto r = BatchReceiver::start(std::move(options));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(r).value() : nullptr;
  }

  std::unique_ptr<BatchSender> connect(const BatchReceiver& receiver, std::string name = "test") {
    auto s = BatchSender::connect(
        {.receiver_address = receiver.address(), .mode = GetParam().mode, .name = std::move(name)});
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(s).value() : nullptr;
  }
};

TEST_P(BatchTransfer, EveryBatchLandsIntactAndInOrder) {
  auto receiver = start_receiver({.slot_bytes = 1 << 20, .slot_count = 8, .credits_per_sender = 4});
  ASSERT_TRUE(receiver);
  auto sender = connect(*receiver);
  ASSERT_TRUE(sender);
  if (GetParam().mode == PushMode::kAuto) {
    // The default pool is mapped into senders on this host: put, at any size.
    EXPECT_EQ(sender->mode(), GetParam().tls[0] == 's' ? PushMode::kPut : PushMode::kActiveMessage);
  } else {
    EXPECT_EQ(sender->mode(), GetParam().mode);
  }

  // Sizes straddle UCX's eager/rendezvous switch.
  const std::vector<size_t> sizes = {64, 4096, 65536, 1 << 20};
  constexpr int kPerSize = 25;
  std::vector<std::vector<std::byte>> buffers(sizes.size() * kPerSize);
  std::thread consumer([&] {
    for (size_t i = 0; i < buffers.size(); ++i) {
      auto batch = receiver->next(10s);
      ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
      EXPECT_EQ(batch->descriptor().sequence, i) << "out of order";
      EXPECT_EQ(batch->payload().size(), sizes[i / kPerSize]);
      EXPECT_TRUE(has_pattern(batch->payload(), i)) << "batch " << i << " is corrupt";
      EXPECT_EQ(batch->tensor_bytes(0).size(), sizes[i / kPerSize]);
      EXPECT_EQ(batch->memory_kind(), MemoryKind::kHost);
    }
  });
  std::atomic<int> completed{0};
  for (size_t i = 0; i < buffers.size(); ++i) {
    buffers[i].resize(sizes[i / kPerSize]);
    fill_pattern(buffers[i], i);
    ASSERT_TRUE(sender
                    ->post(
                        describe(i, buffers[i].size()), buffers[i],
                        [&](const Status& s) {
                          EXPECT_TRUE(s.is_ok()) << s.to_string();
                          ++completed;
                        },
                        10s)
                    .is_ok());
  }
  ASSERT_TRUE(sender->close(10s).is_ok());
  consumer.join();
  EXPECT_EQ(completed.load(), static_cast<int>(buffers.size()));
  // The goodbye follows the last batch, and the progress thread may take it
  // in a later turn than the one the consumer took that batch from.
  wait_until([&] { return receiver->stats().senders_finished != 0; });
  const ReceiverStats stats = receiver->stats();
  EXPECT_EQ(stats.batches_landed, buffers.size());
  EXPECT_EQ(stats.rejected_total(), 0u);
  EXPECT_EQ(stats.senders_finished, 1u);
  EXPECT_EQ(stats.senders_failed, 0u);
}

TEST_P(BatchTransfer, SenderNeverExceedsItsCredits) {
  auto receiver = start_receiver({.slot_bytes = 4096, .slot_count = 4, .credits_per_sender = 2});
  ASSERT_TRUE(receiver);
  auto sender = connect(*receiver);
  ASSERT_TRUE(sender);
  if (GetParam().mode == PushMode::kAuto) {
    // Small slots: put over shared memory (UCX's FIFO), active messages elsewhere.
    EXPECT_EQ(sender->mode(), GetParam().tls[0] == 's' ? PushMode::kPut : PushMode::kActiveMessage);
  }
  std::vector<std::byte> payload(1024);
  // Two credits: two posts go through, the third waits and times out.
  ASSERT_TRUE(sender->post(describe(0, payload.size()), payload, nullptr, 5s).is_ok());
  ASSERT_TRUE(sender->post(describe(1, payload.size()), payload, nullptr, 5s).is_ok());
  const auto t0 = std::chrono::steady_clock::now();
  Status third = sender->post(describe(2, payload.size()), payload, nullptr, 300ms);
  EXPECT_EQ(third.code(), StatusCode::kTimedOut) << third.to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  // Both landed and are held by the consumer; releasing one returns a credit.
  auto first = receiver->next(5s);
  ASSERT_TRUE(first.is_ok());
  auto second = receiver->next(5s);
  ASSERT_TRUE(second.is_ok());
  EXPECT_EQ(receiver->next(200ms).status().code(), StatusCode::kTimedOut);
  first->release();
  first->release();  // idempotent: must not return a second credit
  EXPECT_TRUE(sender->post(describe(2, payload.size()), payload, nullptr, 5s).is_ok());
  EXPECT_EQ(sender->post(describe(3, payload.size()), payload, nullptr, 300ms).code(),
            StatusCode::kTimedOut)
      << "a double release returned a second credit";
  second->release();
  ASSERT_TRUE(sender->close(5s).is_ok());
}

TEST_P(BatchTransfer, ManySendersShareOnePool) {
  auto receiver = start_receiver({.slot_bytes = 65536, .slot_count = 12, .credits_per_sender = 4});
  ASSERT_TRUE(receiver);
  constexpr int kSenders = 3;
  constexpr uint64_t kBatches = 200;
  std::vector<std::thread> threads;
  for (int s = 0; s < kSenders; ++s) {
    threads.emplace_back([&, s] {
      auto sender = connect(*receiver, "sender-" + std::to_string(s));
      ASSERT_TRUE(sender);
      send_numbered(*sender, static_cast<uint64_t>(s), kBatches);
    });
  }
  std::map<uint64_t, uint64_t> next_sequence;  // per sender (split_id)
  for (uint64_t n = 0; n < kSenders * kBatches; ++n) {
    ASSERT_NE(next_numbered(*receiver, next_sequence).sender_id(), 0u) << "nothing landed";
  }
  for (auto& t : threads) t.join();
  wait_until([&] { return receiver->stats().slots_free == 12u; });
  const ReceiverStats stats = receiver->stats();
  EXPECT_EQ(stats.senders_finished, static_cast<uint64_t>(kSenders));
  EXPECT_EQ(stats.slots_free, 12u) << "every slot returns once senders are gone";
}

TEST_P(BatchTransfer, ProgressThreadsShareTheSendersAndThePool) {
  // 3 progress threads, 8 slots each; 5 senders spread over them.
  auto receiver = start_receiver(
      {.slot_bytes = 65536, .slot_count = 24, .credits_per_sender = 4, .progress_threads = 3});
  ASSERT_TRUE(receiver);
  constexpr size_t kSenders = 5;
  constexpr uint64_t kBatches = 150;
  std::vector<std::unique_ptr<BatchSender>> senders;
  for (size_t s = 0; s < kSenders; ++s) {
    senders.push_back(connect(*receiver, "sender-" + std::to_string(s)));
    ASSERT_TRUE(senders.back());
  }
  std::vector<uint32_t> by_thread = receiver->stats().senders_by_thread;
  std::sort(by_thread.begin(), by_thread.end());
  EXPECT_EQ(by_thread, (std::vector<uint32_t>{1, 2, 2})) << "each goes to the least busy thread";

  std::vector<std::thread> threads;
  for (size_t s = 0; s < kSenders; ++s) {
    threads.emplace_back([&, s] { send_numbered(*senders[s], s, kBatches); });
  }
  std::map<uint64_t, uint64_t> next_sequence;  // per sender (split_id)
  std::map<uint64_t, uint32_t> sender_of_split;
  // Hold the last few batches (fewer than a sender's credits, or the last
  // sender would wait for a slot only the next batch would free).
  std::vector<LandedBatch> held;
  for (uint64_t n = 0; n < kSenders * kBatches; ++n) {
    LandedBatch batch = next_numbered(*receiver, next_sequence);
    ASSERT_NE(batch.sender_id(), 0u);
    const auto it = sender_of_split.emplace(batch.descriptor().split_id, batch.sender_id()).first;
    EXPECT_EQ(it->second, batch.sender_id()) << "a sender's id is the same on every batch";
    held.push_back(std::move(batch));
    if (held.size() > 3) held.erase(held.begin());
  }
  held.clear();
  for (auto& t : threads) t.join();
  std::set<uint32_t> ids;
  for (const auto& [split, id] : sender_of_split) ids.insert(id);
  EXPECT_EQ(ids.size(), kSenders) << "sender ids are unique across threads";
  const std::vector<uint32_t> none_served{0, 0, 0};
  wait_until([&] {
    const ReceiverStats settled = receiver->stats();
    return settled.slots_free == 24u && settled.senders_by_thread == none_served;
  });
  const ReceiverStats stats = receiver->stats();
  EXPECT_EQ(stats.batches_landed, kSenders * kBatches);
  EXPECT_EQ(stats.senders_finished, static_cast<uint64_t>(kSenders));
  EXPECT_EQ(stats.slots_free, 24u) << "every slot returns to its own thread's pool";
  EXPECT_EQ(stats.senders_by_thread, none_served) << "senders that left are no one's load";
}

// max_bytes_in_flight bounds what a sender has in flight below its credits;
// a window smaller than one batch still lets one through at a time.
TEST_P(BatchTransfer, SenderKeepsItsBytesInFlightWithinItsWindow) {
  constexpr size_t kBytes = 200 << 10;  // rendezvous-sized
  // A private pool: a put into a mapped one (the default pool, over shared
  // memory) is a copy that is complete when ucp_put_nbx returns, so nothing
  // would ever be in flight to bound.
  auto receiver = start_receiver({.slot_bytes = 256 << 10,
                                  .slot_count = 8,
                                  .credits_per_sender = 8,
                                  .landing_memory = host_memory_resource()});
  ASSERT_TRUE(receiver);
  for (const size_t window : {3 * kBytes - 1, size_t{1}}) {
    const size_t most = window == 1 ? 1 : 3;
    auto connected = BatchSender::connect({.receiver_address = receiver->address(),
                                           .mode = GetParam().mode,
                                           .max_bytes_in_flight = window});
    ASSERT_TRUE(connected.is_ok()) << connected.status().to_string();
    BatchSender& sender = **connected;
    constexpr uint64_t kBatches = 40;
    std::thread consumer([&] {
      for (uint64_t i = 0; i < kBatches; ++i) {
        auto batch = receiver->next(10s);
        ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
        EXPECT_EQ(batch->descriptor().sequence, i) << "out of order";
        EXPECT_TRUE(has_pattern(batch->payload(), i)) << "batch " << i << " is corrupt";
      }
    });
    std::vector<std::vector<std::byte>> payloads(kBatches, std::vector<std::byte>(kBytes));
    size_t peak = 0;
    for (uint64_t i = 0; i < kBatches; ++i) {
      fill_pattern(payloads[i], i);
      const Status posted = sender.post(describe(i, kBytes), payloads[i], nullptr, 10s);
      ASSERT_TRUE(posted.is_ok()) << posted.to_string();
      peak = std::max(peak, sender.in_flight());
      EXPECT_LE(sender.in_flight(), most) << "window " << window;
    }
    ASSERT_TRUE(sender.close(10s).is_ok());
    consumer.join();
    EXPECT_GE(peak, 1u);
  }
  EXPECT_EQ(receiver->stats().rejected_total(), 0u);
}

// The receiver's max_bytes_in_flight is shared by the senders streaming to
// it: each learns its share with its credits, and the shares change as
// senders come and go.
TEST_P(BatchTransfer, SendersShareTheReceiversWindow) {
  constexpr size_t kBytes = 200 << 10;  // rendezvous-sized
  constexpr size_t kBudget = 4 * kBytes;
  auto receiver = start_receiver({.slot_bytes = 256 << 10,
                                  .slot_count = 16,
                                  .credits_per_sender = 8,
                                  .max_bytes_in_flight = kBudget});
  ASSERT_TRUE(receiver);
  const auto window_becomes = [](BatchSender& sender, size_t window) {
    return poll_until(
        sender, [&] { return sender.window_bytes(); }, window);
  };
  auto a = connect(*receiver, "a");
  ASSERT_TRUE(a);
  EXPECT_EQ(window_becomes(*a, kBudget), kBudget);
  auto b = connect(*receiver, "b");
  ASSERT_TRUE(b);
  EXPECT_EQ(window_becomes(*b, kBudget / 2), kBudget / 2);
  EXPECT_EQ(window_becomes(*a, kBudget / 2), kBudget / 2) << "not told of the second sender";

  constexpr uint64_t kBatches = 30;
  std::thread consumer([&] {
    std::map<uint64_t, uint64_t> next_sequence;
    for (uint64_t i = 0; i < 2 * kBatches; ++i) next_numbered(*receiver, next_sequence);
  });
  const auto stream = [&](BatchSender& sender, uint64_t split) {
    std::vector<std::vector<std::byte>> payloads(kBatches, std::vector<std::byte>(kBytes));
    for (uint64_t i = 0; i < kBatches; ++i) {
      fill_pattern(payloads[i], i);
      BatchDescriptor d = describe(i, kBytes);
      d.split_id = split;
      ASSERT_TRUE(sender.post(d, payloads[i], nullptr, 10s).is_ok());
      EXPECT_LE(sender.in_flight(), 2u) << "more than its half of the receiver's window";
    }
    ASSERT_TRUE(sender.flush(10s).is_ok());
  };
  std::thread second([&] { stream(*b, 2); });
  stream(*a, 1);
  second.join();
  consumer.join();
  ASSERT_TRUE(b->close(10s).is_ok());
  EXPECT_EQ(window_becomes(*a, kBudget), kBudget) << "a leaving sender's share goes to the others";
  ASSERT_TRUE(a->close(10s).is_ok());
  EXPECT_EQ(receiver->stats().rejected_total(), 0u);
}

// The receiver returns credits in groups while a sender has plenty in hand;
// a lone release still comes back once the receiver has nothing else to do,
// and every credit comes back exactly once.
TEST_P(BatchTransfer, HeldBackCreditsAllComeBack) {
  constexpr uint32_t kCredits = 16;  // groups of 2
  auto receiver =
      start_receiver({.slot_bytes = 4096, .slot_count = kCredits, .credits_per_sender = kCredits});
  ASSERT_TRUE(receiver);
  auto sender = connect(*receiver);
  ASSERT_TRUE(sender);
  const auto credits_become = [&](uint32_t n) {
    return poll_until(
        *sender, [&] { return sender->credits(); }, n);
  };
  ASSERT_EQ(credits_become(kCredits), kCredits);
  std::vector<std::byte> payload(1024);
  uint64_t sequence = 0;
  const auto post = [&](uint32_t count) {
    for (uint32_t i = 0; i < count; ++i) {
      fill_pattern(payload, sequence);
      ASSERT_TRUE(sender->post(describe(sequence, payload.size()), payload, nullptr, 5s).is_ok());
      ++sequence;
    }
    ASSERT_TRUE(sender->flush(5s).is_ok());
  };
  post(4);
  std::vector<LandedBatch> held;
  for (int i = 0; i < 4; ++i) {
    auto batch = receiver->next(5s);
    ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
    held.push_back(std::move(batch).value());
  }
  // One release, fewer than a group, while the sender holds 12: it comes
  // back when the receiver's progress thread next has nothing to do.
  held[0].release();
  EXPECT_EQ(credits_become(kCredits - 3), kCredits - 3);
  for (auto& batch : held) batch.release();
  EXPECT_EQ(credits_become(kCredits), kCredits);
  // All of them, once: the sender can fill every slot again, and no more.
  post(kCredits);
  EXPECT_EQ(sender->credits(), 0u);
  for (uint32_t i = 0; i < kCredits; ++i) {
    auto batch = receiver->next(5s);
    ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
    EXPECT_EQ(batch->descriptor().sequence, 4 + i);
    EXPECT_TRUE(has_pattern(batch->payload(), 4 + i));
  }
  ASSERT_TRUE(sender->close(5s).is_ok());
  EXPECT_EQ(receiver->stats().rejected_total(), 0u);
}

TEST_P(BatchTransfer, SenderRefusesBatchesItCannotSend) {
  auto receiver = start_receiver({.slot_bytes = 4096, .slot_count = 2, .credits_per_sender = 2});
  ASSERT_TRUE(receiver);
  auto sender = connect(*receiver);
  ASSERT_TRUE(sender);
  EXPECT_EQ(sender->credits(), 2u) << "connect() returns with the first credits in hand";
  std::vector<std::byte> big(8192);
  Status st = sender->post(describe(0, big.size()), big, nullptr, 1s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("4096-byte slots"), std::string::npos) << st.to_string();
  std::vector<std::byte> small(100);
  EXPECT_EQ(sender->post(describe(0, 200), small, nullptr, 1s).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(sender->credits(), 2u) << "a refused post must not spend a credit";
  ASSERT_TRUE(sender->close(5s).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, BatchTransfer,
                         ::testing::Values(Transport{"tcp", PushMode::kActiveMessage},
                                           Transport{"sm,tcp", PushMode::kActiveMessage},
                                           Transport{"tcp", PushMode::kPut},
                                           Transport{"sm,tcp", PushMode::kPut},
                                           Transport{"tcp", PushMode::kAuto},
                                           Transport{"sm,tcp", PushMode::kAuto}),
                         [](const auto& param_info) {
                           return std::string(param_info.param.tls[0] == 't' ? "tcp" : "shm") +
                                  "_" + std::string(push_mode_name(param_info.param.mode));
                         });

// Over shared memory the default pool is a UCX shared-memory segment that
// senders map: auto puts into it at any size, and the batches land intact.
// A pool of the receiver's own (a MemoryResource's) is not mapped: auto keeps
// to active messages for large slots there (cma reads by the receiver).
TEST(SharedMemoryLanding, AutoPutsIntoTheDefaultPoolAndNotIntoAPrivateOne) {
  setenv("UCX_TLS", "sm,tcp", 1);
  for (const bool private_pool : {false, true}) {
    SCOPED_TRACE(private_pool ? "private pool" : "default pool");
    ReceiverOptions options{.listen_address = "127.0.0.1:0",
                            .slot_bytes = 1 << 20,
                            .slot_count = 8,
                            .credits_per_sender = 4};
    if (private_pool) options.landing_memory = host_memory_resource();
    auto receiver = BatchReceiver::start(std::move(options));
    ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
    std::vector<std::unique_ptr<BatchSender>> senders;
    for (uint64_t split = 0; split < 2; ++split) {
      auto sender = BatchSender::connect({.receiver_address = (*receiver)->address()});
      ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
      EXPECT_EQ((*sender)->mode(), private_pool ? PushMode::kActiveMessage : PushMode::kPut);
      senders.push_back(std::move(sender).value());
    }
    constexpr uint64_t kBatches = 50;
    std::vector<std::thread> threads;
    for (uint64_t split = 0; split < senders.size(); ++split) {
      threads.emplace_back([&, split] { send_numbered(*senders[split], split, kBatches); });
    }
    std::map<uint64_t, uint64_t> next_sequence;
    for (uint64_t i = 0; i < kBatches * senders.size(); ++i) {
      next_numbered(**receiver, next_sequence);
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(next_sequence[0], kBatches);
    EXPECT_EQ(next_sequence[1], kBatches);
    EXPECT_EQ((*receiver)->stats().rejected_total(), 0u);
  }
}

// Into mapped slots a put is done within post(), but its ready notice may
// wait for others (a TCP message each); the batch completes only once the
// notice is sent, so a sender that dies before has not delivered it. poll()
// sends what is held back.
TEST(SharedMemoryLanding, AMappedPutCompletesWhenItsNoticeIsSent) {
  setenv("UCX_TLS", "sm,tcp", 1);
  auto receiver = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                        .slot_bytes = 8192,
                                        .slot_count = 8,
                                        .credits_per_sender = 8});
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  auto sender = BatchSender::connect({.receiver_address = (*receiver)->address()});
  ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
  ASSERT_EQ((*sender)->mode(), PushMode::kPut);
  std::vector<std::byte> payload(8192);
  fill_pattern(payload, 0);
  bool completed = false;
  ASSERT_TRUE((*sender)
                  ->post(
                      describe(0, payload.size()), payload,
                      [&](const Status& s) {
                        EXPECT_TRUE(s.is_ok()) << s.to_string();
                        completed = true;
                      },
                      10s)
                  .is_ok());
  // Eight credits: notices go in pairs, so this one is held back.
  EXPECT_FALSE(completed);
  EXPECT_EQ((*sender)->in_flight(), 1u);
  EXPECT_FALSE((*receiver)->next(50ms).is_ok());
  wait_until([&] {
    (*sender)->poll();
    return completed;
  });
  EXPECT_TRUE(completed);
  EXPECT_EQ((*sender)->in_flight(), 0u);
  auto batch = (*receiver)->next(10s);
  ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
  EXPECT_TRUE(has_pattern(batch->payload(), 0));
  EXPECT_TRUE((*sender)->close(10s).is_ok());
}

TEST(BatchTransferErrors, ConnectingToNobodyFailsPromptly) {
  setenv("UCX_TLS", "tcp", 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto s = BatchSender::connect({.receiver_address = "127.0.0.1:1", .connect_timeout = 3s});
  EXPECT_FALSE(s.is_ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_NE(s.status().message().find("127.0.0.1:1"), std::string::npos) << s.status().to_string();
}

TEST(BatchTransferErrors, BadAddressesAreRejected) {
  EXPECT_EQ(BatchSender::connect({.receiver_address = "no-port"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(BatchSender::connect({.receiver_address = "127.0.0.1:99999"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(BatchReceiver::start({.slot_count = 0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(BatchReceiver::start({.progress_threads = 0}).status().code(),
            StatusCode::kInvalidArgument);
  // 32 slots over 8 threads leave 4 each, fewer than the 8 credits of a sender.
  auto split =
      BatchReceiver::start({.slot_count = 32, .credits_per_sender = 8, .progress_threads = 8});
  EXPECT_EQ(split.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(split.status().message().find("32 slots shared by 8 progress threads leave 4 each"),
            std::string::npos)
      << split.status().to_string();
  // A pool whose size does not fit in size_t (slot_bytes from a peer's word,
  // say) is refused instead of wrapping to a small pool.
  auto huge = BatchReceiver::start({.slot_bytes = size_t{1} << 62, .slot_count = 8});
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("overflow"), std::string::npos)
      << huge.status().to_string();
}

}  // namespace
}  // namespace stoker
