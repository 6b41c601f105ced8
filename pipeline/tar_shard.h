// Tar archives through libarchive: a reader that can start at any member
// header (for record-range splits of WebDataset shards) and a writer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "pipeline/bad_records.h"
#include "pipeline/file_util.h"
#include "stoker/result.h"

struct archive;

namespace stoker::pipeline {

// WebDataset's sample key and extension of a member path: the key is the
// path up to the first dot of the base name, the extension what follows it
// ("a/b.c/x.seg.png" -> {"a/b.c/x", "seg.png"}).
std::pair<std::string_view, std::string_view> split_sample_name(std::string_view path);

struct TarMember {
  std::string path;
  uint64_t size = 0;
  uint64_t header_offset = 0;  // in the file
  bool regular = false;        // a regular file (directories and links are skipped)
};

// Reads members from a header at `start` on. Errors in the archive itself
// (a damaged header, the file ending inside a member) come back as a
// RecordProblem; I/O errors as a failed Status.
class TarReader {
 public:
  // `read_block`: bytes per read. Large for reading samples; small for
  // scanning headers, where most of a large block would be data to skip.
  static Result<std::unique_ptr<TarReader>> open(const std::string& path, uint64_t start,
                                                 size_t read_block = size_t{256} << 10);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  enum class Step : uint8_t { kMember, kEnd, kProblem };
  // The next member (skipping the previous one's unread data); on kProblem,
  // `problem` says what is wrong.
  Step next(TarMember& member, RecordProblem& problem);
  // The data of the member next() returned. A size claimed beyond
  // kMaxRecordBytes or the rest of the file is a malformed member.
  Step read_data(std::string& out, RecordProblem& problem);
  const std::string& path() const { return path_; }

  // libarchive callbacks.
  struct Io {
    UniqueFd fd;
    uint64_t pos = 0;  // file offset of the next read
    uint64_t size = 0;
    size_t block = 0;
    std::unique_ptr<std::byte[]> buffer;
    int error = 0;
  };

 private:
  TarReader() = default;
  RecordProblem classify(std::string_view what) const;
  std::string path_;
  uint64_t start_ = 0;
  uint64_t member_size_ = 0;    // as the header says: a claim, not a fact
  uint64_t member_offset_ = 0;  // of its header, in the file
  std::optional<RecordProblem> open_problem_;
  Io io_;
  struct archive* archive_ = nullptr;
};

// Writes a tar file (POSIX pax format, as Python's tarfile writes by default).
class TarWriter {
 public:
  static Result<std::unique_ptr<TarWriter>> create(const std::string& path);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;
  Status add(std::string_view name, std::string_view data);
  Status close();

 private:
  TarWriter() = default;
  std::string path_;
  struct archive* archive_ = nullptr;
};

}  // namespace stoker::pipeline
