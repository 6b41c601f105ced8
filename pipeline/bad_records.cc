// Bad-record names, counting and the skip/fail policy.
#include "pipeline/bad_records.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace stoker::pipeline {

std::string_view bad_record_reason_name(BadRecordReason reason) {
  switch (reason) {
    case BadRecordReason::kCrcMismatch:
      return "crc_mismatch";
    case BadRecordReason::kTruncated:
      return "truncated";
    case BadRecordReason::kUndecodableImage:
      return "undecodable_image";
    case BadRecordReason::kWrongImageSize:
      return "wrong_image_size";
    case BadRecordReason::kLabelOutOfRange:
      return "label_out_of_range";
    case BadRecordReason::kMalformedRecord:
      return "malformed_record";
    case BadRecordReason::kTokenOutOfRange:
      return "token_out_of_range";
  }
  return "unknown";
}

uint64_t BadRecordCounts::total() const {
  uint64_t n = 0;
  for (uint64_t c : by_reason) n += c;
  return n;
}

std::string BadRecord::to_string() const {
  return fmt::format("{} at byte {}: {}: {}", file, offset, bad_record_reason_name(reason), detail);
}

Status BadRecordLedger::report(const BadRecord& record, BadRecordPolicy policy) {
  const uint64_t n =
      counts_[static_cast<size_t>(record.reason)].fetch_add(1, std::memory_order_relaxed);
  if (policy == BadRecordPolicy::kFail) {
    return data_loss(fmt::format("bad record: {}", record.to_string()));
  }
  // The first few of each kind, then every 1000th: a corrupt shard must not
  // become a flood of log lines.
  if (n < 10 || (n + 1) % 1000 == 0) {
    spdlog::warn("pipeline: skipped bad record #{} of its kind: {}", n + 1, record.to_string());
  }
  return Status::ok();
}

BadRecordCounts BadRecordLedger::counts() const {
  BadRecordCounts out;
  for (size_t i = 0; i < kBadRecordReasonCount; ++i) {
    out.by_reason[i] = counts_[i].load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace stoker::pipeline
