// Reporter: an ordered, retried queue of reports to the coordinator.
#include "workers/reporter.h"

#include <spdlog/spdlog.h>

#include "transport/control/control_frame.h"

namespace stoker::workers {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(5);
constexpr auto kRetryPause = std::chrono::milliseconds(100);

// Errors that a retry can cure: the coordinator is away or slow.
bool transient(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut;
}

}  // namespace

Reporter::Reporter(control::ControlClient& control) : control_(control) {
  thread_ = std::thread([this] { run(); });
}

Reporter::~Reporter() { stop(); }

void Reporter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reporter::submit(control::Message report, Done done) {
  {
    std::lock_guard lock(mu_);
    queue_.emplace_back(std::move(report), std::move(done));
  }
  cv_.notify_all();
}

void Reporter::run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    auto [report, done] = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Status outcome;
    while (true) {
      auto answer = control_.call(report, kCallTimeout);
      outcome = answer.status();
      if (outcome.is_ok() || !transient(outcome)) break;
      std::unique_lock wait_lock(mu_);
      if (cv_.wait_for(wait_lock, kRetryPause, [&] { return stopping_; })) return;
    }
    if (!outcome.is_ok()) {
      spdlog::warn("worker: the coordinator refused a {} report: {}", control::body_name(report),
                   outcome.to_string());
    }
    if (done) done(outcome);
    lock.lock();
  }
}

}  // namespace stoker::workers
