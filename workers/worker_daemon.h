// WorkerDaemon: a stoker worker process. It registers with the coordinator
// (and re-registers after a coordinator restart, telling it which splits it
// holds), heartbeats, runs a Task for every job it is assigned, and exports
// its counters at /metrics. Its memory budget is one send arena shared by
// its tasks.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "stoker/batch_sender.h"
#include "stoker/push_mode.h"
#include "stoker/result.h"
#include "transport/control/cluster_secret.h"

namespace stoker::workers {

struct WorkerOptions {
  std::string coordinator_address;
  std::string name;  // default: hostname:pid
  uint32_t threads = 1;
  size_t memory_budget = size_t{256} << 20;
  std::optional<control::ClusterSecret> secret;
  PushMode push_mode = PushMode::kAuto;
  // How long each consumer link keeps polling UCX after its last event
  // before it sleeps (SenderOptions::busy_poll). Must not be negative.
  std::chrono::microseconds busy_poll = SenderOptions{}.busy_poll;
  uint16_t metrics_port = 0;  // 0: no /metrics endpoint
  // How long to keep trying to reach the coordinator at start.
  std::chrono::milliseconds connect_retry{std::chrono::seconds(60)};
  // start() stops retrying the coordinator, with kCancelled, once this
  // returns true (stoker-worker: a shutdown signal arrived meanwhile).
  std::function<bool()> give_up_starting;
  std::string metrics_host = "0.0.0.0";
};

class WorkerDaemon {
 public:
  static Result<std::unique_ptr<WorkerDaemon>> start(WorkerOptions options);
  ~WorkerDaemon();  // stop()
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Stops every task (closing its consumer links) and disconnects.
  void stop();
  uint64_t worker_id() const;
  // Prometheus text exposition of the worker's counters.
  std::string metrics() const;
  uint16_t metrics_port() const;

 private:
  class Impl;
  explicit WorkerDaemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stoker::workers
