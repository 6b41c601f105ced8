// How a receiver stops: after its senders have left, it closes without
// complaint. UCX logs to the process's stdout, so the test reads what a
// receiver's life printed there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "stoker/status.h"
#include "tests/support/byte_batch.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;

// Sends this process's stdout (file descriptor 1, where UCX logs) to a file
// until text() is called, which restores it and returns what was written.
class CapturedStdout {
 public:
  CapturedStdout() {
    std::fflush(stdout);
    saved_ = dup(STDOUT_FILENO);
    file_ = std::tmpfile();
    if (saved_ >= 0 && file_ != nullptr) dup2(fileno(file_), STDOUT_FILENO);
  }
  CapturedStdout(const CapturedStdout&) = delete;
  CapturedStdout& operator=(const CapturedStdout&) = delete;
  ~CapturedStdout() { restore(); }

  bool ok() const { return saved_ >= 0 && file_ != nullptr; }

  std::string text() {
    restore();
    if (file_ == nullptr) return {};
    std::rewind(file_);
    std::string out;
    char chunk[4096];
    for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, file_)) > 0;) out.append(chunk, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stdout);
    dup2(saved_, STDOUT_FILENO);
    close(saved_);
    saved_ = -1;
  }

  int saved_ = -1;
  std::FILE* file_ = nullptr;
};

// One life of a pair over TCP: a receiver starts, a sender connects, sends
// a batch that lands, and leaves; then the receiver stops. An error says
// which step failed.
Status live_one_life() {
  auto receiver =
      BatchReceiver::start({.listen_address = "127.0.0.1:0", .slot_bytes = 4096, .slot_count = 8});
  if (!receiver.is_ok()) return receiver.status();
  auto sender = BatchSender::connect({.receiver_address = (*receiver)->address()});
  if (!sender.is_ok()) return sender.status();
  std::vector<std::byte> payload(1000);
  STOKER_RETURN_IF_ERROR(
      (*sender)->post(testing::byte_batch(payload.size()), payload, nullptr, 5s));
  if (auto batch = (*receiver)->next(5s); !batch.is_ok()) return batch.status();
  return (*sender)->close(5s);
}

// A receiver flushes its worker as it stops only while a sender may be
// connecting its data endpoint: flushing the data endpoints of senders that
// have already left fails, and UCX logs each failure as an ERROR. Whether
// UCX has seen the TCP connection close by then is a race, so the test
// repeats the life of a pair.
TEST(ReceiverStop, AfterItsSendersLeftNothingIsLogged) {
  setenv("UCX_TLS", "tcp", 1);
  constexpr int kLives = 100;
  Status lived;
  CapturedStdout captured;
  ASSERT_TRUE(captured.ok());
  for (int life = 0; life < kLives && lived.is_ok(); ++life) lived = live_one_life();
  const std::string logged = captured.text();  // gtest prints to stdout too: restore it first
  ASSERT_TRUE(lived.is_ok()) << lived.to_string();
  EXPECT_EQ(logged.find("UCX"), std::string::npos) << logged;
}

}  // namespace
}  // namespace stoker
