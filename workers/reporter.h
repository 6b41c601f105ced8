// Reporter: delivers a worker's reports to the coordinator reliably. Reports
// (a split done, an iteration done, a task failed) queue here and are sent in
// order by one thread, retried across timeouts and reconnections until the
// coordinator acknowledges them, so none is lost when the coordinator
// restarts. The coordinator treats each as idempotent.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "transport/control/control_client.h"

namespace stoker::workers {

class Reporter {
 public:
  // Called on the reporter's thread with the coordinator's answer (or the
  // error that made it give up on this report: kNotFound, kInvalidArgument...).
  using Done = std::function<void(const Status&)>;

  explicit Reporter(control::ControlClient& control);
  ~Reporter();  // stop()
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  void submit(control::Message report, Done done = nullptr);
  void stop();

 private:
  void run();
  control::ControlClient& control_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<control::Message, Done>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace stoker::workers
