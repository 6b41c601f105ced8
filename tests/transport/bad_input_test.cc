// A receiver fed lies. A raw peer speaks the data-plane protocol by hand over
// real UCX endpoints and sends malformed, oversized, credit-less and
// wrong-version messages; each must be rejected and counted under its reason
// while a well-behaved BatchSender keeps landing batches.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <optional>
#include <thread>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "tests/support/byte_batch.h"
#include "tests/support/payload_pattern.h"
#include "transport/data_plane_messages.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/worker.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::byte_batch;

std::span<const std::byte> bytes_of(const void* p, size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

// A hand-driven sender: one control endpoint, one data endpoint, no checks.
class RawPeer {
 public:
  explicit RawPeer(const std::string& address) {
    context_ = ucx::Context::create().value();
    worker_ = ucx::Worker::create(context_).value();
    using wire::AmId;
    EXPECT_TRUE(
        worker_->set_am_handler(static_cast<uint16_t>(AmId::kWelcome), &on_welcome, this).is_ok());
    EXPECT_TRUE(
        worker_->set_am_handler(static_cast<uint16_t>(AmId::kRefuse), &on_refuse, this).is_ok());
    EXPECT_TRUE(
        worker_->set_am_handler(static_cast<uint16_t>(AmId::kCredit), &on_credit, this).is_ok());
    control_ =
        ucx::Endpoint::connect(*worker_, SocketAddress::parse(address).value(), nullptr).value();
  }

  void send_control(wire::AmId id, std::vector<std::byte> header) {
    EXPECT_TRUE(ucx::send_control_am(control_->get(), static_cast<uint16_t>(id), std::move(header))
                    .is_ok());
  }

  template <typename Done>
  bool progress_until(Done done, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (worker_->progress() == 0) (void)worker_->wait(10ms);
    }
    return true;
  }
  void progress_for(std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    progress_until([&] { return std::chrono::steady_clock::now() > until; }, d + 1s);
  }

  // hello -> welcome -> data endpoint -> attach -> credits.
  void handshake(bool attach = true) {
    send_control(wire::AmId::kHello, wire::Hello{.name = "raw"}.encode());
    ASSERT_TRUE(progress_until([&] { return welcome_.has_value(); })) << "no welcome";
    data_ =
        ucx::Endpoint::connect_to_worker(*worker_, welcome_->worker_address, "receiver").value();
    if (!attach) return;
    EXPECT_TRUE(ucx::send_control_am(
                    data_->get(), static_cast<uint16_t>(wire::AmId::kAttach),
                    wire::Attach{.sender_id = welcome_->sender_id, .token = welcome_->attach_token}
                        .encode())
                    .is_ok());
    ASSERT_TRUE(progress_until([&] { return !credits_.empty(); })) << "no credits";
  }

  // A kBatch message with any header and payload, on the data endpoint.
  Status send_batch(std::span<const std::byte> header, std::span<const std::byte> payload) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_REPLY;
    auto* ep = data_ ? data_->get() : control_->get();
    return worker_->wait_for(
        ucp_am_send_nbx(ep, static_cast<uint16_t>(wire::AmId::kBatch), header.data(), header.size(),
                        payload.data(), payload.size(), &param),
        5s, "raw send");
  }

  std::optional<wire::Welcome> welcome_;
  std::optional<wire::Refusal> refusal_;
  std::deque<uint32_t> credits_;

 private:
  static ucs_status_t on_welcome(void* arg, const void* h, size_t n, void*, size_t,
                                 const ucp_am_recv_param_t*) {
    static_cast<RawPeer*>(arg)->welcome_ = wire::Welcome::decode(bytes_of(h, n)).value();
    return UCS_OK;
  }
  static ucs_status_t on_refuse(void* arg, const void* h, size_t n, void*, size_t,
                                const ucp_am_recv_param_t*) {
    static_cast<RawPeer*>(arg)->refusal_ = wire::Refusal::decode(bytes_of(h, n)).value();
    return UCS_OK;
  }
  static ucs_status_t on_credit(void* arg, const void* h, size_t n, void*, size_t,
                                const ucp_am_recv_param_t*) {
    auto credit = wire::Credit::decode(bytes_of(h, n), UINT32_MAX).value();
    auto& credits = static_cast<RawPeer*>(arg)->credits_;
    credits.insert(credits.end(), credit.slots.begin(), credit.slots.end());
    return UCS_OK;
  }

  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  std::unique_ptr<ucx::Endpoint> control_;
  std::unique_ptr<ucx::Endpoint> data_;
};

std::vector<std::byte> encoded(const BatchDescriptor& d) {
  std::vector<std::byte> out(d.encoded_size());
  EXPECT_TRUE(d.encode(out).is_ok());
  return out;
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("UCX_TLS", "tcp", 1);
    auto r = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                   .slot_bytes = 4096,
                                   .slot_count = 16,
                                   .credits_per_sender = 4});
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    receiver_ = std::move(r).value();
  }
  uint64_t rejected(RejectReason reason) { return receiver_->stats().rejected_for(reason); }
  // Waits for the receiver's counters to catch up with the raw peer.
  bool wait_rejected(RejectReason reason, uint64_t n, RawPeer& peer) {
    return peer.progress_until([&] { return rejected(reason) >= n; });
  }
  std::unique_ptr<BatchReceiver> receiver_;
};

TEST_F(BadInput, AnotherProtocolVersionIsRefusedNamingBothVersions) {
  RawPeer peer(receiver_->address());
  wire::Hello hello{.version = 9, .name = "future"};
  peer.send_control(wire::AmId::kHello, hello.encode());
  ASSERT_TRUE(peer.progress_until([&] { return peer.refusal_.has_value(); }));
  EXPECT_NE(peer.refusal_->reason.find("version 9"), std::string::npos) << peer.refusal_->reason;
  EXPECT_NE(peer.refusal_->reason.find(fmt::format("speaks {}", wire::kDataPlaneVersion)),
            std::string::npos)
      << peer.refusal_->reason;
  EXPECT_EQ(rejected(RejectReason::kUnsupportedVersion), 1u);
  EXPECT_FALSE(peer.welcome_.has_value());
}

TEST(BadInputToken, SendersWithoutTheAccessTokenAreRefusedAndCounted) {
  setenv("UCX_TLS", "tcp", 1);
  auto receiver = BatchReceiver::start({.listen_address = "127.0.0.1:0",
                                        .slot_bytes = 4096,
                                        .slot_count = 8,
                                        .credits_per_sender = 2,
                                        .access_token = "job-7-secret"});
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  for (const char* token : {"", "job-7-guess"}) {
    auto sender = BatchSender::connect(
        {.receiver_address = (*receiver)->address(), .name = "intruder", .access_token = token});
    ASSERT_FALSE(sender.is_ok());
    EXPECT_NE(sender.status().message().find("access token"), std::string::npos)
        << sender.status().to_string();
  }
  EXPECT_EQ((*receiver)->stats().rejected_for(RejectReason::kUnauthorized), 2u);
  auto good = BatchSender::connect({.receiver_address = (*receiver)->address(),
                                    .name = "worker",
                                    .producer_id = 77,
                                    .access_token = "job-7-secret"});
  ASSERT_TRUE(good.is_ok()) << good.status().to_string();
  std::vector<std::byte> payload(64);
  ASSERT_TRUE((*good)->post(byte_batch(payload.size()), payload, nullptr, 10s).is_ok());
  auto batch = (*receiver)->next(10s);
  ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
  EXPECT_EQ(batch->producer_id(), 77u);
}

TEST_F(BadInput, LyingDescriptorsAreCountedAndOthersKeepBeingServed) {
  // A well-behaved sender streams throughout, on its own thread.
  constexpr uint64_t kGoodBatches = 300;
  std::thread good([&] {
    auto sender = BatchSender::connect({.receiver_address = receiver_->address(), .name = "good"});
    ASSERT_TRUE(sender.is_ok()) << sender.status().to_string();
    std::vector<std::byte> payload(2048);
    for (uint64_t i = 0; i < kGoodBatches; ++i) {
      testing::fill_pattern(payload, i);
      BatchDescriptor d = byte_batch(payload.size());
      d.sequence = i;
      d.job_id = 42;
      ASSERT_TRUE((*sender)->post(d, payload, nullptr, 10s).is_ok());
      ASSERT_TRUE((*sender)->flush(10s).is_ok());
    }
    ASSERT_TRUE((*sender)->close(10s).is_ok());
  });
  uint64_t good_seen = 0;
  std::atomic<int> raw_landed{0};
  std::vector<LandedBatch> held;  // the raw peer's valid batches, never released
  std::thread consumer([&] {
    while (good_seen < kGoodBatches || raw_landed.load() < 4) {
      auto batch = receiver_->next(10s);
      ASSERT_TRUE(batch.is_ok()) << batch.status().to_string();
      if (batch->descriptor().job_id != 42) {
        held.push_back(std::move(batch).value());
        ++raw_landed;
        continue;
      }
      EXPECT_EQ(batch->descriptor().sequence, good_seen);
      EXPECT_TRUE(testing::has_pattern(batch->payload(), good_seen));
      ++good_seen;
    }
  });

  RawPeer peer(receiver_->address());
  peer.handshake();
  std::vector<std::byte> payload(8192);
  const size_t credits = peer.credits_.size();

  // Garbage where a descriptor should be.
  std::vector<std::byte> garbage(64, std::byte{0x41});
  (void)peer.send_batch(garbage, std::span(payload).first(64));
  EXPECT_TRUE(wait_rejected(RejectReason::kMalformedDescriptor, 1, peer));

  // A descriptor from the future.
  auto future = encoded(byte_batch(64));
  future[4] = std::byte{9};
  (void)peer.send_batch(future, std::span(payload).first(64));
  EXPECT_TRUE(wait_rejected(RejectReason::kUnsupportedVersion, 1, peer));

  // Declares 100 bytes, sends 50.
  (void)peer.send_batch(encoded(byte_batch(100)), std::span(payload).first(50));
  EXPECT_TRUE(wait_rejected(RejectReason::kPayloadMismatch, 1, peer));

  // Honest about its size, but larger than a slot.
  (void)peer.send_batch(encoded(byte_batch(8192)), payload);
  EXPECT_TRUE(wait_rejected(RejectReason::kOversizedBatch, 1, peer));

  // A tensor that points past the payload.
  BatchDescriptor beyond = byte_batch(64);
  auto beyond_bytes = encoded(beyond);
  beyond_bytes[kDescriptorHeaderBytes + 40] = std::byte{200};  // tensor offset
  (void)peer.send_batch(beyond_bytes, std::span(payload).first(64));
  EXPECT_TRUE(wait_rejected(RejectReason::kMalformedDescriptor, 2, peer));

  // A header far beyond any descriptor.
  std::vector<std::byte> huge_header(3000, std::byte{0});
  (void)peer.send_batch(huge_header, std::span(payload).first(64));
  EXPECT_TRUE(wait_rejected(RejectReason::kMalformedDescriptor, 3, peer));

  // Every rejected batch gave its credit back.
  peer.progress_for(200ms);
  EXPECT_EQ(peer.credits_.size(), credits + 6);

  // Spend the whole window on valid batches the consumer holds, then send
  // one more: it has no credit behind it.
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(peer.send_batch(encoded(byte_batch(64)), std::span(payload).first(64)).is_ok());
  }
  EXPECT_TRUE(peer.progress_until([&] { return raw_landed.load() == 4; }));
  (void)peer.send_batch(encoded(byte_batch(64)), std::span(payload).first(64));
  EXPECT_TRUE(wait_rejected(RejectReason::kNoCredit, 1, peer));

  consumer.join();
  good.join();
  EXPECT_EQ(good_seen, kGoodBatches);
  const ReceiverStats stats = receiver_->stats();
  EXPECT_EQ(stats.senders_failed, 0u);
  EXPECT_EQ(stats.rejected_total(), 7u);
  EXPECT_EQ(raw_landed.load(), 4);
}

TEST_F(BadInput, BatchesFromAnUnattachedEndpointAreRejected) {
  RawPeer peer(receiver_->address());
  peer.handshake(/*attach=*/false);
  std::vector<std::byte> payload(64);
  (void)peer.send_batch(encoded(byte_batch(64)), payload);
  EXPECT_TRUE(wait_rejected(RejectReason::kUnknownSender, 1, peer));
  EXPECT_EQ(receiver_->stats().batches_landed, 0u);
}

TEST_F(BadInput, AttachWithAWrongTokenIsRejected) {
  RawPeer peer(receiver_->address());
  peer.handshake(/*attach=*/false);
  peer.send_control(wire::AmId::kAttach, wire::Attach{.sender_id = peer.welcome_->sender_id,
                                                      .token = peer.welcome_->attach_token + 1}
                                             .encode());
  EXPECT_TRUE(wait_rejected(RejectReason::kUnknownSender, 1, peer));
  peer.progress_for(100ms);
  EXPECT_TRUE(peer.credits_.empty()) << "no credits without a valid attach";
}

}  // namespace
}  // namespace stoker
