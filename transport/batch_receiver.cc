// BatchReceiver and LandedBatch: the public faces of a receiver's shards
// (ReceiverCore), which BatchReceiver starts, feeds from one landed queue and
// stops.
#include "stoker/batch_receiver.h"

#include <fmt/format.h>

#include <numeric>

#include "transport/landed_queue.h"
#include "transport/receiver_core.h"

namespace stoker {

std::string_view reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::kMalformedDescriptor:
      return "malformed_descriptor";
    case RejectReason::kUnsupportedVersion:
      return "unsupported_version";
    case RejectReason::kPayloadMismatch:
      return "payload_mismatch";
    case RejectReason::kOversizedBatch:
      return "oversized_batch";
    case RejectReason::kNoCredit:
      return "no_credit";
    case RejectReason::kUnknownSender:
      return "unknown_sender";
    case RejectReason::kLandingFailed:
      return "landing_failed";
    case RejectReason::kUnauthorized:
      return "unauthorized";
  }
  return "unknown";
}

uint64_t ReceiverStats::rejected_total() const {
  return std::accumulate(rejected.begin(), rejected.end(), uint64_t{0});
}

LandedBatch::LandedBatch(LandedBatch&& other) noexcept { *this = std::move(other); }

LandedBatch& LandedBatch::operator=(LandedBatch&& other) noexcept {
  if (this != &other) {
    release();
    core_ = std::move(other.core_);
    slot_ = other.slot_;
    producer_id_ = other.producer_id_;
    sender_id_ = other.sender_id_;
    memory_kind_ = other.memory_kind_;
    descriptor_ = other.descriptor_;
    payload_ = other.payload_;
  }
  return *this;
}

std::span<std::byte> LandedBatch::tensor_bytes(size_t i) const {
  if (i >= descriptor_.tensor_count) return {};
  const TensorDescriptor& t = descriptor_.tensors[i];
  return payload_.subspan(t.offset, t.bytes);
}

void LandedBatch::release() {
  if (core_ == nullptr) return;
  core_->release(slot_);
  core_.reset();
  payload_ = {};
}

Result<std::unique_ptr<BatchReceiver>> BatchReceiver::start(ReceiverOptions options) {
  const uint32_t threads = options.progress_threads;
  if (threads == 0) return invalid_argument("a receiver needs at least one progress thread");
  STOKER_RETURN_IF_ERROR(ucx::check_busy_poll(options.busy_poll));
  if (size_t pool_bytes = 0;
      __builtin_mul_overflow(options.slot_bytes, size_t{options.slot_count}, &pool_bytes)) {
    return invalid_argument(fmt::format("{} slots of {} bytes overflow a pool's size",
                                        options.slot_count, options.slot_bytes));
  }
  if (threads > 1 && options.slot_count / threads < options.credits_per_sender) {
    return invalid_argument(fmt::format(
        "{} slots shared by {} progress threads leave {} each, fewer than credits_per_sender ({})",
        options.slot_count, threads, options.slot_count / threads, options.credits_per_sender));
  }
  if (!options.context) {
    // One UCX context for every shard: a sender handed from one to another
    // is accepted on a worker of the listener's context.
    STOKER_ASSIGN_OR_RETURN(options.context, TransportContext::create());
  }
  auto landed = std::make_shared<detail::LandedQueue>();
  auto streaming = std::make_shared<std::atomic<uint32_t>>(0);
  // Shards 1.. first: shard 0 starts listening as it is created and hands
  // senders to the others at once.
  std::vector<std::shared_ptr<detail::ReceiverCore>> shards(threads);
  std::vector<detail::ReceiverCore*> siblings(threads, nullptr);
  for (uint32_t k = threads; k-- > 0;) {
    ReceiverOptions part = options;
    part.slot_count = options.slot_count / threads + (k < options.slot_count % threads ? 1 : 0);
    auto shard = detail::ReceiverCore::create(
        std::move(part), {.shard = k,
                          .shard_count = threads,
                          .landed = landed,
                          .siblings = k == 0 ? siblings : std::vector<detail::ReceiverCore*>{},
                          .streaming = streaming});
    if (!shard.is_ok()) {
      for (auto& started : shards) {
        if (started) started->stop();
      }
      return shard.status();
    }
    shards[k] = std::move(shard).value();
    siblings[k] = shards[k].get();
  }
  return std::unique_ptr<BatchReceiver>(new BatchReceiver(std::move(shards), std::move(landed)));
}

BatchReceiver::BatchReceiver(std::vector<std::shared_ptr<detail::ReceiverCore>> shards,
                             std::shared_ptr<detail::LandedQueue> landed)
    : shards_(std::move(shards)), landed_(std::move(landed)) {}

BatchReceiver::~BatchReceiver() {
  // Shard 0 first: it stops handing senders to the others.
  for (auto& shard : shards_) shard->stop();
  landed_->stop();
}

std::string BatchReceiver::address() const { return shards_[0]->address(); }
uint16_t BatchReceiver::port() const { return shards_[0]->port(); }
MemoryKind BatchReceiver::memory_kind() const { return shards_[0]->memory_kind(); }

Result<LandedBatch> BatchReceiver::next(std::chrono::milliseconds timeout) {
  STOKER_ASSIGN_OR_RETURN(auto landed, landed_->pop(timeout));
  return shards_[landed.shard]->take(landed.slot);
}

ReceiverStats BatchReceiver::stats() const {
  ReceiverStats total;
  for (const auto& shard : shards_) {
    const ReceiverStats s = shard->stats();
    total.batches_landed += s.batches_landed;
    total.bytes_landed += s.bytes_landed;
    for (size_t i = 0; i < kRejectReasonCount; ++i) total.rejected[i] += s.rejected[i];
    total.senders_connected += s.senders_connected;
    total.senders_finished += s.senders_finished;
    total.senders_failed += s.senders_failed;
    total.slots_free += s.slots_free;
    total.senders_by_thread.push_back(shard->senders_served());
  }
  return total;
}

}  // namespace stoker
