// TFRecord framing: per record, a little-endian uint64 length, the masked
// CRC32C of those 8 bytes, the data, and the masked CRC32C of the data.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/bad_records.h"
#include "pipeline/file_util.h"
#include "pipeline/record_index.h"
#include "stoker/result.h"

namespace stoker::pipeline {

inline constexpr size_t kTFRecordHeaderBytes = 12;  // length + its CRC
inline constexpr size_t kTFRecordFooterBytes = 4;   // the data's CRC
inline constexpr size_t kTFRecordFramingBytes = kTFRecordHeaderBytes + kTFRecordFooterBytes;

// Appends one framed record to `out`.
void append_tfrecord(std::string& out, std::string_view data);

// Writes a TFRecord file, buffered. The file is complete once close()
// returns OK (the destructor closes too, but cannot report a failure).
class TFRecordWriter {
 public:
  static Result<TFRecordWriter> create(const std::string& path);
  TFRecordWriter(TFRecordWriter&&) = default;
  TFRecordWriter& operator=(TFRecordWriter&&) = delete;
  ~TFRecordWriter() { (void)close(); }
  Status write(std::string_view data);
  Status close();
  uint64_t records() const { return records_; }

 private:
  TFRecordWriter(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  Status flush();
  UniqueFd fd_;
  std::string path_;
  std::string buffer_;
  uint64_t records_ = 0;
};

// Scans the framing of a TFRecord file (lengths and their CRCs; data is
// skipped) into an index.
Result<ShardIndex> scan_tfrecord(const std::string& path);

// Checks one framed record (header, data, footer) whose data should be
// `length` bytes; on success `data` is the record's data.
std::optional<RecordProblem> check_tfrecord_frame(std::span<const std::byte> frame, uint64_t length,
                                                  std::string_view& data);

}  // namespace stoker::pipeline
