// ConsumerLink: a worker's connection to one consumer of a job: a
// BatchSender (with the send arena registered for zero-copy sends) and the
// push thread that drives it. The thread takes a batch from the task only
// with a credit in hand, so a batch waits in the task's queue, where any
// consumer with room may take it, rather than behind one that has none.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <thread>

#include "stoker/batch_sender.h"
#include "transport/control/control.pb.h"

namespace stoker::workers {

class Task;
struct TaskEnvironment;
struct ReadyBatch;

class ConsumerLink {
 public:
  ConsumerLink(Task& task, const TaskEnvironment& env, control::ConsumerEndpoint consumer);
  // Stops the push thread; batches not delivered go back to the task.
  ~ConsumerLink();
  ConsumerLink(const ConsumerLink&) = delete;
  ConsumerLink& operator=(const ConsumerLink&) = delete;

  // Tells the push thread to finish without waiting for it (the destructor
  // waits). A link to a consumer that answers nothing takes seconds to
  // close, so links closing together are all told first: they close in the
  // time of the slowest, not of their sum.
  void request_stop() { stopping_ = true; }

  uint64_t consumer_id() const { return consumer_.consumer_id(); }
  // The connection failed or was refused; since when.
  bool dead() const { return dead_.load(); }
  std::chrono::steady_clock::time_point died_at() const { return died_at_.load(); }

 private:
  void run();
  Result<std::unique_ptr<BatchSender>> connect();
  void push(BatchSender& sender);
  void die(const Status& why);

  Task& task_;
  const TaskEnvironment& env_;
  control::ConsumerEndpoint consumer_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> dead_{false};
  std::atomic<std::chrono::steady_clock::time_point> died_at_{};  // read by the task's updates
  // Push thread only: batches posted and not yet completed, by a local key.
  std::map<uint64_t, std::shared_ptr<ReadyBatch>> in_flight_;
  uint64_t next_key_ = 1;
  std::thread thread_;
};

}  // namespace stoker::workers
