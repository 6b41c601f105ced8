// libarchive glue. The reader feeds libarchive from a file descriptor with
// pread at an explicit position, so it can start at any header and so
// skipping a member's data is a seek, not a read.
#include "pipeline/tar_shard.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace stoker::pipeline {
namespace {

la_ssize_t io_read(struct archive*, void* data, const void** buffer) {
  auto* io = static_cast<TarReader::Io*>(data);
  const auto n =
      static_cast<size_t>(std::min<uint64_t>(io->block, io->size - std::min(io->pos, io->size)));
  if (n == 0) {
    *buffer = io->buffer.get();
    return 0;
  }
  ssize_t got;
  do {
    got = ::pread(io->fd.get(), io->buffer.get(), n, static_cast<off_t>(io->pos));
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    io->error = errno;
    return -1;
  }
  io->pos += static_cast<uint64_t>(got);
  *buffer = io->buffer.get();
  return got;
}

la_int64_t io_skip(struct archive*, void* data, la_int64_t request) {
  auto* io = static_cast<TarReader::Io*>(data);
  const uint64_t left = io->size - std::min(io->pos, io->size);
  const auto n = std::min<uint64_t>(static_cast<uint64_t>(request), left);
  io->pos += n;
  return static_cast<la_int64_t>(n);
}

}  // namespace

std::pair<std::string_view, std::string_view> split_sample_name(std::string_view path) {
  const size_t slash = path.rfind('/');
  const size_t base = slash == std::string_view::npos ? 0 : slash + 1;
  const size_t dot = path.find('.', base);
  if (dot == std::string_view::npos) return {path, {}};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

Result<std::unique_ptr<TarReader>> TarReader::open(const std::string& path, uint64_t start,
                                                   size_t read_block) {
  std::unique_ptr<TarReader> r(new TarReader());
  r->path_ = path;
  r->start_ = start;
  r->io_.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!r->io_.fd.valid()) {
    const std::string m = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return errno == ENOENT ? not_found(m) : io_error(m);
  }
  struct stat st {};
  if (::fstat(r->io_.fd.get(), &st) != 0) {
    return io_error(fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
  }
  r->io_.size = static_cast<uint64_t>(st.st_size);
  r->io_.pos = start;
  r->io_.block = std::max<size_t>(read_block, 4096);
  r->io_.buffer.reset(new std::byte[r->io_.block]);
  r->archive_ = archive_read_new();
  if (r->archive_ == nullptr) return resource_exhausted("archive_read_new failed");
  archive_read_support_format_tar(r->archive_);
  archive_read_set_callback_data(r->archive_, &r->io_);
  archive_read_set_read_callback(r->archive_, io_read);
  archive_read_set_skip_callback(r->archive_, io_skip);
  if (archive_read_open1(r->archive_) != ARCHIVE_OK && start < r->io_.size) {
    // Not recognisable as tar from here: damage, which the first next()
    // reports as a problem with the record (an empty remainder is a valid,
    // empty archive).
    const char* message = archive_error_string(r->archive_);
    r->open_problem_ = RecordProblem{
        BadRecordReason::kMalformedRecord,
        fmt::format("not a tar archive from here: {}", message ? message : "unknown error")};
  }
  return r;
}

TarReader::~TarReader() {
  if (archive_ != nullptr) archive_read_free(archive_);
}

RecordProblem TarReader::classify(std::string_view what) const {
  const char* message = archive_error_string(archive_);
  const std::string detail = fmt::format("{}: {}", what, message ? message : "unknown error");
  if (io_.error != 0) return {BadRecordReason::kTruncated, detail};
  // libarchive says "Truncated tar archive" when the file ends inside a member.
  if (message != nullptr && (std::strstr(message, "runcated") != nullptr ||
                             std::strstr(message, "premature") != nullptr)) {
    return {BadRecordReason::kTruncated, detail};
  }
  return {BadRecordReason::kMalformedRecord, detail};
}

TarReader::Step TarReader::next(TarMember& member, RecordProblem& problem) {
  if (open_problem_) {
    problem = *open_problem_;
    return Step::kProblem;
  }
  struct archive_entry* entry = nullptr;
  const int rc = archive_read_next_header(archive_, &entry);
  if (rc == ARCHIVE_EOF) return Step::kEnd;
  if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
    problem = classify("reading a member header");
    return Step::kProblem;
  }
  const char* name = archive_entry_pathname(entry);
  member.path = name != nullptr ? name : "";
  member.size = static_cast<uint64_t>(std::max<la_int64_t>(archive_entry_size(entry), 0));
  member.header_offset = start_ + static_cast<uint64_t>(archive_read_header_position(archive_));
  member.regular = archive_entry_filetype(entry) == AE_IFREG;
  member_size_ = member.size;
  member_offset_ = member.header_offset;
  return Step::kMember;
}

TarReader::Step TarReader::read_data(std::string& out, RecordProblem& problem) {
  // The size is the header's claim: pax and GNU headers can set any "real
  // size" (GNU.sparse.size, SCHILY.realsize), and libarchive fills sparse
  // holes with zeros. Refuse what no member of this file can hold, and grow
  // the buffer only as data arrives.
  const uint64_t left = io_.size - std::min(member_offset_, io_.size);
  if (member_size_ > left || member_size_ > kMaxRecordBytes) {
    problem = {BadRecordReason::kMalformedRecord,
               member_size_ > left
                   ? fmt::format("the header claims {} bytes of data, more than the {} left in "
                                 "the file",
                                 member_size_, left)
                   : fmt::format("the header claims {} bytes of data, more than the {} a record "
                                 "may have",
                                 member_size_, kMaxRecordBytes)};
    return Step::kProblem;
  }
  constexpr size_t kChunk = size_t{1} << 20;
  const auto size = static_cast<size_t>(member_size_);
  out.clear();
  while (out.size() < size) {
    const size_t done = out.size();
    out.resize(done + std::min(kChunk, size - done));
    const la_ssize_t n = archive_read_data(archive_, out.data() + done, out.size() - done);
    if (n < 0) {
      problem = classify("reading member data");
      return Step::kProblem;
    }
    if (n == 0) {
      problem = {BadRecordReason::kTruncated,
                 fmt::format("reading member data: {} of {} bytes", done, size)};
      return Step::kProblem;
    }
    out.resize(done + static_cast<size_t>(n));
  }
  return Step::kMember;
}

Result<std::unique_ptr<TarWriter>> TarWriter::create(const std::string& path) {
  std::unique_ptr<TarWriter> w(new TarWriter());
  w->path_ = path;
  w->archive_ = archive_write_new();
  if (w->archive_ == nullptr) return resource_exhausted("archive_write_new failed");
  archive_write_set_format_pax_restricted(w->archive_);
  archive_write_set_bytes_in_last_block(w->archive_, 1);
  if (archive_write_open_filename(w->archive_, path.c_str()) != ARCHIVE_OK) {
    return io_error(fmt::format("cannot create {}: {}", path, archive_error_string(w->archive_)));
  }
  return w;
}

TarWriter::~TarWriter() {
  if (archive_ != nullptr) archive_write_free(archive_);  // closes if still open
}

Status TarWriter::add(std::string_view name, std::string_view data) {
  if (archive_ == nullptr) return failed_precondition(fmt::format("{} is closed", path_));
  struct archive_entry* entry = archive_entry_new();
  if (entry == nullptr) return resource_exhausted("archive_entry_new failed");
  archive_entry_copy_pathname(entry, std::string(name).c_str());
  archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_entry_set_mtime(entry, 0, 0);  // reproducible shards
  Status st;
  if (archive_write_header(archive_, entry) != ARCHIVE_OK ||
      archive_write_data(archive_, data.data(), data.size()) !=
          static_cast<la_ssize_t>(data.size())) {
    st = io_error(
        fmt::format("writing {} into {}: {}", name, path_, archive_error_string(archive_)));
  }
  archive_entry_free(entry);
  return st;
}

Status TarWriter::close() {
  if (archive_ == nullptr) return Status::ok();
  Status st;
  if (archive_write_close(archive_) != ARCHIVE_OK) {
    st = io_error(fmt::format("closing {}: {}", path_, archive_error_string(archive_)));
  }
  archive_write_free(archive_);
  archive_ = nullptr;
  return st;
}

}  // namespace stoker::pipeline
