// Task: one job running on this worker. N pipeline threads draw splits from
// the coordinator and run them through the job's pipeline into the send
// arena; a consumer link per consumer of the job pushes the finished batches,
// each to one consumer that holds a credit. The task counts what each
// consumer got per iteration, reports a split done once all its batches have
// gone out, and an iteration done once this worker has nothing more for it.
//
// A batch whose consumer dies before it was delivered goes back to the queue
// for the job's other consumers; nothing is dropped while a consumer remains.
//
// Batches go out epoch by epoch: those of iteration i+1 wait until every
// batch of iteration i has been delivered. A consumer keeps a batch of a
// later epoch in its landing slot until its current epoch ends, and that
// slot is one of this worker's credits; sending i+1 early could spend every
// credit on batches the consumer must hold while it waits for ours of i.
// For the same reason batches of i+1 may not take the last part of the send
// arena, which a thread still producing i needs (Task::Sink).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "pipeline/pipeline.h"
#include "stoker/batch_sender.h"
#include "stoker/push_mode.h"
#include "transport/control/control.pb.h"
#include "workers/reporter.h"
#include "workers/send_arena.h"

namespace stoker::workers {

class ConsumerLink;

// What every task of a worker shares.
struct TaskEnvironment {
  control::ControlClient* control = nullptr;
  Reporter* reporter = nullptr;
  SendArena* arena = nullptr;
  std::function<uint64_t()> worker_id;
  std::string worker_name;
  TransportContext transport;  // the worker's shared UCX context
  uint32_t threads = 1;
  PushMode push_mode = PushMode::kAuto;
  std::chrono::microseconds busy_poll = SenderOptions{}.busy_poll;  // of every consumer link
  // A pipeline thread takes no new split while this many finished batches
  // wait for a consumer: splits stay with the coordinator, where a faster
  // worker can take them, and a worker that dies takes fewer with it.
  size_t max_queued_batches = 16;
};

struct TaskStats {
  uint64_t batches_produced = 0;
  uint64_t bytes_produced = 0;
  uint64_t batches_delivered = 0;
  uint64_t batches_requeued = 0;  // their consumer died before delivery
  uint64_t splits_done = 0;
  double busy_seconds = 0;  // pipeline threads' time inside run_split
  pipeline::BadRecordCounts bad_records;
  size_t consumers = 0;
  size_t memory_bytes = 0;  // send buffers its batches hold now

  // Adds another task's counters (a worker's totals over its tasks).
  TaskStats& operator+=(const TaskStats& other);
};

// A finished batch waiting for (or on its way to) a consumer.
struct ReadyBatch {
  BatchDescriptor descriptor;
  pipeline::SendBuffer buffer;
  uint64_t lane = 0;
};

class Task {
 public:
  static Result<std::unique_ptr<Task>> start(TaskEnvironment env,
                                             const control::TaskAssignment& assignment);
  ~Task();  // stop()
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  // Applies a new assignment: consumers that joined get a link, those that
  // left lose theirs.
  void update(const control::TaskAssignment& assignment);
  // Cancels the pipeline threads and closes every link. Idempotent.
  void stop();
  // Tells the pipeline threads to stop without waiting for them (stop() and
  // the destructor wait): they ask for no further split. Tasks stopping
  // together are all told first, so they stop in the time of the slowest.
  void request_stop();

  uint64_t job_id() const { return job_id_; }
  // Splits assigned to this worker whose SplitDone the coordinator has not
  // acknowledged: told on re-registration.
  control::TaskState held() const;
  TaskStats stats() const;
  // Wakes pipeline threads waiting to retry (the coordinator has news).
  void nudge();

  // For consumer links (any thread).
  std::optional<std::shared_ptr<ReadyBatch>> next_batch(std::chrono::milliseconds wait);
  void delivered(const ReadyBatch& batch, uint64_t consumer_id);
  void requeue(std::shared_ptr<ReadyBatch> batch);
  // The job cannot go on here: tells the coordinator (which fails the job)
  // and stops the pipeline threads.
  void fail(const Status& why);

 private:
  struct SplitKey {
    uint64_t iteration, lane, split;
    auto operator<=>(const SplitKey&) const = default;
  };
  struct SplitProgress {
    uint64_t outstanding = 0;  // batches emitted, not yet delivered
    bool produced = false;     // run_split returned OK
  };
  struct IterationProgress {
    uint32_t threads_past = 0;               // pipeline threads that have moved beyond it
    uint64_t outstanding = 0;                // its batches not yet delivered
    uint64_t splits = 0;                     // splits of it this worker got
    std::map<uint64_t, uint64_t> delivered;  // consumer -> batches
    bool reported = false;  // reopened (false) when a redelivered split of it comes
  };
  class Sink;

  Task(TaskEnvironment env, const control::TaskAssignment& assignment);
  void run_pipeline_thread(uint32_t index);
  // Asks for a split until answered; nullopt when the task stops.
  std::optional<control::GetSplitResponse> get_split(uint64_t iteration, uint64_t request_id);
  Status emit(BatchDescriptor descriptor, pipeline::SendBuffer buffer, uint64_t lane);
  // Under mu_: reports splits and iterations that are complete.
  void settle_locked(const SplitKey& key);
  void maybe_report_iteration_locked(uint64_t iteration);
  // Every pipeline thread is past `iteration`, and none of its splits runs.
  bool produced_locked(uint64_t iteration) const;
  // The oldest iteration this worker has not finished delivering: batches of
  // later iterations wait for it (see next_batch()).
  std::optional<uint64_t> oldest_open_iteration_locked() const;
  // Stores oldest_open_iteration_locked() in oldest_open_ (kNoneOpen for
  // none) and wakes the arena's waiters when it changed. Called wherever the
  // oldest open iteration may change: an iteration reported, a split (of a
  // possibly new or reopened iteration) taken, a thread past an iteration.
  void publish_oldest_locked();
  // The first queued batch that may go out now (end() if none).
  std::deque<std::shared_ptr<ReadyBatch>>::iterator first_sendable_locked();
  void sleep_until_nudged(std::chrono::milliseconds at_most);

  TaskEnvironment env_;
  const uint64_t job_id_;
  const std::string job_name_;
  std::shared_ptr<pipeline::Pipeline> pipeline_;
  std::atomic<bool> cancel_{false};
  std::vector<std::thread> threads_;
  // This job's share of the worker's send arena, with a reserve of one
  // batch per pipeline thread; set once at start.
  std::unique_ptr<SendArena::Tenant> memory_;
  // Batches of an iteration after oldest_open_ take memory only below this
  // offset of the send arena (Task::Sink); set once at start.
  size_t early_limit_ = 0;
  static constexpr uint64_t kNoneOpen = std::numeric_limits<uint64_t>::max();
  // oldest_open_iteration_locked(), for the arena to read without mu_.
  std::atomic<uint64_t> oldest_open_{kNoneOpen};

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;
  std::condition_variable space_cv_;  // ready_ shrank
  std::condition_variable nudge_cv_;
  uint64_t nudges_ = 0;
  std::deque<std::shared_ptr<ReadyBatch>> ready_;
  std::map<SplitKey, SplitProgress> splits_;
  // Splits done whose SplitDone the coordinator has not acknowledged yet.
  // Shared with the reporter's callbacks: a report can be answered after this
  // task is gone (retried across a re-registration, or refused at shutdown).
  struct UnacknowledgedSplits {
    std::mutex mu;  // taken after mu_, never before it
    std::set<SplitKey> keys;
  };
  std::shared_ptr<UnacknowledgedSplits> unacknowledged_ = std::make_shared<UnacknowledgedSplits>();
  std::map<uint64_t, IterationProgress> iterations_;
  // The iteration each pipeline thread that reached the end of the job was
  // at: it is past that iteration and every later one.
  std::vector<uint64_t> finished_at_;
  std::map<uint64_t, std::unique_ptr<ConsumerLink>> links_;
  TaskStats stats_;
  std::atomic<uint64_t> next_request_id_{1};
};

}  // namespace stoker::workers
