// A child process for tests that need a real peer to kill: started with
// posix_spawn, output to a file, killed (SIGKILL) and reaped when destroyed.
// Also where such tests find stoker-perf and the port its server listens on.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace stoker::testing {

class ChildProcess {
 public:
  // Runs argv[0] with the given arguments; stdout and stderr go to `log_path`.
  // posix_spawn rather than fork: the test process has UCX and receiver
  // threads, and a forked copy of it must not run anything before exec.
  ChildProcess(std::vector<std::string> argv, std::string log_path)
      : log_path_(std::move(log_path)) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    // The child must not hold the test's UCX sockets, shared memory or event
    // fds: a peer that inherits them keeps connections half-alive.
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      const int fd = std::atoi(entry.path().filename().c_str());
      if (fd > 2) posix_spawn_file_actions_addclose(&actions, fd);
    }
    spawn_error_ = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawn_error_ != 0) reaped_ = true;
  }
  // Non-zero when the program could not be started (an errno value).
  int spawn_error() const { return spawn_error_; }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (running()) kill_now(SIGKILL);
    if (!reaped_) waitpid(pid_, nullptr, 0);
  }

  pid_t pid() const { return pid_; }
  bool running() {
    if (reaped_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
      return false;
    }
    return true;
  }
  void kill_now(int sig) { ::kill(pid_, sig); }

  // Waits for exit; the exit code, or nullopt on timeout or death by signal.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  pid_t pid_ = -1;
  int spawn_error_ = 0;
  std::string log_path_;
  bool reaped_ = false;
  int status_ = 0;
};

// The port a `stoker-perf server --port-file` wrote, once it is there; "" if
// it is not there within `timeout`.
inline std::string wait_for_port_file(const std::string& path,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string port;
  while (port.empty() && std::chrono::steady_clock::now() < deadline) {
    std::ifstream(path) >> port;
    if (port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return port;
}

// Path of the stoker-perf binary, passed by CTest in STOKER_PERF.
inline std::string stoker_perf_path() {
  const char* p = std::getenv("STOKER_PERF");
  return p ? p : "(STOKER_PERF is not set: run this test through ctest)";
}

}  // namespace stoker::testing
