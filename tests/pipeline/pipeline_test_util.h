// Helpers shared by the pipeline tests: a sink that keeps every batch,
// running all splits of a pipeline, reading tensors out of batches, and
// temporary directories.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/batch_sink.h"
#include "pipeline/pipeline.h"

namespace stoker::pipeline::testing {

struct CollectedBatch {
  BatchDescriptor descriptor;
  std::vector<std::byte> payload;

  const TensorDescriptor* tensor(std::string_view name) const {
    for (size_t i = 0; i < descriptor.tensor_count; ++i) {
      if (descriptor.tensors[i].name_view() == name) return &descriptor.tensors[i];
    }
    return nullptr;
  }
  // The tensor's bytes in the payload, or nullptr when there is no such tensor.
  const uint8_t* bytes_of(std::string_view name) const {
    const TensorDescriptor* t = tensor(name);
    return t == nullptr ? nullptr : reinterpret_cast<const uint8_t*>(payload.data()) + t->offset;
  }
  template <typename T>
  std::vector<T> values(std::string_view name) const {
    const TensorDescriptor* t = tensor(name);
    if (t == nullptr) return {};
    std::vector<T> out(t->bytes / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), payload.data() + t->offset, t->bytes);
    return out;
  }
};

// Copies every emitted batch (and releases its buffer at once).
class CollectingSink {
 public:
  explicit CollectingSink(size_t budget = size_t{1} << 30)
      : sink_(budget, [this](BatchDescriptor d, SendBuffer b) {
          CollectedBatch c;
          c.descriptor = d;
          const auto bytes = b.bytes().first(d.payload_bytes);
          c.payload.assign(bytes.begin(), bytes.end());
          std::lock_guard lock(mu_);
          batches_.push_back(std::move(c));
          return Status::ok();
        }) {}
  BatchSink& sink() { return sink_; }
  std::vector<CollectedBatch> take() {
    std::lock_guard lock(mu_);
    return std::move(batches_);
  }

 private:
  MemoryBudgetSink sink_;
  std::mutex mu_;
  std::vector<CollectedBatch> batches_;
};

// Runs `splits` on `threads` threads (each taking the next split, as the
// worker daemon does) and returns the batches grouped by split id, in order.
inline std::map<uint64_t, std::vector<CollectedBatch>> run_splits(Pipeline& p,
                                                                  const std::vector<Split>& splits,
                                                                  uint64_t iteration = 0,
                                                                  int threads = 1,
                                                                  Status* first_error = nullptr) {
  CollectingSink sink;
  std::atomic<size_t> next{0};
  std::atomic<bool> cancel{false};
  std::mutex mu;
  Status error;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < splits.size(); i = next++) {
        Status st = p.run_split(splits[i], iteration, sink.sink(), cancel);
        if (!st.is_ok()) {
          std::lock_guard lock(mu);
          if (error.is_ok()) error = st;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  if (first_error != nullptr) {
    *first_error = error;
  } else {
    EXPECT_TRUE(error.is_ok()) << error.to_string();
  }
  std::map<uint64_t, std::vector<CollectedBatch>> out;
  for (auto& b : sink.take()) out[b.descriptor.split_id].push_back(std::move(b));
  for (auto& [id, batches] : out) {
    std::sort(batches.begin(), batches.end(), [](const auto& a, const auto& b) {
      return a.descriptor.sequence < b.descriptor.sequence;
    });
  }
  return out;
}

inline std::shared_ptr<Pipeline> make_pipeline(const std::string& json,
                                               PipelineOptions options = {}) {
  auto spec = parse_pipeline_spec(json);
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  if (!spec.is_ok()) return nullptr;
  auto p = Pipeline::create(*spec, std::move(options));
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  return p.is_ok() ? *p : nullptr;
}

// A fresh directory under the build's temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("stoker-pipeline-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs `command` through the shell.
inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) r.output.append(buffer, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// AddressSanitizer reserves terabytes of address space, so address-space
// limits cannot be tested under it.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// Runs `body` in a forked child whose address space may grow by at most
// `extra_bytes`, so that an allocation a lying header asks for fails there
// (std::bad_alloc) instead of exhausting the machine. Returns "ok" when
// `body` returned true, else what happened. Callers skip under
// AddressSanitizer.
inline std::string run_with_memory_limit(uint64_t extra_bytes, const std::function<bool()>& body) {
  const pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    // The current size from /proc/self/statm (pages), plus the allowance.
    unsigned long pages = 0;  // NOLINT(runtime/int): fscanf's %lu
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    const uint64_t limit =
        uint64_t{pages} * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) + extra_bytes;
    const rlimit rl{limit, limit};
    if (::setrlimit(RLIMIT_AS, &rl) != 0) std::_Exit(3);
    // Never back into gtest: the child must not go on to run other tests.
    try {
      std::_Exit(body() ? 0 : 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "threw: %s\n", e.what());
    }
    std::_Exit(2);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return "waitpid failed";
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  switch (WEXITSTATUS(status)) {
    case 0:
      return "ok";
    case 2:
      return "threw an exception";
    case 3:
      return "setrlimit failed";
    default:
      return "the check failed";
  }
}

inline std::string python() { return STOKER_REFERENCE_PYTHON; }
inline std::string helper(std::string_view name) {
  return std::string(STOKER_PIPELINE_TEST_DIR) + "/" + std::string(name);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Max and mean absolute difference of two equally sized byte buffers.
struct PixelDiff {
  int max = 0;
  double mean = 0;
};
inline PixelDiff pixel_diff(const uint8_t* a, const uint8_t* b, size_t n) {
  PixelDiff d;
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const int v = std::abs(int{a[i]} - int{b[i]});
    d.max = std::max(d.max, v);
    sum += static_cast<uint64_t>(v);
  }
  d.mean = n ? static_cast<double>(sum) / static_cast<double>(n) : 0;
  return d;
}

}  // namespace stoker::pipeline::testing
