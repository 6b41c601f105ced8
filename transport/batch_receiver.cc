// BatchReceiver and LandedBatch: thin public faces of ReceiverCore.
#include "stoker/batch_receiver.h"

#include <numeric>

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
  STOKER_ASSIGN_OR_RETURN(auto core, detail::ReceiverCore::create(std::move(options)));
  return std::unique_ptr<BatchReceiver>(new BatchReceiver(std::move(core)));
}

BatchReceiver::~BatchReceiver() { core_->stop(); }

std::string BatchReceiver::address() const { return core_->address(); }
uint16_t BatchReceiver::port() const { return core_->port(); }
MemoryKind BatchReceiver::memory_kind() const { return core_->memory_kind(); }

Result<LandedBatch> BatchReceiver::next(std::chrono::milliseconds timeout) {
  return core_->next(timeout);
}

ReceiverStats BatchReceiver::stats() const { return core_->stats(); }

}  // namespace stoker
