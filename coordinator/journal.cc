// Journal: record framing, replay with torn-tail recovery, appends and sync.
#include "coordinator/journal.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/byte_codec.h"
#include "common/crc32c.h"
#include "common/unique_fd.h"

namespace stoker::coordinator {
namespace {

Status errno_status(std::string_view what) {
  return io_error(fmt::format("{}: {}", what, std::strerror(errno)));
}

// Writes `bytes` at `offset`. The journal never uses the file offset: an
// append goes after the last whole record whatever a failed one left.
Status write_at(int fd, std::span<const std::byte> bytes, uint64_t offset,
                const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(fmt::format("writing the journal {} at offset {}", path, offset));
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

Result<std::vector<std::byte>> read_file(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_status(fmt::format("stat of {}", path));
  std::vector<std::byte> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pread(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status(fmt::format("reading {}", path));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

uint32_t crc_of(std::span<const std::byte> bytes) { return mask_crc32c(crc32c(bytes)); }

// Appends `payload`, framed, to `out`; refuses one above the record limit.
Status frame(std::span<const std::byte> payload, std::vector<std::byte>& out) {
  if (payload.size() > kMaxRecordBytes) {
    return invalid_argument(fmt::format("journal record of {} bytes exceeds the {}-byte limit",
                                        payload.size(), kMaxRecordBytes));
  }
  const size_t at = out.size();
  out.resize(at + kRecordOverheadBytes + payload.size());
  const auto record = std::span(out).subspan(at);
  wire::ByteWriter w(record);
  const auto length = static_cast<uint32_t>(payload.size());
  w.put(length);
  w.put(crc_of(record.first(4)));
  w.put_bytes(payload);
  w.put(crc_of(payload));
  return Status::ok();
}

Status sync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return errno_status(fmt::format("fsync of the directory {}", dir));
  }
  return Status::ok();
}

bool all_zero(std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

std::vector<std::byte> file_header() {
  std::vector<std::byte> h(kJournalHeaderBytes);
  wire::ByteWriter w(h);
  w.put(kJournalMagic);
  w.put(kJournalVersion);
  w.put(uint16_t{0});
  w.put(uint64_t{0});
  return h;
}

// Writes a whole journal, header and `payloads`, to the empty file `fd` and
// syncs it; the bytes written. In pieces of a few MiB: a snapshot may be large.
Result<uint64_t> write_journal(int fd, std::span<const std::string> payloads,
                               const std::string& path) {
  constexpr size_t kChunk = size_t{4} << 20;
  std::vector<std::byte> buffer = file_header();
  uint64_t offset = 0;
  const auto flush = [&] {
    Status st = write_at(fd, buffer, offset, path);
    offset += buffer.size();
    buffer.clear();
    return st;
  };
  for (const std::string& payload : payloads) {
    STOKER_RETURN_IF_ERROR(frame(std::as_bytes(std::span(payload)), buffer));
    if (buffer.size() >= kChunk) STOKER_RETURN_IF_ERROR(flush());
  }
  STOKER_RETURN_IF_ERROR(flush());
  if (::fsync(fd) != 0) return errno_status(fmt::format("fsync of {}", path));
  return offset;
}

}  // namespace

Result<std::unique_ptr<Journal>> Journal::open(const std::string& dir, Durability durability,
                                               const Apply& apply, ReplayStats* stats) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error(fmt::format("creating the work dir {}: {}", dir, ec.message()));
  const std::string path = (std::filesystem::path(dir) / "journal.log").string();
  const std::string temporary = path + ".tmp";
  if (std::filesystem::remove(temporary, ec)) {
    spdlog::warn("journal {}: removed {}, a compaction that never took its place", path, temporary);
  }
  UniqueFd owned(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!owned.valid()) return errno_status(fmt::format("opening the journal {}", path));
  const int fd = owned.get();
  std::unique_ptr<Journal> journal(new Journal(dir, path, std::move(owned), durability));
  STOKER_ASSIGN_OR_RETURN(auto data, read_file(fd, path));
  ReplayStats local;
  ReplayStats& s = stats ? *stats : local;
  s = ReplayStats{};

  if (data.empty()) {
    STOKER_RETURN_IF_ERROR(write_at(fd, file_header(), 0, path));
    if (::fsync(fd) != 0) return errno_status(fmt::format("fsync of {}", path));
    journal->size_ = kJournalHeaderBytes;
    return journal;
  }
  const auto corrupt = [&](uint64_t offset, const std::string& what) {
    return data_loss(fmt::format(
        "the journal {} is damaged at offset {}: {}. Refusing to start: replaying past it would "
        "lose state. Move the file aside to start empty.",
        path, offset, what));
  };
  if (data.size() < kJournalHeaderBytes) {
    // A crash while the header was written: nothing was ever recorded.
    spdlog::warn("journal {}: {}-byte file has no complete header; starting empty", path,
                 data.size());
    if (::ftruncate(fd, 0) != 0) return errno_status(fmt::format("truncating {}", path));
    STOKER_RETURN_IF_ERROR(write_at(fd, file_header(), 0, path));
    journal->size_ = kJournalHeaderBytes;
    s.torn_tail_dropped = true;
    return journal;
  }
  {
    wire::ByteReader r(std::span<const std::byte>(data).first(kJournalHeaderBytes));
    const auto magic = r.get<uint32_t>();
    const auto version = r.get<uint16_t>();
    if (magic != kJournalMagic) return corrupt(0, "not a stoker journal (bad magic)");
    if (version != kJournalVersion) {
      return Status(StatusCode::kVersionMismatch,
                    fmt::format("the journal {} has format version {}; this build reads {}", path,
                                version, kJournalVersion));
    }
  }
  uint64_t offset = kJournalHeaderBytes;
  const std::span<const std::byte> all(data);
  while (offset < data.size()) {
    const auto rest = all.subspan(offset);
    const auto torn = [&](const std::string& why) {
      spdlog::warn("journal {}: dropping a torn record at offset {} ({} bytes): {}", path, offset,
                   rest.size(), why);
      s.torn_tail_dropped = true;
    };
    if (rest.size() < 8) {
      torn("incomplete record header");
      break;
    }
    wire::ByteReader r(rest);
    const auto length = r.get<uint32_t>();
    const auto length_crc = r.get<uint32_t>();
    if (crc_of(rest.first(4)) != length_crc) {
      if (all_zero(rest)) {
        torn("zero-filled tail");
        break;
      }
      return corrupt(offset, "the record length fails its checksum");
    }
    if (length > kMaxRecordBytes) {
      return corrupt(offset, fmt::format("record of {} bytes exceeds the {}-byte limit", length,
                                         kMaxRecordBytes));
    }
    if (rest.size() < kRecordOverheadBytes + length) {
      torn("the record runs past the end of the file");
      break;
    }
    const auto payload = rest.subspan(8, length);
    wire::ByteReader crc_reader(rest.subspan(8 + length, 4));
    if (crc_of(payload) != crc_reader.get<uint32_t>()) {
      // The last record, torn while written: nothing follows it, or only the
      // zeros of space the file system had already given the file.
      if (all_zero(rest.subspan(kRecordOverheadBytes + length))) {
        torn("the last record fails its checksum");
        break;
      }
      return corrupt(offset, "the record's payload fails its checksum");
    }
    if (Status st = apply(payload, offset); !st.is_ok()) {
      return st.with_context(fmt::format("replaying the journal {} at offset {}", path, offset));
    }
    ++s.records;
    s.bytes += kRecordOverheadBytes + length;
    offset += kRecordOverheadBytes + length;
  }
  if (offset < data.size()) {
    if (::ftruncate(fd, static_cast<off_t>(offset)) != 0) {
      return errno_status(fmt::format("cutting the torn tail off {}", path));
    }
  }
  journal->size_ = offset;
  return journal;
}

Journal::~Journal() {
  if (fd_.valid()) (void)sync();
}

Status Journal::append(std::span<const std::byte> payload) {
  if (!usable_) {
    return io_error(fmt::format(
        "the journal {} is unusable: a failed append left a partial record that could not be cut "
        "off",
        path_));
  }
  scratch_.clear();
  STOKER_RETURN_IF_ERROR(frame(payload, scratch_));
  if (Status st = write_at(fd_.get(), scratch_, size_, path_); !st.is_ok()) {
    // Part of the record may have reached the file (ENOSPC, EFBIG after a
    // short write). Cut it off: records appended after torn bytes would make
    // the next start refuse the whole journal as damaged.
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
      usable_ = false;
      return errno_status(
          fmt::format("cutting a failed append off the journal {} at offset {} ({}); the journal "
                      "is unusable",
                      path_, size_, st.message()));
    }
    return st;
  }
  size_ += scratch_.size();
  ++appended_;
  dirty_ = true;
  return Status::ok();
}

Status Journal::rewrite(std::span<const std::string> payloads) {
  if (!usable_) return io_error(fmt::format("the journal {} is unusable", path_));
  const std::string temporary = path_ + ".tmp";
  UniqueFd fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno_status(fmt::format("creating {}", temporary));
  auto written = write_journal(fd.get(), payloads, temporary);
  Status st = written.status();
  if (st.is_ok() && ::rename(temporary.c_str(), path_.c_str()) != 0) {
    st = errno_status(fmt::format("renaming {} over {}", temporary, path_));
  }
  if (!st.is_ok()) {
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    return st;
  }
  fd_ = std::move(fd);
  size_ = *written;
  dirty_ = false;
  // Until the directory is synced, a power loss may bring back the old
  // journal, losing whatever is appended to the new one.
  if (Status synced = sync_dir(dir_); !synced.is_ok()) {
    usable_ = false;
    return synced;
  }
  return Status::ok();
}

Status Journal::sync() {
  if (!dirty_ || durability_ != Durability::kSync) return Status::ok();
  if (::fdatasync(fd_.get()) != 0) return errno_status(fmt::format("fdatasync of {}", path_));
  dirty_ = false;
  return Status::ok();
}

}  // namespace stoker::coordinator
