// What a sender that has left costs the receiver it fed. Over shared memory
// the receiver maps each sender's receive pool, and UCX 1.13 keeps that
// mapping until the receiver stops (docs/protocol.md, section 12): a
// sender's context keeps the pool small, so that cost stays small.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "stoker/status.h"
#include "tests/support/byte_batch.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;

// Bytes of this process's address space mapped from shared-memory segments
// (System V, or POSIX ones under /dev/shm), as /proc/self/maps lists them.
uint64_t shared_memory_mapped() {
  std::ifstream maps("/proc/self/maps");
  uint64_t total = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/SYSV") == std::string::npos && line.find("/dev/shm/") == std::string::npos) {
      continue;
    }
    std::istringstream range(line.substr(0, line.find(' ')));
    uint64_t begin = 0, end = 0;
    char dash = 0;
    range >> std::hex >> begin >> dash >> end;
    total += end - begin;
  }
  return total;
}

// One sender's life: connect over shared memory, push a batch that lands,
// leave.
Status live_one_sender(BatchReceiver& receiver) {
  auto sender = BatchSender::connect({.receiver_address = receiver.address()});
  if (!sender.is_ok()) return sender.status();
  std::vector<std::byte> payload(1000);
  STOKER_RETURN_IF_ERROR(
      (*sender)->post(testing::byte_batch(payload.size()), payload, nullptr, 5s));
  STOKER_RETURN_IF_ERROR((*sender)->flush(5s));
  if (auto batch = receiver.next(5s); !batch.is_ok()) return batch.status();
  return (*sender)->close(5s);
}

TEST(DepartedSender, LeavesLittleOfItsMemoryMappedInTheReceiver) {
  setenv("UCX_TLS", "sm,tcp", 1);
  // UCX's own setting would win over the sender's: test the sender's.
  for (const char* name :
       {"UCX_MM_RX_BUFS_GROW", "UCX_SYSV_RX_BUFS_GROW", "UCX_POSIX_RX_BUFS_GROW"}) {
    unsetenv(name);
  }
  auto receiver =
      BatchReceiver::start({.listen_address = "127.0.0.1:0", .slot_bytes = 4096, .slot_count = 8});
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  // The first life sets up what the receiver keeps whatever comes later.
  ASSERT_TRUE(live_one_sender(**receiver).is_ok());
  const uint64_t before = shared_memory_mapped();
  ASSERT_GT(before, 0u) << "no shared-memory mapping seen: the measurement below would be blind";
  constexpr int kLives = 10;
  for (int life = 0; life < kLives; ++life) {
    const Status lived = live_one_sender(**receiver);
    ASSERT_TRUE(lived.is_ok()) << "life " << life << ": " << lived.to_string();
  }
  // Each sender leaves its shared-memory FIFOs and a segment of its receive
  // buffers mapped here: 4,321,280 bytes a sender with UCX's pool of 512
  // buffers, 159,744 with a sender's 16.
  const uint64_t per_sender = (shared_memory_mapped() - before) / kLives;
  EXPECT_LT(per_sender, uint64_t{1} << 20) << per_sender << " bytes mapped per departed sender";
  EXPECT_EQ((*receiver)->stats().senders_finished, uint64_t{kLives + 1});
}

}  // namespace
}  // namespace stoker
