// Bad records: what can be wrong with one record, how many of each a pipeline
// has met, and the one place that applies the policy (skip: count and log with
// a rate limit; fail: an error naming the file and byte offset).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "pipeline/pipeline_spec.h"
#include "stoker/status.h"

namespace stoker::pipeline {

enum class BadRecordReason : uint8_t {
  kCrcMismatch = 0,   // a TFRecord length or data CRC does not match
  kTruncated,         // the file ends inside the record
  kUndecodableImage,  // not a JPEG/PNG, or the decoder failed on it
  kWrongImageSize,    // not the size the spec expects, or too large to decode
  kLabelOutOfRange,   // label < 0 or >= num_classes
  kMalformedRecord,   // framing is fine but the content is not what the spec says
  kTokenOutOfRange,   // a token id outside int32
};
inline constexpr size_t kBadRecordReasonCount = 7;

// "crc_mismatch", "truncated", ...: the names used in logs and metrics.
std::string_view bad_record_reason_name(BadRecordReason reason);

struct BadRecordCounts {
  std::array<uint64_t, kBadRecordReasonCount> by_reason{};
  uint64_t operator[](BadRecordReason r) const { return by_reason[static_cast<size_t>(r)]; }
  uint64_t total() const;
};

// One bad record: where it is and what is wrong with it.
struct BadRecord {
  BadRecordReason reason = BadRecordReason::kMalformedRecord;
  std::string file;     // the file it lives in ("range", "synthetic" for generated data)
  uint64_t offset = 0;  // its byte offset in the file (the record index for generated data)
  std::string detail;   // what exactly: "data CRC 0x1234 != stored 0x5678"

  // "/data/a.tfrecord at byte 1234: crc_mismatch: data CRC ..."
  std::string to_string() const;
};

// What is wrong with a record, without saying where it is (the caller knows).
struct RecordProblem {
  BadRecordReason reason = BadRecordReason::kMalformedRecord;
  std::string detail;
};

// Counts bad records by reason and applies the policy. Thread-safe.
class BadRecordLedger {
 public:
  // kSkip: counts, logs the first few of each reason and then every 1000th,
  // returns OK. kFail: counts and returns kDataLoss naming file and offset.
  Status report(const BadRecord& record, BadRecordPolicy policy);
  BadRecordCounts counts() const;

 private:
  std::array<std::atomic<uint64_t>, kBadRecordReasonCount> counts_{};
};

}  // namespace stoker::pipeline
