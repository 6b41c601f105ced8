// Files for pipelines: windowed reads (a shard is streamed, never loaded
// whole), glob resolution of the spec's file lists, and atomic writes for
// index files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "stoker/result.h"

namespace stoker::pipeline {

struct FileStat {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
Result<FileStat> stat_file(const std::string& path);

// Reads byte ranges of one file through a read-ahead window, so that runs of
// small records cost one pread per window, not one per record.
class FileReader {
 public:
  static constexpr size_t kDefaultReadahead = size_t{1} << 20;
  static Result<FileReader> open(const std::string& path, size_t readahead = kDefaultReadahead);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  // Bytes [offset, offset + n), valid until the next call. Shorter than n
  // when the file ends first (empty at or past its end).
  Result<std::span<const std::byte>> read(uint64_t offset, size_t n);
  // Reads exactly [offset, offset + out.size()) into `out`, bypassing the
  // window; fails on a short read.
  Status read_into(uint64_t offset, std::span<std::byte> out);

 private:
  FileReader(UniqueFd fd, std::string path, uint64_t size, size_t readahead)
      : fd_(std::move(fd)), path_(std::move(path)), size_(size), readahead_(readahead) {}
  UniqueFd fd_;
  std::string path_;
  uint64_t size_ = 0;
  size_t readahead_ = kDefaultReadahead;
  std::vector<std::byte> window_;
  uint64_t window_offset_ = 0;
  size_t window_bytes_ = 0;
};

// `path` made absolute against `base_dir` (the working directory when empty).
std::string resolve_path(std::string_view path, std::string_view base_dir);

// The files matched by `patterns` (paths or glob patterns, relative ones
// against `base_dir`), deduplicated and sorted by path; index files and their
// temporaries (any file name containing ".stoker-index") are never matched.
// A pattern that matches nothing is an error naming it: a typo must not
// silently shrink a dataset.
Result<std::vector<std::string>> resolve_files(const std::vector<std::string>& patterns,
                                               std::string_view base_dir);

// The largest record read whole into memory (an image file, a tar member):
// sizes come from headers anyone can write, so larger ones are refused
// rather than allocated.
inline constexpr uint64_t kMaxRecordBytes = uint64_t{1} << 30;

// The whole file, refusing files larger than `max_bytes`.
Result<std::string> read_whole_file(const std::string& path, uint64_t max_bytes);

// Writes `bytes` to a temporary file next to `path` and renames it over
// `path`, so readers see either the old file or the whole new one.
Status write_file_atomic(const std::string& path, std::span<const std::byte> bytes);

// Makes `dir` and its parents.
Status make_directories(const std::string& dir);

}  // namespace stoker::pipeline
