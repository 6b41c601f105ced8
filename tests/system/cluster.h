// A stoker cluster of real processes for system tests: a coordinator
// (stoker-coordinator) with a work dir of its own, any number of workers
// (stoker-worker), and readers opened in the test process. Each process can
// be killed (SIGKILL) or stopped (SIGTERM) and the coordinator restarted on
// the same port with the same work dir. The programs are the ones this build
// made (tests/CMakeLists.txt), or those STOKER_COORDINATOR, STOKER_WORKER
// and STOKER_CTL name.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stoker/client.h"
#include "tests/support/child_process.h"

namespace stoker::testing {

// A program's path: from the environment variable, or where the build put it.
inline std::string binary(const char* variable) {
  if (const char* p = std::getenv(variable)) return p;
  const std::string name = variable;
  if (name == "STOKER_COORDINATOR") return STOKER_COORDINATOR_BINARY;
  if (name == "STOKER_WORKER") return STOKER_WORKER_BINARY;
  if (name == "STOKER_CTL") return STOKER_CTL_BINARY;
  if (name == "STOKER_READ") return STOKER_READ_BINARY;
  return fmt::format("(unknown program {})", variable);
}

struct ClusterOptions {
  uint32_t heartbeat_ms = 100;
  uint32_t liveness_timeout_ms = 1000;
  uint32_t reconnect_grace_ms = 300;
  std::string durability = "os";
  std::string secret_file;
  uint64_t journal_compaction_bytes = 0;  // 0: the coordinator's default
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options = {}) : options_(options) {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("stoker-cluster-{}-{}", ::getpid(), counter()++);
    std::filesystem::create_directories(dir_);
    setenv("UCX_TLS", "tcp", 0);
  }
  ~Cluster() {
    workers_.clear();
    coordinator_.reset();
    std::error_code ec;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir_, ec);
  }

  const std::filesystem::path& dir() const { return dir_; }
  std::string coordinator_address() const { return fmt::format("127.0.0.1:{}", port_); }

  // Starts (or restarts, on the same port and work dir) the coordinator.
  void start_coordinator() {
    std::vector<std::string> argv{binary("STOKER_COORDINATOR"),
                                  "--host",
                                  "127.0.0.1",
                                  "--port",
                                  std::to_string(port_),
                                  "--work-dir",
                                  (dir_ / "coordinator").string(),
                                  "--heartbeat-ms",
                                  std::to_string(options_.heartbeat_ms),
                                  "--liveness-timeout-ms",
                                  std::to_string(options_.liveness_timeout_ms),
                                  "--reconnect-grace-ms",
                                  std::to_string(options_.reconnect_grace_ms),
                                  "--durability",
                                  options_.durability,
                                  "--log-level",
                                  "info"};
    if (!options_.secret_file.empty()) {
      argv.push_back("--secret-file");
      argv.push_back(options_.secret_file);
    }
    if (options_.journal_compaction_bytes != 0) {
      argv.push_back("--journal-compaction-bytes");
      argv.push_back(std::to_string(options_.journal_compaction_bytes));
    }
    const auto log = (dir_ / fmt::format("coordinator-{}.log", coordinator_starts_++)).string();
    coordinator_ = std::make_unique<ChildProcess>(argv, log);
    ASSERT_EQ(coordinator_->spawn_error(), 0) << argv[0];
    // It prints its address once it serves: "... listening on HOST:PORT".
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = coordinator_->log();
      const std::string marker = "listening on ";
      if (const auto at = text.find(marker); at != std::string::npos) {
        const auto end = text.find('\n', at);
        if (end != std::string::npos) {
          const std::string address = text.substr(at + marker.size(), end - at - marker.size());
          port_ = static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
          return;
        }
      }
      ASSERT_TRUE(coordinator_->running()) << "the coordinator exited:\n" << text;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the coordinator did not start:\n" << coordinator_->log();
  }
  ChildProcess& coordinator() { return *coordinator_; }
  void kill_coordinator() {
    coordinator_->kill_now(SIGKILL);
    coordinator_->wait(std::chrono::seconds(5));
  }

  // Starts a worker; returns its index in workers().
  // `extra` options are added (a --memory-budget there replaces the default).
  size_t start_worker(uint32_t threads = 1, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{binary("STOKER_WORKER"),
                                  "--coordinator",
                                  coordinator_address(),
                                  "--threads",
                                  std::to_string(threads),
                                  "--name",
                                  fmt::format("w{}", workers_.size()),
                                  "--log-level",
                                  "info"};
    if (std::find(extra.begin(), extra.end(), "--memory-budget") == extra.end()) {
      argv.insert(argv.end(), {"--memory-budget", "32M"});
    }
    if (!options_.secret_file.empty()) {
      argv.push_back("--secret-file");
      argv.push_back(options_.secret_file);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    const auto log = (dir_ / fmt::format("worker-{}.log", workers_.size())).string();
    workers_.push_back(std::make_unique<ChildProcess>(argv, log));
    EXPECT_EQ(workers_.back()->spawn_error(), 0) << argv[0];
    return workers_.size() - 1;
  }
  // Waits up to 20 s until the coordinator has logged `count` worker
  // registrations; false if it has not. A test that counts workers must
  // wait: a job can run to its end on the first worker to register.
  bool wait_for_registrations(size_t count) {
    const std::string marker = ") registered from ";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = coordinator_->log();
      size_t seen = 0;
      for (auto at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
        ++seen;
      }
      if (seen >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  ChildProcess& worker(size_t i) { return *workers_.at(i); }
  size_t worker_count() const { return workers_.size(); }

  std::shared_ptr<Client> client(std::string name = "trainer") {
    auto c = Client::connect({.coordinator = coordinator_address(),
                              .secret_file = options_.secret_file,
                              .name = std::move(name)});
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return c.is_ok() ? *c : nullptr;
  }

  // Every process's log, for failure messages.
  std::string logs() const {
    std::string out;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      if (entry.path().extension() != ".log") continue;
      std::ifstream in(entry.path());
      std::stringstream ss;
      ss << in.rdbuf();
      out += fmt::format("===== {}\n{}\n", entry.path().filename().string(), ss.str());
    }
    return out;
  }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  ClusterOptions options_;
  std::filesystem::path dir_;
  uint16_t port_ = 0;
  int coordinator_starts_ = 0;
  std::unique_ptr<ChildProcess> coordinator_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

// A `range` pipeline of `count` numbered elements.
inline std::string range_spec(uint64_t count, uint64_t split_size, uint32_t batch,
                              uint64_t element_bytes = 0, uint64_t seed = 0) {
  return fmt::format(R"({{"seed": {}, "source": {{"type": "range", "count": {}, "split_size": {}, )"
                     R"("element_bytes": {}}}, "batch": {{"size": {}}}}})",
                     seed, count, split_size, element_bytes, batch);
}

// The element indices in a batch of a range pipeline.
inline std::vector<int64_t> indices_of(const Batch& batch) {
  auto t = batch.tensor("index");
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  if (!t.is_ok()) return {};
  const auto* p = t->data_as<const int64_t>();
  return {p, p + t->element_count()};
}

// Reads `reader` until its job ends: `on_batch` gets every batch and
// `on_epoch_end` the index of each epoch that ends. OK at the job's end;
// otherwise the error that stopped it (kTimedOut when `wait` passed without
// a batch).
inline Status read_to_end(Reader& reader, const std::function<void(const Batch&)>& on_batch,
                          const std::function<void(uint64_t epoch)>& on_epoch_end = nullptr,
                          std::chrono::milliseconds wait = std::chrono::seconds(30)) {
  for (uint64_t epoch = 0;;) {
    auto next = reader.next(wait);
    if (!next.is_ok()) {
      return next.status().code() == StatusCode::kOutOfRange ? Status::ok() : next.status();
    }
    if (next->has_value()) {
      on_batch(**next);
    } else if (on_epoch_end) {
      on_epoch_end(epoch++);
    } else {
      ++epoch;
    }
  }
}

}  // namespace stoker::testing
