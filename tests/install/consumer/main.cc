// Pushes one batch through an installed stoker over loopback and checks what
// landed, using only the installed public headers. Prints
// "install consumer: OK" and exits 0, or prints what went wrong and exits 1.
#include <stoker/batch_descriptor.h>
#include <stoker/batch_receiver.h>
#include <stoker/batch_sender.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr size_t kPayloadBytes = 4096;
constexpr std::chrono::milliseconds kTimeout{10'000};

int fail(const std::string& what) {
  std::fprintf(stderr, "install consumer: FAILED: %s\n", what.c_str());
  return 1;
}

std::byte pattern(size_t i) { return static_cast<std::byte>((i * 31 + 7) & 0xFF); }

}  // namespace

int main() {
  stoker::ReceiverOptions receiver_options;
  receiver_options.listen_address = "127.0.0.1:0";
  receiver_options.slot_bytes = 64 * 1024;
  receiver_options.slot_count = 4;
  receiver_options.credits_per_sender = 2;
  auto receiver = stoker::BatchReceiver::start(receiver_options);
  if (!receiver) return fail("starting the receiver: " + receiver.status().to_string());

  stoker::SenderOptions sender_options;
  sender_options.receiver_address = "127.0.0.1:" + std::to_string((*receiver)->port());
  sender_options.name = "install-consumer";
  auto sender = stoker::BatchSender::connect(sender_options);
  if (!sender) return fail("connecting the sender: " + sender.status().to_string());

  stoker::BatchDescriptor sent;
  sent.job_id = 7;
  sent.split_id = 1;
  sent.sequence = 42;
  sent.round = 3;
  sent.payload_bytes = kPayloadBytes;
  const uint64_t shape[] = {64, 64};
  if (auto st = sent.add_tensor("pixels", stoker::DType::kUInt8, shape, 0); !st) {
    return fail("building the descriptor: " + st.to_string());
  }
  std::vector<std::byte> payload(kPayloadBytes);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = pattern(i);

  std::optional<stoker::Status> completion;
  if (auto st = (*sender)->post(
          sent, payload, [&](const stoker::Status& s) { completion = s; }, kTimeout);
      !st) {
    return fail("posting the batch: " + st.to_string());
  }
  if (auto st = (*sender)->flush(kTimeout); !st) return fail("flushing: " + st.to_string());
  if (!completion) return fail("flush returned before the completion ran");
  if (!*completion) return fail("sending the batch: " + completion->to_string());

  auto landed = (*receiver)->next(kTimeout);
  if (!landed) return fail("receiving the batch: " + landed.status().to_string());
  const stoker::BatchDescriptor& got = landed->descriptor();
  if (got.job_id != 7 || got.split_id != 1 || got.sequence != 42 || got.round != 3 ||
      got.payload_bytes != kPayloadBytes || got.tensor_count != 1) {
    return fail("the landed descriptor differs from the one sent");
  }
  const stoker::TensorDescriptor& tensor = got.tensors[0];
  if (tensor.name_view() != "pixels" || tensor.dtype != stoker::DType::kUInt8 || tensor.ndim != 2 ||
      tensor.shape[0] != 64 || tensor.shape[1] != 64 || tensor.offset != 0 ||
      tensor.bytes != kPayloadBytes) {
    return fail("the landed tensor entry differs from the one sent");
  }
  const auto bytes = landed->tensor_bytes(0);
  if (bytes.size() != kPayloadBytes) return fail("the landed tensor has the wrong size");
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != pattern(i)) return fail("payload byte " + std::to_string(i) + " differs");
  }
  landed->release();

  if (auto st = (*sender)->close(kTimeout); !st) return fail("closing: " + st.to_string());
  std::printf("install consumer: OK\n");
  return 0;
}
