// Task: pipeline threads, the ready queue, delivery accounting and reports.
#include "workers/task.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "pipeline/pipeline_spec.h"
#include "pipeline/split_message.h"
#include "workers/consumer_link.h"

namespace stoker::workers {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kCallTimeout = std::chrono::seconds(5);
constexpr auto kRetryPause = std::chrono::milliseconds(200);
// A consumer whose link failed is tried again after this long, while the
// coordinator still lists it (it may have been a passing failure).
constexpr auto kRelinkAfter = std::chrono::seconds(1);

bool transient(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut;
}

}  // namespace

// The BatchSink a pipeline thread runs a split into: the shared send arena,
// and the task's ready queue.
//
// Memory for a batch of an iteration newer than the oldest one this worker
// has not finished (an "early" batch) comes only from below the arena's last
// `threads x largest batch` bytes (early_limit_). Early batches cannot go out
// until the oldest iteration is delivered (next_batch()), so they free
// nothing; were they let fill the arena, a thread still producing the oldest
// iteration would wait in acquire() for good, and that iteration, and with it
// every later one, would never end. The top of the arena thus only ever holds
// batches that can go out (or are being made for the oldest iteration): it
// drains, and every thread of the oldest iteration finds room there. The
// limit is asked on every attempt and the arena is woken when the oldest
// iteration changes (publish_oldest_locked()), so an early batch gets the
// whole arena as soon as its iteration is the oldest. With a budget below
// threads x largest, early batches wait until then: the epochs do not
// overlap, but nothing a later iteration waits for waits on it.
class Task::Sink final : public pipeline::BatchSink {
 public:
  Sink(Task& task, uint64_t lane, uint64_t iteration)
      : task_(task), lane_(lane), iteration_(iteration) {}
  Result<pipeline::SendBuffer> acquire(size_t bytes) override {
    return task_.memory_->acquire(bytes, task_.cancel_, [this] {
      // Lock-free: called under the arena's lock.
      return iteration_ > task_.oldest_open_.load() ? task_.early_limit_
                                                    : std::numeric_limits<size_t>::max();
    });
  }
  Status emit(BatchDescriptor descriptor, pipeline::SendBuffer buffer) override {
    return task_.emit(std::move(descriptor), std::move(buffer), lane_);
  }

 private:
  Task& task_;
  uint64_t lane_;
  uint64_t iteration_;
};

Task::Task(TaskEnvironment env, const control::TaskAssignment& assignment)
    : env_(std::move(env)), job_id_(assignment.job_id()), job_name_(assignment.job_name()) {}

Result<std::unique_ptr<Task>> Task::start(TaskEnvironment env,
                                          const control::TaskAssignment& assignment) {
  std::unique_ptr<Task> task(new Task(std::move(env), assignment));
  auto spec = pipeline::parse_pipeline_spec(assignment.pipeline_spec());
  if (!spec.is_ok()) return spec.status().with_context("the job's pipeline spec");
  STOKER_ASSIGN_OR_RETURN(task->pipeline_, pipeline::Pipeline::create(*spec));
  const size_t largest = task->pipeline_->max_batch_bytes();
  if (largest > task->env_.arena->capacity()) {
    return resource_exhausted(fmt::format(
        "the job's batches take up to {} bytes, more than this worker's {}-byte memory budget "
        "(--memory-budget)",
        largest, task->env_.arena->capacity()));
  }
  const size_t rounded =
      (largest + SendArena::kAlignment - 1) / SendArena::kAlignment * SendArena::kAlignment;
  const size_t capacity = task->env_.arena->capacity();
  const size_t reserve =
      rounded > capacity / task->env_.threads ? capacity : size_t{task->env_.threads} * rounded;
  task->early_limit_ = capacity - reserve;
  task->memory_ = task->env_.arena->join(reserve);
  task->update(assignment);
  for (uint32_t i = 0; i < task->env_.threads; ++i) {
    task->threads_.emplace_back([raw = task.get(), i] { raw->run_pipeline_thread(i); });
  }
  spdlog::info("worker: running job {} ('{}') on {} threads", task->job_id_, task->job_name_,
               task->env_.threads);
  return task;
}

Task::~Task() { stop(); }

void Task::request_stop() {
  cancel_ = true;
  nudge();
  ready_cv_.notify_all();
  space_cv_.notify_all();
}

void Task::stop() {
  request_stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  std::map<uint64_t, std::unique_ptr<ConsumerLink>> links;
  {
    std::lock_guard lock(mu_);
    links.swap(links_);
  }
  for (auto& [id, link] : links) link->request_stop();
  links.clear();  // joins the push threads (outside mu_: they call back into the task)
  std::lock_guard lock(mu_);
  ready_.clear();  // returns the buffers to the arena
}

void Task::update(const control::TaskAssignment& assignment) {
  std::vector<std::unique_ptr<ConsumerLink>> closing;
  std::vector<control::ConsumerEndpoint> opening;
  {
    std::lock_guard lock(mu_);
    std::set<uint64_t> listed;
    for (const auto& c : assignment.consumers()) {
      listed.insert(c.consumer_id());
      auto it = links_.find(c.consumer_id());
      if (it == links_.end()) {
        opening.push_back(c);
      } else if (it->second->dead() && Clock::now() - it->second->died_at() > kRelinkAfter) {
        closing.push_back(std::move(it->second));
        links_.erase(it);
        opening.push_back(c);
      }
    }
    for (auto it = links_.begin(); it != links_.end();) {
      if (!listed.contains(it->first)) {
        closing.push_back(std::move(it->second));
        it = links_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& link : closing) link->request_stop();
  closing.clear();  // requeues their batches for the consumers that remain
  if (cancel_.load()) return;
  for (auto& c : opening) {
    auto link = std::make_unique<ConsumerLink>(*this, env_, c);
    std::lock_guard lock(mu_);
    links_[c.consumer_id()] = std::move(link);
  }
  if (!opening.empty()) ready_cv_.notify_all();
}

void Task::nudge() {
  {
    std::lock_guard lock(mu_);
    ++nudges_;
  }
  nudge_cv_.notify_all();
}

void Task::sleep_until_nudged(std::chrono::milliseconds at_most) {
  std::unique_lock lock(mu_);
  const uint64_t seen = nudges_;
  nudge_cv_.wait_for(lock, at_most, [&] { return nudges_ != seen || cancel_.load(); });
}

std::optional<control::GetSplitResponse> Task::get_split(uint64_t iteration, uint64_t request_id) {
  control::Message request;
  auto* get = request.mutable_get_split();
  get->set_job_id(job_id_);
  get->set_iteration(iteration);
  get->set_request_id(request_id);
  while (!cancel_.load()) {
    get->set_worker_id(env_.worker_id());
    auto answer = env_.control->call(request, kCallTimeout);
    if (answer.is_ok() && answer->has_get_split_response()) return answer->get_split_response();
    if (answer.is_ok() || !transient(answer.status())) {
      // kNotFound: this worker was declared dead and re-registers; the task
      // is about to be replaced. Anything else is a coordinator bug or a
      // removed job: wait for the next assignment either way.
      spdlog::warn("worker: job {}: get_split: {}", job_id_,
                   answer.is_ok() ? "unexpected answer" : answer.status().to_string());
    }
    sleep_until_nudged(kRetryPause);
  }
  return std::nullopt;
}

void Task::run_pipeline_thread(uint32_t /*index*/) {
  uint64_t iteration = 0;
  while (!cancel_.load()) {
    {
      // Wait for room in the queue. But when nothing queued may go out yet
      // (batches of a later iteration wait for this worker to finish the
      // older one: next_batch()) and this thread is still in that older
      // iteration, only its asking can finish it (kEndOfIteration): it must
      // not wait, or nothing ever makes room.
      std::unique_lock lock(mu_);
      space_cv_.wait(lock, [&] {
        if (ready_.size() < env_.max_queued_batches || cancel_.load()) return true;
        const auto oldest = oldest_open_iteration_locked();
        return oldest && iteration <= *oldest && first_sendable_locked() == ready_.end();
      });
    }
    const uint64_t request_id = next_request_id_.fetch_add(1);
    auto answer = get_split(iteration, request_id);
    if (!answer) break;
    switch (answer->outcome_case()) {
      case control::GetSplitResponse::kSplit: {
        const control::Split& split = answer->split();
        // Usually the iteration asked for; an older one for a redelivered split.
        const uint64_t split_iteration = answer->iteration();
        const SplitKey key{split_iteration, split.lane(), split.id()};
        {
          std::lock_guard lock(mu_);
          splits_[key] = SplitProgress{};
          IterationProgress& progress = iterations_[split_iteration];
          ++progress.splits;
          progress.reported = false;
          publish_oldest_locked();
        }
        Sink sink(*this, split.lane(), split_iteration);
        const auto started = Clock::now();
        const Status st =
            pipeline_->run_split(pipeline::split_of(split), split_iteration, sink, cancel_);
        {
          std::lock_guard lock(mu_);
          stats_.busy_seconds += std::chrono::duration<double>(Clock::now() - started).count();
          if (st.is_ok()) {
            splits_[key].produced = true;
            settle_locked(key);
            // A redelivered split of an iteration this worker had finished
            // may have been delivered whole while it ran: report it again
            // now, as no delivery is left to.
            maybe_report_iteration_locked(split_iteration);
          }
        }
        if (st.is_ok()) continue;
        if (st.code() != StatusCode::kCancelled && !cancel_.load()) {
          fail(st.with_context(fmt::format("split {}", pipeline::split_of(split).to_string())));
        }
        return;
      }
      case control::GetSplitResponse::kEndOfIteration: {
        {
          std::lock_guard lock(mu_);
          ++iterations_[iteration].threads_past;
          maybe_report_iteration_locked(iteration);
          publish_oldest_locked();
        }
        ready_cv_.notify_all();
        ++iteration;
        continue;
      }
      case control::GetSplitResponse::kRetry:
        sleep_until_nudged(kRetryPause);
        continue;
      case control::GetSplitResponse::kEndOfJob:
      default: {
        {
          std::lock_guard lock(mu_);
          finished_at_.push_back(iteration);
          std::vector<uint64_t> open;
          for (const auto& [index, progress] : iterations_) open.push_back(index);
          for (uint64_t index : open) maybe_report_iteration_locked(index);
          publish_oldest_locked();
        }
        ready_cv_.notify_all();
        return;
      }
    }
  }
}

Status Task::emit(BatchDescriptor descriptor, pipeline::SendBuffer buffer, uint64_t lane) {
  descriptor.job_id = job_id_;
  auto batch = std::make_shared<ReadyBatch>();
  batch->descriptor = descriptor;
  batch->buffer = std::move(buffer);
  batch->lane = lane;
  {
    std::lock_guard lock(mu_);
    ++splits_[{descriptor.iteration, lane, descriptor.split_id}].outstanding;
    ++iterations_[descriptor.iteration].outstanding;
    ++stats_.batches_produced;
    stats_.bytes_produced += descriptor.payload_bytes;
    ready_.push_back(std::move(batch));
  }
  ready_cv_.notify_one();
  return Status::ok();
}

bool Task::produced_locked(uint64_t iteration) const {
  auto it = iterations_.find(iteration);
  uint32_t past = it == iterations_.end() ? 0 : it->second.threads_past;
  for (uint64_t at : finished_at_) past += at <= iteration ? 1 : 0;
  if (past < env_.threads) return false;
  for (const auto& [key, progress] : splits_) {
    if (key.iteration == iteration) return false;
  }
  return true;
}

std::optional<uint64_t> Task::oldest_open_iteration_locked() const {
  for (const auto& [index, it] : iterations_) {
    if (it.reported) continue;
    if (it.outstanding != 0 || !produced_locked(index)) return index;
  }
  return std::nullopt;
}

void Task::publish_oldest_locked() {
  const uint64_t oldest = oldest_open_iteration_locked().value_or(kNoneOpen);
  if (oldest_open_.exchange(oldest) != oldest) env_.arena->wake();
}

std::deque<std::shared_ptr<ReadyBatch>>::iterator Task::first_sendable_locked() {
  const auto oldest = oldest_open_iteration_locked();
  return std::find_if(ready_.begin(), ready_.end(),
                      [&](const auto& b) { return !oldest || b->descriptor.iteration <= *oldest; });
}

std::optional<std::shared_ptr<ReadyBatch>> Task::next_batch(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  std::deque<std::shared_ptr<ReadyBatch>>::iterator pick;
  const auto sendable = [&] {
    if (cancel_.load()) return true;
    pick = first_sendable_locked();
    return pick != ready_.end();
  };
  if (!ready_cv_.wait_for(lock, wait, sendable) || cancel_.load()) return std::nullopt;
  auto batch = std::move(*pick);
  ready_.erase(pick);
  lock.unlock();
  space_cv_.notify_all();
  return batch;
}

void Task::requeue(std::shared_ptr<ReadyBatch> batch) {
  {
    std::lock_guard lock(mu_);
    ++stats_.batches_requeued;
    ready_.push_front(std::move(batch));
  }
  ready_cv_.notify_one();
}

void Task::delivered(const ReadyBatch& batch, uint64_t consumer_id) {
  std::lock_guard lock(mu_);
  const SplitKey key{batch.descriptor.iteration, batch.lane, batch.descriptor.split_id};
  auto split = splits_.find(key);
  if (split != splits_.end() && split->second.outstanding > 0) --split->second.outstanding;
  auto& it = iterations_[batch.descriptor.iteration];
  if (it.outstanding > 0) --it.outstanding;
  ++it.delivered[consumer_id];
  ++stats_.batches_delivered;
  settle_locked(key);
  maybe_report_iteration_locked(batch.descriptor.iteration);
}

void Task::settle_locked(const SplitKey& key) {
  auto it = splits_.find(key);
  if (it == splits_.end() || !it->second.produced || it->second.outstanding != 0) return;
  splits_.erase(it);
  {
    std::lock_guard held(unacknowledged_->mu);
    unacknowledged_->keys.insert(key);
  }
  ++stats_.splits_done;
  control::Message report;
  auto* done = report.mutable_split_done();
  done->set_worker_id(env_.worker_id());
  done->set_job_id(job_id_);
  done->set_iteration(key.iteration);
  done->set_lane(key.lane);
  done->set_split_id(key.split);
  env_.reporter->submit(std::move(report), [unacknowledged = unacknowledged_, key](const Status&) {
    // Acknowledged, or refused for good (the job is gone): no longer held.
    std::lock_guard lock(unacknowledged->mu);
    unacknowledged->keys.erase(key);
  });
}

void Task::maybe_report_iteration_locked(uint64_t iteration) {
  auto found = iterations_.find(iteration);
  if (found == iterations_.end()) return;
  IterationProgress& it = found->second;
  if (it.reported || it.outstanding != 0 || !produced_locked(iteration)) return;
  it.reported = true;
  ready_cv_.notify_all();  // batches of the next iteration may go out now
  publish_oldest_locked();
  if (it.splits != 0) {  // a participant: tell what each consumer got
    control::Message report;
    auto* done = report.mutable_iteration_done();
    done->set_worker_id(env_.worker_id());
    done->set_job_id(job_id_);
    done->set_iteration(iteration);
    for (const auto& [consumer, batches] : it.delivered) {
      auto* count = done->add_batches();
      count->set_consumer_id(consumer);
      count->set_batches(batches);
    }
    spdlog::debug("worker: job {} iteration {} done here: {} splits", job_id_, iteration,
                  it.splits);
    env_.reporter->submit(std::move(report));
  }
}

void Task::fail(const Status& why) {
  if (cancel_.exchange(true)) return;
  spdlog::error("worker: job {} ('{}') failed: {}", job_id_, job_name_, why.to_string());
  control::Message report;
  auto* failed = report.mutable_task_failed();
  failed->set_worker_id(env_.worker_id());
  failed->set_job_id(job_id_);
  failed->mutable_error()->set_code(static_cast<uint32_t>(why.code()));
  failed->mutable_error()->set_message(why.message());
  env_.reporter->submit(std::move(report));
  nudge();
  ready_cv_.notify_all();
  space_cv_.notify_all();
}

control::TaskState Task::held() const {
  std::lock_guard lock(mu_);
  control::TaskState state;
  state.set_job_id(job_id_);
  const auto add = [&](const SplitKey& key) {
    auto* h = state.add_held();
    h->set_iteration(key.iteration);
    h->set_lane(key.lane);
    h->set_split_id(key.split);
  };
  for (const auto& [key, progress] : splits_) add(key);
  std::lock_guard unacknowledged(unacknowledged_->mu);
  for (const auto& key : unacknowledged_->keys) add(key);
  return state;
}

TaskStats& TaskStats::operator+=(const TaskStats& other) {
  batches_produced += other.batches_produced;
  bytes_produced += other.bytes_produced;
  batches_delivered += other.batches_delivered;
  batches_requeued += other.batches_requeued;
  splits_done += other.splits_done;
  busy_seconds += other.busy_seconds;
  for (size_t i = 0; i < bad_records.by_reason.size(); ++i) {
    bad_records.by_reason[i] += other.bad_records.by_reason[i];
  }
  consumers += other.consumers;
  memory_bytes += other.memory_bytes;
  return *this;
}

TaskStats Task::stats() const {
  std::lock_guard lock(mu_);
  TaskStats s = stats_;
  s.bad_records = pipeline_->bad_records();
  s.consumers = links_.size();
  s.memory_bytes = memory_->bytes_in_use();
  return s;
}

}  // namespace stoker::workers
