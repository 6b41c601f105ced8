// POSIX file access for pipelines.
#include "pipeline/file_util.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

namespace stoker::pipeline {
namespace {

Status errno_status(std::string_view what, const std::string& path, int err) {
  const std::string message = fmt::format("{} {}: {}", what, path, std::strerror(err));
  return err == ENOENT ? not_found(message) : io_error(message);
}

// glob(3) owns memory: free it however we leave.
class GlobResult {
 public:
  GlobResult() { std::memset(&g_, 0, sizeof g_); }
  ~GlobResult() { globfree(&g_); }
  GlobResult(const GlobResult&) = delete;
  GlobResult& operator=(const GlobResult&) = delete;
  glob_t* get() { return &g_; }

 private:
  glob_t g_;
};

}  // namespace

Result<FileStat> stat_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno_status("cannot stat", path, errno);
  return FileStat{static_cast<uint64_t>(st.st_size),
                  int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
}

Result<FileReader> FileReader::open(const std::string& path, size_t readahead) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_status("cannot open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_status("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) return invalid_argument(fmt::format("{} is not a regular file", path));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return FileReader(std::move(fd), path, static_cast<uint64_t>(st.st_size), readahead);
}

Status FileReader::read_into(uint64_t offset, std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot read", path_, errno);
    }
    if (n == 0) {
      return data_loss(fmt::format("{}: file ends at byte {}, reading {} bytes at {}", path_,
                                   offset + done, out.size(), offset));
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<std::span<const std::byte>> FileReader::read(uint64_t offset, size_t n) {
  if (offset >= size_) return std::span<const std::byte>{};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  if (offset >= window_offset_ && offset + n <= window_offset_ + window_bytes_) {
    return std::span<const std::byte>(window_.data() + (offset - window_offset_), n);
  }
  const auto want =
      static_cast<size_t>(std::min<uint64_t>(std::max(n, readahead_), size_ - offset));
  if (window_.size() < want) window_.resize(want);
  window_offset_ = offset;
  window_bytes_ = 0;
  STOKER_RETURN_IF_ERROR(read_into(offset, std::span(window_.data(), want)));
  window_bytes_ = want;
  return std::span<const std::byte>(window_.data(), n);
}

std::string resolve_path(std::string_view path, std::string_view base_dir) {
  std::filesystem::path p(path);
  if (p.is_absolute()) return p.lexically_normal().string();
  std::error_code ec;
  std::filesystem::path base =
      base_dir.empty() ? std::filesystem::current_path(ec) : std::filesystem::path(base_dir);
  return (base / p).lexically_normal().string();
}

Result<std::vector<std::string>> resolve_files(const std::vector<std::string>& patterns,
                                               std::string_view base_dir) {
  std::vector<std::string> out;
  for (const auto& pattern : patterns) {
    const std::string full = resolve_path(pattern, base_dir);
    GlobResult g;
    const int rc = ::glob(full.c_str(), GLOB_ERR, nullptr, g.get());
    size_t matched = 0;
    if (rc == 0) {
      for (size_t i = 0; i < g.get()->gl_pathc; ++i) {
        std::string path = g.get()->gl_pathv[i];
        // Index files and their temporaries (<shard>.stoker-index.tmp-XXXXXXXX,
        // left behind by a crash mid-write) are never shards.
        const std::string_view name = std::string_view(path).substr(path.rfind('/') + 1);
        if (name.find(".stoker-index") != std::string_view::npos) continue;
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        out.push_back(std::move(path));
        ++matched;
      }
    } else if (rc != GLOB_NOMATCH) {
      return io_error(fmt::format("cannot list files matching '{}'", full));
    }
    if (matched == 0) return not_found(fmt::format("no file matches '{}'", full));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::string> read_whole_file(const std::string& path, uint64_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno_status("cannot open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_status("cannot stat", path, errno);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return resource_exhausted(
        fmt::format("{} has {} bytes, more than the {} allowed", path, size, max_bytes));
  }
  std::string out(size, '\0');
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd.get(), out.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("cannot read", path, errno);
    }
    if (n == 0) break;  // shrank while we read
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

Status write_file_atomic(const std::string& path, std::span<const std::byte> bytes) {
  std::random_device rd;
  const std::string tmp = fmt::format("{}.tmp-{:08x}", path, rd());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid()) return errno_status("cannot create", tmp, errno);
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::unlink(tmp.c_str());
        return errno_status("cannot write", tmp, err);
      }
      done += static_cast<size_t>(n);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errno_status("cannot rename into", path, err);
  }
  return Status::ok();
}

Status make_directories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error(fmt::format("cannot create directory {}: {}", dir, ec.message()));
  return Status::ok();
}

}  // namespace stoker::pipeline
