// Handshake, credit and ready messages: round trips and rejection of
// malformed, truncated and oversized input.
#include "transport/data_plane_messages.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace stoker::wire {
namespace {

TEST(DataPlaneMessages, HelloRoundTrips) {
  Hello h{.version = kDataPlaneVersion,
          .producer_id = 0x1122334455667788ULL,
          .name = "worker-3",
          .access_token = "job-token"};
  auto back = Hello::decode(h.encode());
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->producer_id, 0x1122334455667788ULL);
  EXPECT_EQ(back->name, "worker-3");
  EXPECT_EQ(back->access_token, "job-token");
}

TEST(DataPlaneMessages, HelloFromAnotherVersionNamesBothVersions) {
  Hello h{.version = 9, .name = "future"};
  auto back = Hello::decode(h.encode());
  ASSERT_FALSE(back.is_ok());
  EXPECT_EQ(back.status().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(back.status().message().find("version 9"), std::string::npos);
  EXPECT_NE(back.status().message().find(fmt::format("speaks {}", kDataPlaneVersion)),
            std::string::npos);
}

TEST(DataPlaneMessages, HelloRejectsGarbageAndTruncation) {
  std::vector<std::byte> garbage(16, std::byte{0x41});
  EXPECT_EQ(Hello::decode(garbage).status().code(), StatusCode::kProtocolError);
  auto bytes = Hello{.name = "x"}.encode();
  EXPECT_EQ(Hello::decode(std::span(bytes).first(5)).status().code(), StatusCode::kProtocolError);
  bytes.push_back(std::byte{0});
  EXPECT_NE(Hello::decode(bytes).status().message().find("trailing"), std::string::npos);
}

TEST(DataPlaneMessages, WelcomeRoundTripsAndRejectsTruncation) {
  Welcome w;
  w.sender_id = 4;
  w.slot_bytes = 1 << 20;
  w.slot_count = 32;
  w.pool_address = 0x7f0000001000;
  w.attach_token = 0x1234567890abcdefULL;
  w.pool_rkey = {std::byte{1}, std::byte{2}};
  w.worker_address = std::vector<std::byte>(100, std::byte{9});
  w.host_identity = "boot/net:1";
  auto bytes = w.encode();
  auto back = Welcome::decode(bytes);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->sender_id, 4u);
  EXPECT_EQ(back->attach_token, w.attach_token);
  EXPECT_EQ(back->pool_rkey, w.pool_rkey);
  EXPECT_EQ(back->worker_address, w.worker_address);
  EXPECT_EQ(back->host_identity, "boot/net:1");
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Welcome::decode(std::span(bytes).first(n)).is_ok()) << n;
  }
}

TEST(PushModes, AutoPutsIntoMappedSlotsOfAnySize) {
  for (uint64_t bytes : {uint64_t{64}, uint64_t{64} << 10, kSharedMemoryActiveMessageSlotBytes,
                         uint64_t{64} << 20}) {
    EXPECT_EQ(auto_push_mode(SlotReach::kMapped, bytes), PushMode::kPut) << bytes;
  }
}

TEST(PushModes, AutoPutsSmallBatchesIntoUnmappedSharedMemorySlotsOnly) {
  constexpr auto kShm = SlotReach::kSharedMemory;
  EXPECT_EQ(auto_push_mode(kShm, 64 << 10), PushMode::kPut);
  EXPECT_EQ(auto_push_mode(kShm, kSharedMemoryActiveMessageSlotBytes - 1), PushMode::kPut);
  EXPECT_EQ(auto_push_mode(kShm, kSharedMemoryActiveMessageSlotBytes), PushMode::kActiveMessage);
  EXPECT_EQ(auto_push_mode(kShm, 4 << 20), PushMode::kActiveMessage);
}

TEST(PushModes, AutoSendsActiveMessagesOverTheNetwork) {
  EXPECT_EQ(auto_push_mode(SlotReach::kNetwork, 64 << 10), PushMode::kActiveMessage);
  EXPECT_EQ(auto_push_mode(SlotReach::kNetwork, 4 << 20), PushMode::kActiveMessage);
}

TEST(DataPlaneMessages, CreditChecksSlotRangeAndCount) {
  Credit c{.window_bytes = 3 << 20, .slots = {0, 5, 31}};
  auto ok = Credit::decode(c.encode(), 32);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->window_bytes, 3u << 20);
  EXPECT_EQ(ok->slots, (std::vector<uint32_t>{0, 5, 31}));
  EXPECT_NE(Credit::decode(c.encode(), 16).status().message().find("slot 31 of a 16-slot pool"),
            std::string::npos);
  EXPECT_TRUE(Credit::decode(Credit{}.encode(), 32).is_ok());  // an attach confirmation
  EXPECT_FALSE(
      Credit::decode(Credit{.slots = std::vector<uint32_t>(1025, 0)}.encode(), 32).is_ok());
  const auto bytes = c.encode();
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Credit::decode(std::span(bytes).first(n), 32).is_ok()) << n;
  }
  auto longer = bytes;
  longer.push_back(std::byte{0});
  EXPECT_FALSE(Credit::decode(longer, 32).is_ok()) << "trailing bytes";
}

TEST(DataPlaneMessages, RefusalAndAttachRoundTrip) {
  auto r = Refusal::decode(Refusal{.version = 1, .reason = "no"}.encode());
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->reason, "no");
  auto a = Attach::decode(Attach{.sender_id = 3, .token = 99, .mode = PushMode::kPut}.encode());
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->token, 99u);
  EXPECT_EQ(a->mode, PushMode::kPut);
  auto bad_mode = Attach{.sender_id = 3, .token = 99}.encode();
  bad_mode.back() = std::byte{static_cast<uint8_t>(PushMode::kAuto)};
  EXPECT_NE(Attach::decode(bad_mode).status().message().find("push mode"), std::string::npos);
  std::vector<std::byte> short_attach(5);
  EXPECT_FALSE(Attach::decode(short_attach).is_ok());
}

TEST(DataPlaneMessages, BatchReadyCarriesSlotAndDescriptor) {
  BatchReady ready;
  ready.slot = 12;
  const uint64_t shape[] = {64};
  ASSERT_TRUE(ready.descriptor.add_tensor("x", DType::kFloat32, shape, 0).is_ok());
  ready.descriptor.payload_bytes = 256;
  std::vector<std::byte> bytes(4 + ready.descriptor.encoded_size());
  auto n = ready.encode(bytes);
  ASSERT_TRUE(n.is_ok());
  auto back = BatchReady::decode(bytes);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->slot, 12u);
  EXPECT_EQ(back->descriptor.tensors[0].dtype, DType::kFloat32);
  EXPECT_FALSE(BatchReady::decode(std::span(bytes).first(3)).is_ok());
}

TEST(DataPlaneMessages, ReadyNoticeListSplitsEntriesOfEverySize) {
  // Two entries with different tensor counts, as the sender batches them.
  std::vector<std::byte> message(2);
  for (uint32_t slot : {3u, 9u}) {
    BatchReady ready;
    ready.slot = slot;
    const uint64_t shape[] = {16};
    for (uint32_t t = 0; t < slot / 3; ++t) {
      ASSERT_TRUE(
          ready.descriptor.add_tensor(fmt::format("t{}", t), DType::kUInt8, shape, 16 * t).is_ok());
    }
    ready.descriptor.payload_bytes = 16 * (slot / 3);
    std::vector<std::byte> entry(4 + ready.descriptor.encoded_size());
    ASSERT_TRUE(ready.encode(entry).is_ok());
    message.insert(message.end(), entry.begin(), entry.end());
  }
  message[0] = std::byte{2};
  auto list = BatchReady::decode_list(message);
  ASSERT_TRUE(list.is_ok()) << list.status().to_string();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].slot, 3u);
  EXPECT_EQ((*list)[1].descriptor.tensor_count, 3);

  for (size_t n = 0; n < message.size(); ++n) {
    EXPECT_FALSE(BatchReady::decode_list(std::span(message).first(n)).is_ok()) << n;
  }
  message.push_back(std::byte{0});
  EXPECT_NE(BatchReady::decode_list(message).status().message().find("trailing"),
            std::string::npos);
  message.pop_back();
  message[2 + 4 + 6] = std::byte{17};  // first entry declares 17 tensors
  EXPECT_NE(BatchReady::decode_list(message).status().message().find("17 tensors"),
            std::string::npos);
}

}  // namespace
}  // namespace stoker::wire
