// stoker-perf's server figures, checked against runs whose batches are known:
// the server counts every batch that lands in its measured window, including
// the warm-up of a sender that started after the others were measured.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "tests/support/child_process.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::stoker_perf_path;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/stoker-perf-" + name + "-" + std::to_string(getpid());
}

// The key=value fields of the first line of `log` that starts with `prefix`.
std::map<std::string, std::string> result_fields(const std::string& log,
                                                 const std::string& prefix) {
  std::map<std::string, std::string> fields;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream words(line);
    for (std::string word; words >> word;) {
      if (const size_t eq = word.find('='); eq != std::string::npos) {
        fields[word.substr(0, eq)] = word.substr(eq + 1);
      }
    }
    break;
  }
  return fields;
}

class StokerPerf : public ::testing::Test {
 protected:
  void SetUp() override { setenv("UCX_TLS", "tcp", 1); }

  // Starts a verifying server for `senders` senders of 64 KiB batches and
  // returns its port ("" on failure).
  std::string start_server(int senders) {
    const std::string port_file = temp_path("port");
    std::remove(port_file.c_str());
    server_.emplace(std::vector<std::string>{stoker_perf_path(), "server", "--listen",
                                             "127.0.0.1:0", "--port-file", port_file, "--senders",
                                             std::to_string(senders), "--slot-bytes", "64K",
                                             "--slots", "16", "--credits", "8", "--verify"},
                    temp_path("server.log"));
    if (server_->spawn_error() != 0) return "";
    return testing::wait_for_port_file(port_file);
  }

  // Runs one verifying client to completion; its exit code (-1: it hung or died).
  int run_client(const std::string& port, const std::string& name, int warmup, int iterations) {
    ChildProcess client({stoker_perf_path(), "client", "--connect", "127.0.0.1:" + port, "--size",
                         "64K", "--warmup", std::to_string(warmup), "--iterations",
                         std::to_string(iterations), "--name", name, "--verify"},
                        temp_path(name + ".log"));
    const auto code = client.wait(60s);
    if (code != 0) ADD_FAILURE() << name << ":\n" << client.log();
    return code.value_or(-1);
  }

  // The server's RESULT fields once it has exited cleanly; empty (with the
  // failure recorded) otherwise.
  std::map<std::string, std::string> server_result() {
    const auto code = server_->wait(30s);
    auto fields = result_fields(server_->log(), "RESULT role=server");
    if (code != 0 || fields.empty()) {
      ADD_FAILURE() << "server exit " << code.value_or(-1) << ":\n" << server_->log();
      return {};
    }
    return fields;
  }

  std::optional<ChildProcess> server_;
};

TEST_F(StokerPerf, OneSenderCountsItsMeasuredBatchesOnly) {
  const std::string port = start_server(1);
  ASSERT_FALSE(port.empty()) << server_->log();
  ASSERT_EQ(run_client(port, "only", 10, 200), 0);
  auto result = server_result();
  ASSERT_FALSE(result.empty());
  EXPECT_EQ(result["size"], "65536");
  EXPECT_EQ(result["batches"], "200");
  EXPECT_EQ(result["warmup_in_window"], "0");
  EXPECT_EQ(result["corrupt"], "0");
  EXPECT_GT(std::stod(result["MBps"]), 0.0);
}

// The second sender starts once the first has finished, so all of its
// warm-up lands between the first's measured batches and its own: inside the
// window, where the link was busy with it.
TEST_F(StokerPerf, ALaterSendersWarmupInTheWindowCounts) {
  const std::string port = start_server(2);
  ASSERT_FALSE(port.empty()) << server_->log();
  ASSERT_EQ(run_client(port, "first", 5, 100), 0);
  ASSERT_EQ(run_client(port, "second", 7, 100), 0);
  auto result = server_result();
  ASSERT_FALSE(result.empty());
  EXPECT_EQ(result["senders"], "2");
  EXPECT_EQ(result["batches"], "200");
  EXPECT_EQ(result["warmup_in_window"], "7");
  EXPECT_EQ(result["corrupt"], "0");
}

}  // namespace
}  // namespace stoker
