// IDX through zlib's gzread, which also reads uncompressed files as they are.
#include "pipeline/idx_file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "pipeline/file_util.h"

namespace stoker::pipeline {
namespace {

constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 34;

class GzFile {
 public:
  explicit GzFile(gzFile f) : f_(f) {}
  GzFile(GzFile&& o) noexcept : f_(std::exchange(o.f_, nullptr)) {}
  GzFile& operator=(GzFile&&) = delete;
  ~GzFile() {
    if (f_ != nullptr) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  gzFile get() const { return f_; }

 private:
  gzFile f_;
};

Result<GzFile> open_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    const std::string m = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return errno == ENOENT ? not_found(m) : io_error(m);
  }
  gzbuffer(f, 1 << 17);
  return Result<GzFile>(GzFile(f));
}

// Reads up to n bytes; returns how many, and the zlib error if the stream broke.
size_t gz_read(gzFile f, char* out, size_t n, int& error, std::string& message) {
  size_t done = 0;
  error = Z_OK;
  while (done < n) {
    const auto chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    const int got = gzread(f, out + done, chunk);
    if (got < 0) {
      const char* m = gzerror(f, &error);
      message = m != nullptr ? m : "unknown zlib error";
      break;
    }
    if (got == 0) {
      // End of stream; a truncated gzip member reports itself through gzerror.
      const char* m = gzerror(f, &error);
      if (error != Z_OK) message = m != nullptr ? m : "unknown zlib error";
      break;
    }
    done += static_cast<size_t>(got);
  }
  return done;
}

Result<IdxHeader> parse_header(gzFile f, const std::string& path) {
  unsigned char head[4];
  int error = Z_OK;
  std::string message;
  if (gz_read(f, reinterpret_cast<char*>(head), 4, error, message) != 4) {
    return data_loss(fmt::format("{}: too short for an IDX header", path));
  }
  if (head[0] != 0 || head[1] != 0 || head[3] == 0 || head[3] > 8) {
    return data_loss(fmt::format("{}: not an IDX file (magic {:02x}{:02x}{:02x}{:02x})", path,
                                 head[0], head[1], head[2], head[3]));
  }
  IdxHeader h;
  h.type = head[2];
  if (h.type != 0x08) {
    return unsupported(
        fmt::format("{}: IDX type {:#04x}; only unsigned bytes (0x08) are read", path, h.type));
  }
  unsigned char dims[32];
  const size_t want = size_t{head[3]} * 4;
  if (gz_read(f, reinterpret_cast<char*>(dims), want, error, message) != want) {
    return data_loss(fmt::format("{}: the IDX header is truncated", path));
  }
  const size_t n = head[3];
  uint32_t d[8];
  for (size_t i = 0; i < n; ++i) {
    d[i] = uint32_t{dims[4 * i]} << 24 | uint32_t{dims[4 * i + 1]} << 16 |
           uint32_t{dims[4 * i + 2]} << 8 | uint32_t{dims[4 * i + 3]};
  }
  h.dims.assign(d, d + n);
  h.header_bytes = 4 + want;
  // Checked: up to eight uint32 dimensions overflow uint64. The item size is
  // checked on its own, since a zero count would hide an overflowing one.
  uint64_t item = 1;
  for (size_t i = 1; i < n; ++i) {
    if (d[i] == 0 || item > kMaxIdxBytes / d[i]) {
      return data_loss(fmt::format("{}: IDX dimensions [{}] give an impossible item size", path,
                                   fmt::join(h.dims, ", ")));
    }
    item *= d[i];
  }
  if (d[0] > kMaxIdxBytes / item) {
    return data_loss(fmt::format("{}: IDX dimensions [{}] make more than {} bytes", path,
                                 fmt::join(h.dims, ", "), kMaxIdxBytes));
  }
  return h;
}

}  // namespace

uint64_t IdxHeader::item_bytes() const {
  uint64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

Result<IdxHeader> read_idx_header(const std::string& path) {
  STOKER_ASSIGN_OR_RETURN(GzFile f, open_gz(path));
  return parse_header(f.get(), path);
}

Result<IdxFile> read_idx(const std::string& path) {
  STOKER_ASSIGN_OR_RETURN(GzFile f, open_gz(path));
  IdxFile out;
  STOKER_ASSIGN_OR_RETURN(out.header, parse_header(f.get(), path));
  const uint64_t want = uint64_t{out.header.dims[0]} * out.header.item_bytes();
  // The count is the header's claim: grow the buffer as data arrives, so a
  // lying header costs what the file holds, not what it promises. The file's
  // size is all an uncompressed file can hold, and a start for a gzip one.
  if (auto st = stat_file(path); st.is_ok()) {
    out.data.reserve(static_cast<size_t>(std::min(want, st->size)));
  }
  constexpr size_t kChunk = size_t{1} << 20;
  int error = Z_OK;
  std::string message;
  size_t got = 0;
  while (got < want) {
    const auto n = static_cast<size_t>(std::min<uint64_t>(kChunk, want - got));
    out.data.resize(got + n);
    const size_t read = gz_read(f.get(), out.data.data() + got, n, error, message);
    got += read;
    if (read < n) break;
  }
  out.data.resize(got);
  if (got < want) {
    const BadRecordReason reason =
        error == Z_DATA_ERROR ? BadRecordReason::kCrcMismatch : BadRecordReason::kTruncated;
    out.damage =
        RecordProblem{reason, fmt::format("the data ends after {} of {} bytes{}", got, want,
                                          message.empty() ? "" : fmt::format(" ({})", message))};
  } else if (error == Z_OK) {
    // All items are there; a corrupt gzip trailer still makes the file suspect.
    char extra;
    gz_read(f.get(), &extra, 1, error, message);
    if (error == Z_DATA_ERROR) {
      out.damage = RecordProblem{BadRecordReason::kCrcMismatch,
                                 fmt::format("the gzip stream is corrupt: {}", message)};
      out.data.clear();
    }
  }
  return out;
}

Status write_idx(const std::string& path, const std::vector<uint32_t>& dims,
                 std::string_view data) {
  std::string out;
  out.push_back('\0');
  out.push_back('\0');
  out.push_back('\x08');
  out.push_back(static_cast<char>(dims.size()));
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(d >> shift));
  }
  out.append(data);
  return write_file_atomic(path, std::as_bytes(std::span(out)));
}

}  // namespace stoker::pipeline
