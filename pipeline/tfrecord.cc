// TFRecord reading (framing checks, index scan) and writing.
#include "pipeline/tfrecord.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/byte_codec.h"
#include "common/crc32c.h"

namespace stoker::pipeline {
namespace {

std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

constexpr size_t kWriteBuffer = size_t{4} << 20;

}  // namespace

void append_tfrecord(std::string& out, std::string_view data) {
  std::byte header[kTFRecordHeaderBytes];
  wire::ByteWriter w(header);
  w.put(static_cast<uint64_t>(data.size()));
  w.put(mask_crc32c(crc32c(std::span(header).first(8))));
  out.append(reinterpret_cast<const char*>(header), sizeof header);
  out.append(data);
  std::byte footer[kTFRecordFooterBytes];
  wire::ByteWriter f(footer);
  f.put(mask_crc32c(crc32c(as_bytes(data))));
  out.append(reinterpret_cast<const char*>(footer), sizeof footer);
}

Result<TFRecordWriter> TFRecordWriter::create(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return io_error(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  }
  return TFRecordWriter(std::move(fd), path);
}

Status TFRecordWriter::write(std::string_view data) {
  if (!fd_.valid()) return failed_precondition(fmt::format("{} is closed", path_));
  append_tfrecord(buffer_, data);
  ++records_;
  if (buffer_.size() >= kWriteBuffer) return flush();
  return Status::ok();
}

Status TFRecordWriter::flush() {
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_.get(), buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error(fmt::format("writing {}: {}", path_, std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
  return Status::ok();
}

Status TFRecordWriter::close() {
  if (!fd_.valid()) return Status::ok();
  Status st = flush();
  if (::close(fd_.release()) != 0 && st.is_ok()) {
    st = io_error(fmt::format("closing {}: {}", path_, std::strerror(errno)));
  }
  return st;
}

Result<ShardIndex> scan_tfrecord(const std::string& path) {
  // Only the 12-byte headers are needed. Runs of small records are read a
  // window at a time; for large records (images) a window would mostly hold
  // data to skip, so each header is read on its own.
  constexpr size_t kSmallWindow = size_t{4} << 10;
  constexpr size_t kLargeWindow = size_t{256} << 10;
  constexpr uint64_t kLargeRecord = uint64_t{16} << 10;
  STOKER_ASSIGN_OR_RETURN(FileReader file, FileReader::open(path, kLargeWindow));
  ShardIndex index;
  uint64_t offset = 0;
  const uint64_t size = file.size();
  std::vector<std::byte> window;
  uint64_t window_at = 0;
  while (offset < size) {
    const uint64_t left = size - offset;
    if (left < kTFRecordHeaderBytes) {
      index.tail_reason = BadRecordReason::kTruncated;
      index.tail_detail = fmt::format("the file ends {} bytes into a record header", left);
      break;
    }
    if (offset < window_at || offset + kTFRecordHeaderBytes > window_at + window.size()) {
      const uint64_t records = index.offsets.size();
      const bool large = records > 0 && offset / records > kLargeRecord;
      window.resize(
          static_cast<size_t>(std::min<uint64_t>(large ? kSmallWindow : kLargeWindow, left)));
      STOKER_RETURN_IF_ERROR(file.read_into(offset, window));
      window_at = offset;
    }
    const auto header =
        std::span<const std::byte>(window).subspan(offset - window_at, kTFRecordHeaderBytes);
    wire::ByteReader r(header);
    const uint64_t length = r.get<uint64_t>();
    const uint32_t stored = r.get<uint32_t>();
    const uint32_t actual = mask_crc32c(crc32c(header.first(8)));
    if (stored != actual) {
      index.tail_reason = BadRecordReason::kCrcMismatch;
      index.tail_detail = fmt::format(
          "length CRC {:#010x} != stored {:#010x}: the rest of the file cannot be framed", actual,
          stored);
      break;
    }
    if (left < kTFRecordFramingBytes || length > left - kTFRecordFramingBytes) {
      index.tail_reason = BadRecordReason::kTruncated;
      index.tail_detail = fmt::format("a record of {} bytes, {} bytes left in the file", length,
                                      left - kTFRecordHeaderBytes);
      break;
    }
    index.offsets.push_back(offset);
    offset += kTFRecordFramingBytes + length;
  }
  index.tail_offset = offset;
  index.offsets.push_back(offset);  // the end of the last good record
  return index;
}

std::optional<RecordProblem> check_tfrecord_frame(std::span<const std::byte> frame, uint64_t length,
                                                  std::string_view& data) {
  if (frame.size() != length + kTFRecordFramingBytes) {
    return RecordProblem{BadRecordReason::kTruncated,
                         fmt::format("{} of the record's {} bytes are left in the file",
                                     frame.size(), length + kTFRecordFramingBytes)};
  }
  wire::ByteReader r(frame);
  const uint64_t stored_length = r.get<uint64_t>();
  const uint32_t length_crc = r.get<uint32_t>();
  if (length_crc != mask_crc32c(crc32c(frame.first(8))) || stored_length != length) {
    return RecordProblem{BadRecordReason::kCrcMismatch,
                         "the length header changed since the shard was indexed"};
  }
  const auto payload = frame.subspan(kTFRecordHeaderBytes, length);
  wire::ByteReader f(frame.last(kTFRecordFooterBytes));
  const uint32_t stored = f.get<uint32_t>();
  const uint32_t actual = mask_crc32c(crc32c(payload));
  if (stored != actual) {
    return RecordProblem{BadRecordReason::kCrcMismatch,
                         fmt::format("data CRC {:#010x} != stored {:#010x}", actual, stored)};
  }
  data = std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size());
  return std::nullopt;
}

}  // namespace stoker::pipeline
