// WorkerDaemon: registration, heartbeats, task lifecycle and /metrics.
#include "workers/worker_daemon.h"

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "pipeline/bad_records.h"
#include "transport/control/control_client.h"
#include "transport/ucx/worker.h"
#include "workers/reporter.h"
#include "workers/send_arena.h"
#include "workers/task.h"

namespace stoker::workers {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(5);

std::string default_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return fmt::format("{}:{}", host, ::getpid());
}

}  // namespace

class WorkerDaemon::Impl {
 public:
  explicit Impl(WorkerOptions options) : options_(std::move(options)) {
    if (options_.name.empty()) options_.name = default_name();
    if (options_.threads == 0) options_.threads = 1;
  }
  ~Impl() { stop(); }

  Status start();
  void stop();
  uint64_t worker_id() const { return worker_id_.load(); }
  std::string metrics() const;
  uint16_t metrics_port() const { return metrics_port_; }

 private:
  std::optional<control::Message> session_request();
  Status on_session(const Result<control::Message>& answer);
  // The coordinator no longer knows this worker (it was declared dead, or the
  // coordinator's journal was reset): the splits our tasks hold are no longer
  // ours. Stops the tasks now, before they ask for splits as the new worker;
  // the tasks thread drops them, and the new worker starts from an empty
  // assignment.
  void forget_registration(const Status& why);
  // Registers as a new worker on the open connection: a worker declared dead
  // while its connection stayed up (it froze, or its host stalled).
  void register_anew();
  void heartbeat_loop();
  // The tasks thread: applies each assignment the heartbeats bring.
  void tasks_loop();
  void apply_assignment(const control::WorkerHeartbeatResponse& response);
  void drop_tasks();
  void report_start_failure(uint64_t job_id, const Status& why);
  void wake();

  WorkerOptions options_;
  std::unique_ptr<SendArena> arena_;
  TransportContext transport_;
  std::unique_ptr<control::ControlClient> control_;
  std::unique_ptr<Reporter> reporter_;
  std::atomic<uint64_t> worker_id_{0};

  // Heartbeats and tasks run on threads of their own. Starting a task (its
  // pipeline may scan files) and closing links to consumers that answer
  // nothing (seconds each) happen on the tasks thread, so they never hold up
  // a heartbeat: a worker that is merely busy is not declared dead.
  std::mutex assignment_mu_;
  std::condition_variable assignment_cv_;
  control::WorkerHeartbeatResponse assignment_;  // the one in force
  uint64_t assignment_version_ = 0;
  bool assignment_pending_ = false;  // a heartbeat answered since the last apply
  bool drop_tasks_pending_ = false;  // registered anew: every task is void

  // Guards the map only, never held while a task starts, updates or stops:
  // the heartbeat thread reads the tasks' counters under it. Only the tasks
  // thread adds or removes tasks (and stop(), after joining it), so that
  // thread may use a task outside the lock.
  mutable std::mutex tasks_mu_;
  std::map<uint64_t, std::unique_ptr<Task>> tasks_;
  TaskStats retired_stats_;  // of tasks that ended, for the counters
  // Tasks thread only: jobs that could not start here; reported once.
  std::set<uint64_t> failed_jobs_;

  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool woken_ = false;
  std::atomic<bool> stopping_{false};
  std::thread heartbeat_thread_;
  std::thread tasks_thread_;

  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  uint16_t metrics_port_ = 0;
};

std::optional<control::Message> WorkerDaemon::Impl::session_request() {
  control::Message m;
  auto* r = m.mutable_register_worker();
  r->set_worker_id(worker_id_.load());
  r->set_name(options_.name);
  r->set_threads(options_.threads);
  // A new worker holds nothing: tasks of a void registration may not have
  // been dropped yet, and their splits are no longer ours to claim.
  if (r->worker_id() == 0) return m;
  std::lock_guard lock(tasks_mu_);
  for (const auto& [id, task] : tasks_) *r->add_tasks() = task->held();
  return m;
}

Status WorkerDaemon::Impl::on_session(const Result<control::Message>& answer) {
  if (answer.is_ok() && answer->has_worker_registered()) {
    const uint64_t previous = worker_id_.exchange(answer->worker_registered().worker_id());
    if (previous != 0 && previous != worker_id_.load()) {
      spdlog::warn("worker: registered anew as worker {} (was {})", worker_id_.load(), previous);
    }
    wake();
    return Status::ok();
  }
  if (!answer.is_ok() && answer.status().code() == StatusCode::kNotFound) {
    forget_registration(answer.status());
    return answer.status();  // the client registers again, as a new worker
  }
  return answer.is_ok() ? protocol_error("unexpected answer to register_worker") : answer.status();
}

void WorkerDaemon::Impl::forget_registration(const Status& why) {
  spdlog::warn("worker: {}; dropping its tasks", why.message());
  worker_id_ = 0;
  {
    std::lock_guard lock(tasks_mu_);
    for (auto& [id, task] : tasks_) task->request_stop();
  }
  {
    std::lock_guard lock(assignment_mu_);
    assignment_version_ = 0;
    assignment_.Clear();
    drop_tasks_pending_ = true;
    assignment_pending_ = true;
  }
  assignment_cv_.notify_all();
  wake();
}

void WorkerDaemon::Impl::register_anew() {
  auto answer = control_->call(*session_request(), kCallTimeout);
  if (Status st = on_session(answer); st.is_ok()) {
    spdlog::warn("worker: registered anew as worker {}", worker_id_.load());
  } else {
    spdlog::warn("worker: registering anew: {}", st.to_string());
  }
}

Status WorkerDaemon::Impl::start() {
  STOKER_ASSIGN_OR_RETURN(arena_, SendArena::create(options_.memory_budget));
  // One UCX context for the control connection and every consumer link;
  // batches only leave this process.
  STOKER_ASSIGN_OR_RETURN(transport_, TransportContext::create_for_sending());
  control::ControlClientOptions client{
      .server_address = options_.coordinator_address,
      .role = control::ROLE_WORKER,
      .name = options_.name,
      .secret = options_.secret,
      .retry_for = options_.connect_retry,
      .give_up = options_.give_up_starting,
      .session_request = [this] { return session_request(); },
      .on_session = [this](const Result<control::Message>& a) { return on_session(a); },
      .on_notice = [this](const control::Message&) { wake(); },
      .context = transport_};
  STOKER_ASSIGN_OR_RETURN(control_, control::ControlClient::connect(std::move(client)));
  reporter_ = std::make_unique<Reporter>(*control_);
  spdlog::info(
      "worker: registered as worker {} with the coordinator at {} ({} threads, {} MiB "
      "budget)",
      worker_id_.load(), options_.coordinator_address, options_.threads, arena_->capacity() >> 20);
  if (options_.metrics_port != 0) {
    http_ = std::make_unique<httplib::Server>();
    http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    if (!http_->bind_to_port(options_.metrics_host, options_.metrics_port)) {
      return io_error(fmt::format("cannot serve /metrics on {}:{}", options_.metrics_host,
                                  options_.metrics_port));
    }
    metrics_port_ = options_.metrics_port;
    http_thread_ = std::thread([this] { http_->listen_after_bind(); });
  }
  heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
  tasks_thread_ = std::thread([this] { tasks_loop(); });
  return Status::ok();
}

void WorkerDaemon::Impl::wake() {
  {
    std::lock_guard lock(wake_mu_);
    woken_ = true;
  }
  wake_cv_.notify_all();
  std::lock_guard lock(tasks_mu_);
  for (auto& [id, task] : tasks_) task->nudge();
}

void WorkerDaemon::Impl::stop() {
  if (stopping_.exchange(true)) return;
  // Calls in flight (a pipeline thread asking for a split) return at once;
  // the coordinator learns of our leaving when the connection closes.
  if (control_) control_->shutdown();
  wake();
  {
    std::lock_guard lock(assignment_mu_);  // a tasks thread about to wait sees stopping_
  }
  assignment_cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (tasks_thread_.joinable()) tasks_thread_.join();
  std::map<uint64_t, std::unique_ptr<Task>> tasks;
  {
    std::lock_guard lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  for (auto& [id, task] : tasks) task->request_stop();  // all at once: see Task::request_stop
  tasks.clear();  // each closes its consumer links (goodbye to each consumer)
  if (reporter_) reporter_->stop();
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
  control_.reset();
}

void WorkerDaemon::Impl::heartbeat_loop() {
  while (!stopping_.load()) {
    if (worker_id_.load() == 0 && control_->connected()) register_anew();
    if (worker_id_.load() != 0) {
      control::Message m;
      auto* hb = m.mutable_worker_heartbeat();
      hb->set_worker_id(worker_id_.load());
      {
        std::lock_guard lock(assignment_mu_);
        hb->set_assignment_version(assignment_version_);
      }
      {
        std::lock_guard lock(tasks_mu_);
        TaskStats total = retired_stats_;
        for (const auto& [id, task] : tasks_) total += task->stats();
        hb->mutable_stats()->set_batches_produced(total.batches_produced);
        hb->mutable_stats()->set_bytes_produced(total.bytes_produced);
        hb->mutable_stats()->set_busy_seconds(total.busy_seconds);
        hb->mutable_stats()->set_bad_records(total.bad_records.total());
      }
      auto answer = control_->call(m, kCallTimeout);
      if (answer.is_ok() && answer->has_worker_heartbeat_response()) {
        const auto& response = answer->worker_heartbeat_response();
        std::lock_guard lock(assignment_mu_);
        if (!response.unchanged()) {
          assignment_ = response;
          assignment_version_ = response.assignment_version();
        }
        // Applied every time, also unchanged: links that failed are retried.
        assignment_pending_ = true;
        assignment_cv_.notify_all();
      } else if (!answer.is_ok() && answer.status().code() == StatusCode::kNotFound &&
                 hb->worker_id() == worker_id_.load()) {
        // (Not when the session registered anew while this heartbeat, sent
        // with the old id, waited for the reconnection.)
        forget_registration(answer.status());
        continue;  // registers anew at once
      } else if (!answer.is_ok()) {
        spdlog::debug("worker: heartbeat: {}", answer.status().to_string());
      }
    }
    std::unique_lock lock(wake_mu_);
    wake_cv_.wait_for(lock, std::chrono::milliseconds(control_->heartbeat_interval_ms()),
                      [&] { return woken_ || stopping_.load(); });
    woken_ = false;
  }
}

void WorkerDaemon::Impl::tasks_loop() {
  while (true) {
    control::WorkerHeartbeatResponse assignment;
    bool drop = false;
    {
      std::unique_lock lock(assignment_mu_);
      assignment_cv_.wait(lock, [&] { return assignment_pending_ || stopping_.load(); });
      if (stopping_.load()) return;
      assignment_pending_ = false;
      drop = std::exchange(drop_tasks_pending_, false);
      assignment = assignment_;
    }
    if (drop) drop_tasks();
    apply_assignment(assignment);
  }
}

void WorkerDaemon::Impl::drop_tasks() {
  std::map<uint64_t, std::unique_ptr<Task>> dropped;
  {
    std::lock_guard lock(tasks_mu_);
    dropped.swap(tasks_);
  }
  for (auto& [id, task] : dropped) task->request_stop();
  dropped.clear();
}

void WorkerDaemon::Impl::apply_assignment(const control::WorkerHeartbeatResponse& response) {
  std::set<uint64_t> assigned;
  std::vector<std::unique_ptr<Task>> ended;
  std::vector<std::pair<Task*, const control::TaskAssignment*>> updating;
  std::vector<const control::TaskAssignment*> starting;
  {
    std::lock_guard lock(tasks_mu_);
    for (const auto& a : response.tasks()) {
      assigned.insert(a.job_id());
      auto it = tasks_.find(a.job_id());
      if (it != tasks_.end()) {
        updating.emplace_back(it->second.get(), &a);
      } else if (!failed_jobs_.contains(a.job_id())) {
        starting.push_back(&a);
      }
    }
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      if (!assigned.contains(it->first)) {
        TaskStats ended_stats = it->second->stats();
        ended_stats.consumers = 0;     // its links close with it
        ended_stats.memory_bytes = 0;  // and its buffers return
        retired_stats_ += ended_stats;
        ended.push_back(std::move(it->second));
        it = tasks_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto [task, a] : updating) task->update(*a);  // may close links: seconds
  for (auto& task : ended) {
    spdlog::info("worker: job {} ended", task->job_id());
    task.reset();
  }
  for (const auto* a : starting) {
    TaskEnvironment env{
        .control = control_.get(),
        .reporter = reporter_.get(),
        .arena = arena_.get(),
        .worker_id = [this] { return worker_id_.load(); },
        .worker_name = fmt::format("worker-{} ({})", worker_id_.load(), options_.name),
        .transport = transport_,
        .threads = options_.threads,
        .push_mode = options_.push_mode,
        .busy_poll = options_.busy_poll};
    auto task = Task::start(std::move(env), *a);
    if (task.is_ok()) {
      std::lock_guard lock(tasks_mu_);
      tasks_[a->job_id()] = std::move(task).value();
    } else {
      failed_jobs_.insert(a->job_id());
      report_start_failure(a->job_id(), task.status());
    }
  }
}

void WorkerDaemon::Impl::report_start_failure(uint64_t job_id, const Status& why) {
  spdlog::error("worker: cannot run job {}: {}", job_id, why.to_string());
  control::Message report;
  auto* failed = report.mutable_task_failed();
  failed->set_worker_id(worker_id_.load());
  failed->set_job_id(job_id);
  failed->mutable_error()->set_code(static_cast<uint32_t>(why.code()));
  failed->mutable_error()->set_message(why.message());
  reporter_->submit(std::move(report));
}

std::string WorkerDaemon::Impl::metrics() const {
  TaskStats total;
  size_t tasks = 0;
  std::map<uint64_t, size_t> memory_by_job;
  {
    std::lock_guard lock(tasks_mu_);
    total = retired_stats_;
    tasks = tasks_.size();
    for (const auto& [id, task] : tasks_) {
      const TaskStats stats = task->stats();
      memory_by_job[id] = stats.memory_bytes;
      total += stats;
    }
  }
  std::string out;
  const auto metric = [&](std::string_view name, std::string_view type, std::string_view help,
                          auto value) {
    out +=
        fmt::format("# HELP stoker_worker_{} {}\n# TYPE stoker_worker_{} {}\nstoker_worker_{} {}\n",
                    name, help, name, type, name, value);
  };
  metric("batches_produced_total", "counter", "Batches the pipelines produced.",
         total.batches_produced);
  metric("bytes_produced_total", "counter", "Payload bytes the pipelines produced.",
         total.bytes_produced);
  metric("batches_delivered_total", "counter", "Batches that completed sending to a consumer.",
         total.batches_delivered);
  metric("batches_requeued_total", "counter",
         "Batches given to another consumer because theirs died first.", total.batches_requeued);
  metric("splits_done_total", "counter", "Splits fully produced and delivered.", total.splits_done);
  metric("busy_seconds_total", "counter", "Pipeline thread time spent producing.",
         total.busy_seconds);
  metric("tasks", "gauge", "Jobs running here.", tasks);
  metric("consumer_links", "gauge", "Connections to consumers.", total.consumers);
  metric("memory_budget_bytes", "gauge", "The send arena's size.", arena_->capacity());
  metric("memory_in_use_bytes", "gauge", "Send buffers held by batches.", arena_->bytes_in_use());
  out +=
      "# HELP stoker_worker_job_memory_in_use_bytes Send buffers held by each job's batches.\n"
      "# TYPE stoker_worker_job_memory_in_use_bytes gauge\n";
  for (const auto& [job, bytes] : memory_by_job) {
    out += fmt::format("stoker_worker_job_memory_in_use_bytes{{job=\"{}\"}} {}\n", job, bytes);
  }
  out +=
      "# HELP stoker_worker_bad_records_total Bad records met, by reason.\n"
      "# TYPE stoker_worker_bad_records_total counter\n";
  for (size_t i = 0; i < total.bad_records.by_reason.size(); ++i) {
    out += fmt::format("stoker_worker_bad_records_total{{reason=\"{}\"}} {}\n",
                       pipeline::bad_record_reason_name(static_cast<pipeline::BadRecordReason>(i)),
                       total.bad_records.by_reason[i]);
  }
  return out;
}

WorkerDaemon::WorkerDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerDaemon::~WorkerDaemon() { stop(); }

Result<std::unique_ptr<WorkerDaemon>> WorkerDaemon::start(WorkerOptions options) {
  STOKER_RETURN_IF_ERROR(ucx::check_busy_poll(options.busy_poll));
  auto impl = std::make_unique<Impl>(std::move(options));
  STOKER_RETURN_IF_ERROR(impl->start());
  return std::unique_ptr<WorkerDaemon>(new WorkerDaemon(std::move(impl)));
}

void WorkerDaemon::stop() { impl_->stop(); }
uint64_t WorkerDaemon::worker_id() const { return impl_->worker_id(); }
std::string WorkerDaemon::metrics() const { return impl_->metrics(); }
uint16_t WorkerDaemon::metrics_port() const { return impl_->metrics_port(); }

}  // namespace stoker::workers
