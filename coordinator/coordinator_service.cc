// Coordinator::Service: request handling, liveness, job lifecycle and the
// journal-before-apply discipline (commit()).
#include "coordinator/coordinator_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "pipeline/pipeline.h"
#include "pipeline/pipeline_spec.h"
#include "pipeline/split_message.h"
#include "transport/control/control_frame.h"

namespace stoker::coordinator {
namespace {

using control::Message;

std::string_view sharding_name(control::ShardingMode mode) {
  switch (mode) {
    case control::SHARDING_OFF:
      return "off";
    case control::SHARDING_DYNAMIC:
      return "dynamic";
    case control::SHARDING_FILE:
      return "file";
    case control::SHARDING_DATA:
      return "data";
    default:
      return "unspecified";
  }
}

// The first place two canonical specs differ, as "path: a vs b".
std::string spec_difference(const std::string& ours, const std::string& theirs) {
  auto a = nlohmann::json::parse(ours, nullptr, false);
  auto b = nlohmann::json::parse(theirs, nullptr, false);
  if (a.is_discarded() || b.is_discarded()) return "the pipeline specs differ";
  const auto patch = nlohmann::json::diff(a, b);
  if (patch.empty()) return "the pipeline specs differ";
  const auto& op = patch.front();
  const std::string path = op.value("path", "");
  const nlohmann::json::json_pointer pointer(path);
  const std::string existing = a.contains(pointer) ? a.at(pointer).dump() : "(absent)";
  const std::string wanted = b.contains(pointer) ? b.at(pointer).dump() : "(absent)";
  return fmt::format("pipeline spec field {} is {} in the job, {} in this request",
                     path.empty() ? "/" : path, existing, wanted);
}

Message ack() {
  Message m;
  m.mutable_ack();
  return m;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

class Coordinator::Service : public control::ControlHandler {
 public:
  explicit Service(CoordinatorOptions options) : options_(std::move(options)) {
    if (options_.liveness_timeout.count() == 0) {
      options_.liveness_timeout = 5 * options_.heartbeat_interval;
    }
    if (options_.reconnect_grace.count() == 0) {
      options_.reconnect_grace = 2 * options_.heartbeat_interval;
    }
  }

  Status start();
  void stop() {
    if (server_) server_->stop();
  }
  std::string address() const { return server_->address(); }
  uint16_t port() const { return server_->port(); }

  Result<Message> on_request(control::ConnectionId connection, const control::PeerInfo& peer,
                             const Message& request) override;
  void on_disconnect(control::ConnectionId connection, const control::PeerInfo& peer,
                     const Status& why) override;
  void on_tick() override;
  void before_answers() override;

 private:
  // Journals `record`, then applies it. Nothing changes unless both succeed.
  Status commit(const JournalRecord& record);

  Result<Message> register_worker(control::ConnectionId connection, const control::PeerInfo& peer,
                                  const control::RegisterWorker& r);
  Result<WorkerRecord*> bound_worker(control::ConnectionId connection, uint64_t worker_id);
  Result<Message> worker_heartbeat(WorkerRecord& w, const control::WorkerHeartbeat& r);
  Result<Message> get_split(WorkerRecord& w, const control::GetSplit& r);
  // Journals that `worker` gets the unit (lane, split) of `iteration`.
  Status assign(const Job& job, uint64_t iteration, std::pair<uint64_t, uint64_t> unit,
                uint64_t worker, uint64_t request_id);
  Result<Message> split_done(WorkerRecord& w, const control::SplitDone& r);
  Result<Message> iteration_done(WorkerRecord& w, const control::IterationDone& r);
  Result<Message> task_failed(WorkerRecord& w, const control::TaskFailed& r);
  Result<Message> join_job(control::ConnectionId connection, const control::PeerInfo& peer,
                           const control::JoinJob& r);
  Result<ConsumerRecord*> bound_consumer(control::ConnectionId connection, uint64_t consumer_id);
  Result<Message> consumer_heartbeat(ConsumerRecord& c, const control::ConsumerHeartbeat& r);
  Result<Message> leave_job(ConsumerRecord& c);
  Message describe_cluster() const;
  Result<Message> describe_pipeline(const control::DescribePipeline& r) const;

  Result<Job*> create_job(const control::JoinJob& r);
  Status reconcile(WorkerRecord& w, const control::RegisterWorker& r);
  void remove_worker(WorkerRecord& w, const std::string& reason);
  void remove_consumer(ConsumerRecord& c, const std::string& reason);
  void fill_task(const Job& job, control::TaskAssignment* task) const;
  // This thread is the only one reading peers' heartbeats: after it was
  // busy for a while (a job's splits enumerated, a slow disk), heartbeats
  // that came meanwhile sit unread, and the time away must not count
  // against the peers.
  void forgive_stall(Clock::time_point now);
  // Tells workers (and the consumers of `job`, when given) to ask for news now.
  void nudge_workers();
  void nudge_consumers(const Job& job);
  void nudge(std::optional<uint64_t> connection);
  uint32_t suggested_workers() const;
  // Retires the iterations of `job` no consumer can ask about any more.
  void retire_iterations(const Job& job);
  // Rewrites the journal as a snapshot of the state once it has grown enough.
  void maybe_compact();

  CoordinatorOptions options_;
  CoordinatorState state_;
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<control::ControlServer> server_;
  Clock::time_point started_ = Clock::now();
  // When on_tick last ran (see forgive_stall()).
  std::optional<Clock::time_point> last_tick_;
  // Changes whenever the tasks or their consumers change; workers send the
  // one they run and get the assignment only when it differs. Not journaled:
  // each coordinator start picks a random base, so after a restart every
  // worker gets its assignment again (and 0, "none yet", never matches).
  uint64_t assignment_version_ = (std::random_device{}() | 1ULL) << 20;
  // Which sessions (worker and consumer ids) each connection carries: a
  // connection may multiplex several (load generators do).
  std::map<control::ConnectionId, std::set<uint64_t>> workers_on_;
  std::map<control::ConnectionId, std::set<uint64_t>> consumers_on_;
  // The journal's size after its last compaction (0: none since the start).
  uint64_t snapshot_bytes_ = 0;
};

Status Coordinator::Service::start() {
  if (options_.work_dir.empty()) return invalid_argument("the coordinator needs a work dir");
  ReplayStats replay;
  STOKER_ASSIGN_OR_RETURN(
      journal_,
      Journal::open(
          options_.work_dir, options_.durability,
          [this](std::span<const std::byte> payload, uint64_t) -> Status {
            JournalRecord record;
            if (!record.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
              return data_loss("a record is not a valid JournalRecord");
            }
            return state_.apply(record);
          },
          &replay));
  if (replay.records > 0) {
    spdlog::info(
        "coordinator: replayed {} journal records ({} bytes): {} workers, {} consumers, {} jobs",
        replay.records, replay.bytes, state_.live_workers().size(), state_.consumers().size(),
        state_.jobs().size());
  }
  // Every peer restored from the journal gets a full liveness period to come back.
  const auto now = Clock::now();
  for (const auto& [id, w] : state_.workers()) state_.worker(id)->last_seen = now;
  for (const auto& [id, c] : state_.consumers()) state_.consumer(id)->last_seen = now;
  STOKER_ASSIGN_OR_RETURN(
      server_,
      control::ControlServer::start(
          {.listen_address = options_.listen_address,
           .secret = options_.secret,
           .heartbeat_interval_ms = static_cast<uint32_t>(options_.heartbeat_interval.count())},
          this));
  spdlog::info("coordinator: serving on {} (work dir {}, heartbeat {} ms, liveness timeout {} ms)",
               server_->address(), options_.work_dir, options_.heartbeat_interval.count(),
               options_.liveness_timeout.count());
  return Status::ok();
}

Status Coordinator::Service::commit(const JournalRecord& record) {
  std::string bytes;
  if (!record.SerializeToString(&bytes)) return internal_error("serializing a journal record");
  if (Status st = journal_->append(std::as_bytes(std::span(bytes))); !st.is_ok()) {
    // A failed append was cut off again: nothing changed, and the request
    // fails (a retry may succeed once there is space). A journal that could
    // not be cut off takes no more records: stop (docs/architecture.md, "Errors").
    if (!journal_->usable()) {
      spdlog::critical("coordinator: the journal cannot be written: {}", st.to_string());
      std::abort();
    }
    return st;
  }
  switch (record.change_case()) {
    case JournalRecord::kJobCreated:
    case JournalRecord::kJobFailed:
    case JournalRecord::kJobRemoved:
    case JournalRecord::kConsumerJoined:
    case JournalRecord::kConsumerRemoved:
      ++assignment_version_;  // what workers run, and for whom, changed
      break;
    default:
      break;
  }
  if (Status st = state_.apply(record); !st.is_ok()) {
    // The record is on disk and a replay would fail on it too: stop rather
    // than run on a state the journal cannot rebuild.
    spdlog::critical("coordinator: journaled a record it cannot apply: {}", st.to_string());
    std::abort();
  }
  return Status::ok();
}

void Coordinator::Service::before_answers() {
  if (Status st = journal_->sync(); !st.is_ok()) {
    spdlog::critical("coordinator: the journal cannot be made durable: {}", st.to_string());
    std::abort();
  }
}

Result<Message> Coordinator::Service::on_request(control::ConnectionId connection,
                                                 const control::PeerInfo& peer,
                                                 const Message& request) {
  const auto require = [&](control::Role role) -> Status {
    if (peer.role == role || peer.role == control::ROLE_ADMIN) return Status::ok();
    return invalid_argument(fmt::format("{} is not a request a peer of this role may make",
                                        control::body_name(request)));
  };
  switch (request.body_case()) {
    case Message::kRegisterWorker:
      STOKER_RETURN_IF_ERROR(require(control::ROLE_WORKER));
      return register_worker(connection, peer, request.register_worker());
    case Message::kWorkerHeartbeat: {
      STOKER_ASSIGN_OR_RETURN(auto* w,
                              bound_worker(connection, request.worker_heartbeat().worker_id()));
      return worker_heartbeat(*w, request.worker_heartbeat());
    }
    case Message::kGetSplit: {
      STOKER_ASSIGN_OR_RETURN(auto* w, bound_worker(connection, request.get_split().worker_id()));
      return get_split(*w, request.get_split());
    }
    case Message::kSplitDone: {
      STOKER_ASSIGN_OR_RETURN(auto* w, bound_worker(connection, request.split_done().worker_id()));
      return split_done(*w, request.split_done());
    }
    case Message::kIterationDone: {
      STOKER_ASSIGN_OR_RETURN(auto* w,
                              bound_worker(connection, request.iteration_done().worker_id()));
      return iteration_done(*w, request.iteration_done());
    }
    case Message::kTaskFailed: {
      STOKER_ASSIGN_OR_RETURN(auto* w, bound_worker(connection, request.task_failed().worker_id()));
      return task_failed(*w, request.task_failed());
    }
    case Message::kJoinJob:
      STOKER_RETURN_IF_ERROR(require(control::ROLE_CONSUMER));
      return join_job(connection, peer, request.join_job());
    case Message::kConsumerHeartbeat: {
      STOKER_ASSIGN_OR_RETURN(
          auto* c, bound_consumer(connection, request.consumer_heartbeat().consumer_id()));
      return consumer_heartbeat(*c, request.consumer_heartbeat());
    }
    case Message::kLeaveJob: {
      STOKER_ASSIGN_OR_RETURN(auto* c,
                              bound_consumer(connection, request.leave_job().consumer_id()));
      return leave_job(*c);
    }
    case Message::kDescribeCluster:
      return describe_cluster();
    case Message::kDescribePipeline:
      return describe_pipeline(request.describe_pipeline());
    default:
      return unsupported(
          fmt::format("the coordinator does not take {} requests", control::body_name(request)));
  }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

Result<Message> Coordinator::Service::register_worker(control::ConnectionId connection,
                                                      const control::PeerInfo& peer,
                                                      const control::RegisterWorker& r) {
  WorkerRecord* w = nullptr;
  if (r.worker_id() == 0) {
    JournalRecord record;
    auto* reg = record.mutable_worker_registered();
    reg->set_worker_id(state_.next_worker_id());
    reg->set_name(r.name().empty() ? peer.name : r.name());
    reg->set_address(peer.address);
    reg->set_threads(r.threads());
    STOKER_RETURN_IF_ERROR(commit(record));
    w = state_.worker(reg->worker_id());
    spdlog::info("coordinator: worker {} ({}) registered from {}", w->id, w->name, peer.address);
    nudge_workers();
  } else {
    w = state_.worker(r.worker_id());
    if (w == nullptr || !w->alive) {
      return not_found(fmt::format(
          "worker {} is not registered here (it was declared dead, or the coordinator's journal "
          "was reset): register as a new worker",
          r.worker_id()));
    }
    STOKER_RETURN_IF_ERROR(reconcile(*w, r));
    spdlog::info("coordinator: worker {} ({}) reconnected from {}", w->id, w->name, peer.address);
  }
  if (w->connection) workers_on_[*w->connection].erase(w->id);
  w->connection = connection;
  w->disconnected_at.reset();
  w->last_seen = Clock::now();
  workers_on_[connection].insert(w->id);
  Message answer;
  answer.mutable_worker_registered()->set_worker_id(w->id);
  answer.mutable_worker_registered()->set_heartbeat_interval_ms(
      static_cast<uint32_t>(options_.heartbeat_interval.count()));
  return answer;
}

Status Coordinator::Service::reconcile(WorkerRecord& w, const control::RegisterWorker& r) {
  // Units the journal gave this worker that it does not hold: the answer
  // never reached it (the coordinator died first). Back to the queue.
  std::set<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>> held;
  for (const auto& task : r.tasks()) {
    for (const auto& h : task.held())
      held.emplace(task.job_id(), h.iteration(), h.lane(), h.split_id());
  }
  std::vector<JournalRecord> requeue;
  for (const auto& [jid, job] : state_.jobs()) {
    for (const auto& [index, it] : job.iterations) {
      for (const auto& [lane_id, lane] : it.lanes) {
        for (const auto& [split, unit] : lane.units) {
          if (unit.state != SplitUnit::State::kAssigned || unit.worker != w.id) continue;
          if (held.contains({jid, index, lane_id, split})) continue;
          JournalRecord record;
          auto* rq = record.mutable_split_requeued();
          rq->set_job_id(jid);
          rq->set_iteration(index);
          rq->set_split_id(split);
          rq->set_worker_id(w.id);
          rq->set_lane(lane_id);
          requeue.push_back(std::move(record));
        }
      }
    }
  }
  for (const auto& record : requeue) {
    spdlog::info("coordinator: worker {} never received split {} of job {}; requeued", w.id,
                 record.split_requeued().split_id(), record.split_requeued().job_id());
    STOKER_RETURN_IF_ERROR(commit(record));
  }
  return Status::ok();
}

Result<WorkerRecord*> Coordinator::Service::bound_worker(control::ConnectionId connection,
                                                         uint64_t worker_id) {
  WorkerRecord* w = state_.worker(worker_id);
  if (w == nullptr || !w->alive) {
    return not_found(fmt::format(
        "worker {} is not registered here (declared dead, or the journal was reset): register as "
        "a new worker",
        worker_id));
  }
  auto on = workers_on_.find(connection);
  if (on == workers_on_.end() || !on->second.contains(worker_id)) {
    return failed_precondition(fmt::format(
        "worker {} has not registered on this connection: send register_worker first", worker_id));
  }
  w->last_seen = Clock::now();
  return w;
}

void Coordinator::Service::fill_task(const Job& job, control::TaskAssignment* task) const {
  task->set_job_id(job.id);
  task->set_job_name(job.name);
  task->set_pipeline_spec(job.pipeline_spec);
  *task->mutable_options() = job.options;
  for (uint64_t cid : job.consumers) {
    auto it = state_.consumers().find(cid);
    if (it == state_.consumers().end() || !it->second.alive) continue;
    auto* c = task->add_consumers();
    c->set_consumer_id(cid);
    c->set_address(it->second.address);
    c->set_access_token(it->second.access_token);
    c->set_name(it->second.name);
  }
}

Result<Message> Coordinator::Service::worker_heartbeat(WorkerRecord& w,
                                                       const control::WorkerHeartbeat& r) {
  w.stats = r.stats();
  Message answer;
  auto* response = answer.mutable_worker_heartbeat_response();
  response->set_assignment_version(assignment_version_);
  if (r.assignment_version() == assignment_version_) {
    response->set_unchanged(true);
    return answer;
  }
  for (const auto& [id, job] : state_.jobs()) {
    if (job.failed || state_.job_finished(job)) continue;
    fill_task(job, response->add_tasks());
  }
  return answer;
}

Status Coordinator::Service::assign(const Job& job, uint64_t iteration,
                                    std::pair<uint64_t, uint64_t> unit, uint64_t worker,
                                    uint64_t request_id) {
  JournalRecord record;
  auto* assigned = record.mutable_split_assigned();
  assigned->set_job_id(job.id);
  assigned->set_iteration(iteration);
  assigned->set_lane(unit.first);
  assigned->set_split_id(unit.second);
  assigned->set_worker_id(worker);
  assigned->set_request_id(request_id);
  return commit(record);
}

Result<Message> Coordinator::Service::get_split(WorkerRecord& w, const control::GetSplit& r) {
  Message answer;
  auto* response = answer.mutable_get_split_response();
  Job* job = state_.job(r.job_id());
  if (job == nullptr || job->failed || state_.job_finished(*job)) {
    response->mutable_end_of_job();
    return answer;
  }
  const auto give = [&](uint64_t iteration, uint64_t lane, uint64_t split) {
    response->set_iteration(iteration);
    *response->mutable_split() =
        state_.split_for(*job, job->iterations.at(iteration).lanes.at(lane), lane, split);
    return answer;
  };
  // A retry of an attempt that was answered (the answer got lost): the same split.
  if (auto unit = state_.unit_for_request(*job, w.id, r.request_id())) {
    return give(unit->iteration, unit->lane, unit->split);
  }
  if (job->consumers.empty()) {
    response->mutable_retry();  // nobody to deliver to
    return answer;
  }
  // Oldest first: units that came back to the queue of an earlier iteration
  // (a worker died; --redeliver) go out before anything new.
  for (auto& [index, iteration] : job->iterations) {
    if (index > r.iteration()) break;
    auto unit = state_.next_unit(*job, iteration, w.id);
    if (!unit) continue;
    STOKER_RETURN_IF_ERROR(assign(*job, index, *unit, w.id, r.request_id()));
    return give(index, unit->first, unit->second);
  }
  if (job->iterations.contains(r.iteration()) || r.iteration() < job->retired_below) {
    response->mutable_end_of_iteration();
    return answer;
  }
  const uint64_t next = CoordinatorState::next_iteration(*job);
  if (r.iteration() != next) {
    return invalid_argument(fmt::format("iteration {} of job {} cannot start: the next is {}",
                                        r.iteration(), job->id, next));
  }
  const uint64_t epochs = job->options.epochs();
  const bool past_the_last = epochs != 0 && r.iteration() >= epochs;
  // Under --redeliver a split of an earlier iteration comes back to the
  // queue when its worker dies, until that iteration is complete. Its
  // batches must reach the consumers, but by then batches of a later
  // iteration, which a consumer keeps in its slots until its current one
  // ends, could hold every slot: the job would hang. So a new iteration
  // starts only once every earlier one is complete; past the last, workers
  // stay around until then.
  if (past_the_last || job->options.redeliver()) {
    for (const auto& [index, iteration] : job->iterations) {
      if (!state_.iteration_complete(*job, iteration)) {
        response->mutable_retry();
        return answer;
      }
    }
  }
  if (past_the_last) {
    response->mutable_end_of_job();
    return answer;
  }
  JournalRecord record;
  auto* started = record.mutable_iteration_started();
  started->set_job_id(job->id);
  started->set_iteration(r.iteration());
  if (job->options.sharding() != control::SHARDING_DYNAMIC) {
    for (uint64_t id : state_.live_workers()) started->add_workers(id);
  }
  STOKER_RETURN_IF_ERROR(commit(record));
  spdlog::info("coordinator: job {} ('{}') starts iteration {}", job->id, job->name, r.iteration());
  auto unit = state_.next_unit(*job, job->iterations.at(r.iteration()), w.id);
  if (!unit) {
    response->mutable_end_of_iteration();
    return answer;
  }
  STOKER_RETURN_IF_ERROR(assign(*job, r.iteration(), *unit, w.id, r.request_id()));
  return give(r.iteration(), unit->first, unit->second);
}

Result<Message> Coordinator::Service::split_done(WorkerRecord& w, const control::SplitDone& r) {
  Job* job = state_.job(r.job_id());
  if (job == nullptr) return ack();  // the job is gone; nothing to account for
  // A retired iteration was complete: every split was done or lost.
  if (r.iteration() < job->retired_below) return ack();
  auto it = job->iterations.find(r.iteration());
  if (it == job->iterations.end()) return not_found("split_done for an unknown iteration");
  auto lane = it->second.lanes.find(r.lane());
  if (lane == it->second.lanes.end()) return not_found("split_done for an unknown lane");
  auto unit = lane->second.units.find(r.split_id());
  if (unit == lane->second.units.end()) return not_found("split_done for an unknown split");
  if (unit->second.state == SplitUnit::State::kDone) return ack();  // a retry
  if (unit->second.state != SplitUnit::State::kAssigned || unit->second.worker != w.id) {
    return failed_precondition(fmt::format("split {} of job {} is not assigned to worker {}",
                                           r.split_id(), r.job_id(), w.id));
  }
  JournalRecord record;
  auto* done = record.mutable_split_done();
  done->set_job_id(r.job_id());
  done->set_iteration(r.iteration());
  done->set_split_id(r.split_id());
  done->set_worker_id(w.id);
  done->set_lane(r.lane());
  STOKER_RETURN_IF_ERROR(commit(record));
  return ack();
}

Result<Message> Coordinator::Service::iteration_done(WorkerRecord& w,
                                                     const control::IterationDone& r) {
  Job* job = state_.job(r.job_id());
  if (job == nullptr || r.iteration() < job->retired_below) return ack();
  auto it = job->iterations.find(r.iteration());
  if (it == job->iterations.end()) return not_found("iteration_done for an unknown iteration");
  JournalRecord record;
  auto* reported = record.mutable_iteration_reported();
  reported->set_job_id(r.job_id());
  reported->set_iteration(r.iteration());
  reported->set_worker_id(w.id);
  *reported->mutable_batches() = r.batches();
  STOKER_RETURN_IF_ERROR(commit(record));
  if (state_.iteration_complete(*job, it->second)) {
    spdlog::info("coordinator: job {} ('{}') iteration {} complete: {} splits done, {} lost",
                 job->id, job->name, r.iteration(), it->second.units_done, it->second.units_lost);
    nudge_consumers(*job);
    nudge_workers();  // those told to retry may start the next iteration
  }
  return ack();
}

Result<Message> Coordinator::Service::task_failed(WorkerRecord& w, const control::TaskFailed& r) {
  Job* job = state_.job(r.job_id());
  if (job == nullptr || job->failed) return ack();
  const Status why = control::status_from_error(r.error());
  spdlog::error("coordinator: job {} ('{}') failed on worker {}: {}", job->id, job->name, w.id,
                why.to_string());
  JournalRecord record;
  auto* failed = record.mutable_job_failed();
  failed->set_job_id(job->id);
  failed->set_error(fmt::format("worker {} ({}): {}", w.id, w.name, why.message()));
  failed->set_code(static_cast<uint32_t>(why.code()));
  STOKER_RETURN_IF_ERROR(commit(record));
  nudge_consumers(*job);
  nudge_workers();
  return ack();
}

// ---------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------

Result<Job*> Coordinator::Service::create_job(const control::JoinJob& r) {
  auto spec = pipeline::parse_pipeline_spec(r.pipeline_spec());
  if (!spec.is_ok()) return spec.status().with_context("the job's pipeline spec");
  STOKER_ASSIGN_OR_RETURN(auto compiled, pipeline::Pipeline::create(*spec));
  STOKER_ASSIGN_OR_RETURN(auto splits, compiled->splits());
  if (splits.empty()) return invalid_argument("the pipeline's source has no records");
  JournalRecord record;
  auto* created = record.mutable_job_created();
  created->set_job_id(state_.next_job_id());
  created->set_name(r.job_name());
  created->set_pipeline_spec(pipeline::canonical_json(*spec));
  created->set_fingerprint(pipeline::fingerprint(*spec));
  *created->mutable_options() = r.options();
  if (created->options().sharding() == control::SHARDING_UNSPECIFIED) {
    created->mutable_options()->set_sharding(control::SHARDING_DYNAMIC);
  }
  created->set_shuffle_seed(spec->seed);
  for (size_t i = 0; i < splits.size(); ++i) {
    if (splits[i].id != i) {
      return internal_error(
          fmt::format("the pipeline enumerated split {} at position {}", splits[i].id, i));
    }
    *created->add_splits() = pipeline::message_of(splits[i]);
  }
  STOKER_RETURN_IF_ERROR(commit(record));
  Job* job = state_.job(created->job_id());
  spdlog::info("coordinator: job {} ('{}') created: {} splits, sharding {}, {} epochs{}", job->id,
               job->name, job->splits.size(), sharding_name(job->options.sharding()),
               job->options.epochs(), job->options.redeliver() ? ", redelivery" : "");
  return job;
}

Result<Message> Coordinator::Service::join_job(control::ConnectionId connection,
                                               const control::PeerInfo& peer,
                                               const control::JoinJob& r) {
  ConsumerRecord* c = nullptr;
  if (r.consumer_id() != 0) {
    c = state_.consumer(r.consumer_id());
    if (c == nullptr || !c->alive) {
      return not_found(fmt::format(
          "consumer {} was declared dead (no heartbeat or connection in time) or is unknown: "
          "open a new reader",
          r.consumer_id()));
    }
  } else {
    if (r.receiver_address().empty()) return invalid_argument("join_job needs a receiver address");
    Job* job = state_.job_named(r.job_name());
    if (job != nullptr && job->consumers.empty() && (job->failed || state_.job_finished(*job))) {
      // A finished job nobody reads any more: the name starts a new one.
      JournalRecord removed;
      removed.mutable_job_removed()->set_job_id(job->id);
      removed.mutable_job_removed()->set_reason("finished; its name was reused");
      STOKER_RETURN_IF_ERROR(commit(removed));
      job = nullptr;
    }
    if (job != nullptr) {
      auto spec = pipeline::parse_pipeline_spec(r.pipeline_spec());
      if (!spec.is_ok()) return spec.status().with_context("the job's pipeline spec");
      if (pipeline::fingerprint(*spec) != job->fingerprint) {
        return already_exists(
            fmt::format("job '{}' exists with a different pipeline: {}", job->name,
                        spec_difference(job->pipeline_spec, pipeline::canonical_json(*spec))));
      }
      auto sharding = r.options().sharding() == control::SHARDING_UNSPECIFIED
                          ? control::SHARDING_DYNAMIC
                          : r.options().sharding();
      if (sharding != job->options.sharding() ||
          r.options().redeliver() != job->options.redeliver() ||
          r.options().epochs() != job->options.epochs()) {
        return already_exists(fmt::format(
            "job '{}' exists with sharding {}, redeliver {}, epochs {}; this request asks for "
            "sharding {}, redeliver {}, epochs {}",
            job->name, sharding_name(job->options.sharding()), job->options.redeliver(),
            job->options.epochs(), sharding_name(sharding), r.options().redeliver(),
            r.options().epochs()));
      }
      if (job->failed) return job->error.with_context(fmt::format("job '{}' failed", job->name));
    } else {
      STOKER_ASSIGN_OR_RETURN(job, create_job(r));
    }
    JournalRecord record;
    auto* joined = record.mutable_consumer_joined();
    joined->set_consumer_id(state_.next_consumer_id());
    joined->set_job_id(job->id);
    joined->set_name(r.name().empty() ? peer.name : r.name());
    joined->set_address(r.receiver_address());
    joined->set_access_token(r.access_token());
    STOKER_RETURN_IF_ERROR(commit(record));
    c = state_.consumer(joined->consumer_id());
    // A consumer joins the oldest iteration still in progress: batches of it
    // may come its way from now on.
    c->iteration = job->iterations.empty() ? job->retired_below : job->iterations.rbegin()->first;
    for (const auto& [index, it] : job->iterations) {
      if (!state_.iteration_complete(*job, it)) {
        c->iteration = index;
        break;
      }
    }
    spdlog::info("coordinator: consumer {} ({}) joined job {} ('{}') at {}", c->id, c->name,
                 job->id, job->name, c->address);
    nudge_workers();
  }
  if (c->connection) consumers_on_[*c->connection].erase(c->id);
  c->connection = connection;
  c->disconnected_at.reset();
  c->last_seen = Clock::now();
  consumers_on_[connection].insert(c->id);
  const Job* job = state_.job(c->job);
  Message answer;
  auto* joined = answer.mutable_job_joined();
  joined->set_consumer_id(c->id);
  joined->set_job_id(c->job);
  joined->set_fingerprint(job ? job->fingerprint : "");
  joined->set_heartbeat_interval_ms(static_cast<uint32_t>(options_.heartbeat_interval.count()));
  joined->set_first_iteration(c->iteration);
  return answer;
}

Result<ConsumerRecord*> Coordinator::Service::bound_consumer(control::ConnectionId connection,
                                                             uint64_t consumer_id) {
  ConsumerRecord* c = state_.consumer(consumer_id);
  if (c == nullptr || !c->alive) {
    return not_found(fmt::format(
        "consumer {} was declared dead (no heartbeat or connection in time) or is unknown",
        consumer_id));
  }
  auto on = consumers_on_.find(connection);
  if (on == consumers_on_.end() || !on->second.contains(consumer_id)) {
    return failed_precondition(fmt::format(
        "consumer {} has not joined on this connection: send join_job first", consumer_id));
  }
  c->last_seen = Clock::now();
  return c;
}

Result<Message> Coordinator::Service::consumer_heartbeat(ConsumerRecord& c,
                                                         const control::ConsumerHeartbeat& r) {
  c.iteration = r.iteration();
  c.seconds_per_batch = r.seconds_per_batch();
  Message answer;
  auto* response = answer.mutable_consumer_heartbeat_response();
  const Job* job = state_.job(c.job);
  if (job == nullptr) {
    response->set_state(control::JOB_FAILED);
    response->mutable_error()->set_code(static_cast<uint32_t>(StatusCode::kNotFound));
    response->mutable_error()->set_message("the job was removed");
    return answer;
  }
  if (job->failed) {
    response->set_state(control::JOB_FAILED);
    response->mutable_error()->set_code(static_cast<uint32_t>(job->error.code()));
    response->mutable_error()->set_message(job->error.message());
    return answer;
  }
  const bool beyond = job->options.epochs() != 0 && r.iteration() >= job->options.epochs();
  response->set_state(beyond ? control::JOB_FINISHED : control::JOB_RUNNING);
  auto* status = response->mutable_status();
  status->set_iteration(r.iteration());
  if (r.iteration() < job->retired_below) {
    // Complete, but its counts are gone. No live consumer was reading it
    // when it was retired (retire_iterations()), and consumers only move on.
    status->set_complete(true);
    return answer;
  }
  auto it = job->iterations.find(r.iteration());
  if (it == job->iterations.end()) return answer;
  const Iteration& iteration = it->second;
  status->set_splits_lost(iteration.units_lost);
  if (!state_.iteration_complete(*job, iteration)) return answer;
  // Complete: the counts are final. What each worker delivered to this
  // consumer, and which of them died (their batches in flight are lost; the
  // reader stops waiting for them).
  status->set_complete(true);
  for (const auto& [worker, counts] : iteration.reported) {
    auto mine = counts.find(c.id);
    auto* expected = status->add_expected();
    expected->set_worker_id(worker);
    expected->set_batches(mine == counts.end() ? 0 : mine->second);
  }
  for (uint64_t w : iteration.participants) {
    const auto worker = state_.workers().find(w);
    if (worker != state_.workers().end() && !worker->second.alive) response->add_dead_workers(w);
  }
  return answer;
}

Result<Message> Coordinator::Service::leave_job(ConsumerRecord& c) {
  remove_consumer(c, "left");
  return ack();
}

// ---------------------------------------------------------------------------
// Liveness and lifecycle
// ---------------------------------------------------------------------------

void Coordinator::Service::remove_worker(WorkerRecord& w, const std::string& reason) {
  JournalRecord record;
  record.mutable_worker_removed()->set_worker_id(w.id);
  record.mutable_worker_removed()->set_reason(reason);
  if (Status st = commit(record); !st.is_ok()) {
    spdlog::error("coordinator: removing worker {}: {}", w.id, st.to_string());
    return;
  }
  if (w.connection) workers_on_[*w.connection].erase(w.id);
  w.connection.reset();
  spdlog::warn("coordinator: worker {} ({}) is dead: {}", w.id, w.name, reason);
  for (const auto& [id, job] : state_.jobs()) nudge_consumers(job);
}

void Coordinator::Service::remove_consumer(ConsumerRecord& c, const std::string& reason) {
  JournalRecord record;
  record.mutable_consumer_removed()->set_consumer_id(c.id);
  record.mutable_consumer_removed()->set_reason(reason);
  if (Status st = commit(record); !st.is_ok()) {
    spdlog::error("coordinator: removing consumer {}: {}", c.id, st.to_string());
    return;
  }
  if (c.connection) consumers_on_[*c.connection].erase(c.id);
  c.connection.reset();
  spdlog::info("coordinator: consumer {} ({}) left job {}: {}", c.id, c.name, c.job, reason);
  Job* job = state_.job(c.job);
  if (job != nullptr && job->name.empty() && job->consumers.empty()) {
    // An anonymous job belongs to its one consumer.
    JournalRecord removed;
    removed.mutable_job_removed()->set_job_id(job->id);
    removed.mutable_job_removed()->set_reason("its consumer left");
    if (Status st = commit(removed); !st.is_ok()) spdlog::error("{}", st.to_string());
  }
  nudge_workers();
}

void Coordinator::Service::on_disconnect(control::ConnectionId connection, const control::PeerInfo&,
                                         const Status& why) {
  const auto now = Clock::now();
  for (uint64_t id : workers_on_[connection]) {
    if (WorkerRecord* w = state_.worker(id)) {
      w->connection.reset();
      w->disconnected_at = now;
      spdlog::info("coordinator: worker {} disconnected ({}); dead unless back within {} ms", id,
                   why.message(), options_.reconnect_grace.count());
    }
  }
  for (uint64_t id : consumers_on_[connection]) {
    if (ConsumerRecord* c = state_.consumer(id)) {
      c->connection.reset();
      c->disconnected_at = now;
    }
  }
  workers_on_.erase(connection);
  consumers_on_.erase(connection);
}

void Coordinator::Service::forgive_stall(Clock::time_point now) {
  // Ticks come every few tens of milliseconds while the thread is free.
  const auto stall =
      std::min<Clock::duration>(std::chrono::milliseconds(250), options_.liveness_timeout / 2);
  const auto previous = std::exchange(last_tick_, now);
  if (!previous || now - *previous < stall) return;
  const auto away = now - *previous;
  spdlog::warn(
      "coordinator: busy for {} ms without reading heartbeats; liveness clocks move on by as "
      "much",
      std::chrono::duration_cast<std::chrono::milliseconds>(away).count());
  const auto shift = [away](auto& peer) {
    peer.last_seen += away;
    if (peer.disconnected_at) *peer.disconnected_at += away;
  };
  for (const auto& [id, w] : state_.workers()) shift(*state_.worker(id));
  for (const auto& [id, c] : state_.consumers()) shift(*state_.consumer(id));
}

void Coordinator::Service::on_tick() {
  const auto now = Clock::now();
  forgive_stall(now);
  std::vector<std::pair<uint64_t, std::string>> dead_workers, dead_consumers;
  for (const auto& [id, w] : state_.workers()) {
    if (!w.alive) continue;
    if (w.disconnected_at && now - *w.disconnected_at > options_.reconnect_grace) {
      dead_workers.emplace_back(id, fmt::format("its connection was lost and it did not come "
                                                "back within {} ms",
                                                options_.reconnect_grace.count()));
    } else if (now - w.last_seen > options_.liveness_timeout) {
      dead_workers.emplace_back(
          id, fmt::format("no heartbeat for {} ms", options_.liveness_timeout.count()));
    }
  }
  for (const auto& [id, c] : state_.consumers()) {
    if (!c.alive) continue;
    if (c.disconnected_at && now - *c.disconnected_at > options_.reconnect_grace) {
      dead_consumers.emplace_back(id, "its connection was lost");
    } else if (now - c.last_seen > options_.liveness_timeout) {
      dead_consumers.emplace_back(
          id, fmt::format("no heartbeat for {} ms", options_.liveness_timeout.count()));
    }
  }
  for (auto& [id, reason] : dead_workers) remove_worker(*state_.worker(id), reason);
  for (auto& [id, reason] : dead_consumers) remove_consumer(*state_.consumer(id), reason);

  std::vector<uint64_t> idle_jobs;
  for (const auto& [id, job] : state_.jobs()) {
    if (job.consumers.empty() && now - job.last_consumer > options_.job_gc_timeout) {
      idle_jobs.push_back(id);
    }
  }
  for (const auto& [id, job] : state_.jobs()) retire_iterations(job);
  maybe_compact();
  for (uint64_t id : idle_jobs) {
    JournalRecord record;
    record.mutable_job_removed()->set_job_id(id);
    record.mutable_job_removed()->set_reason(fmt::format(
        "no consumer for {} s",
        std::chrono::duration_cast<std::chrono::seconds>(options_.job_gc_timeout).count()));
    spdlog::info("coordinator: job {} removed: {}", id, record.job_removed().reason());
    if (Status st = commit(record); !st.is_ok()) spdlog::error("{}", st.to_string());
    nudge_workers();
  }
}

void Coordinator::Service::retire_iterations(const Job& job) {
  // An iteration is retired once it is complete and no live consumer of the
  // job can ask about it again. A consumer asks about the iteration it reads
  // (its heartbeats say which, and it only moves on), and it may still read
  // one long after later ones completed (it keeps their batches for later):
  // a later complete iteration proves nothing. A consumer restored from the
  // journal says 0 until its first heartbeat, holding everything back until
  // then. The newest iteration stays: a consumer joining now may start there.
  if (job.iterations.empty()) return;
  uint64_t below = job.iterations.rbegin()->first;
  for (uint64_t id : job.consumers) {
    if (auto c = state_.consumers().find(id); c != state_.consumers().end()) {
      below = std::min(below, c->second.iteration);
    }
  }
  for (const auto& [index, it] : job.iterations) {
    if (index >= below) break;
    if (!state_.iteration_complete(job, it)) {
      below = index;
      break;
    }
  }
  if (below <= job.retired_below) return;
  JournalRecord record;
  record.mutable_iterations_retired()->set_job_id(job.id);
  record.mutable_iterations_retired()->set_below(below);
  if (Status st = commit(record); !st.is_ok()) {
    spdlog::error("coordinator: retiring iterations of job {}: {}", job.id, st.to_string());
    return;
  }
  spdlog::debug("coordinator: job {} retired its iterations below {}", job.id, below);
}

void Coordinator::Service::maybe_compact() {
  const uint64_t before = journal_->size();
  if (before <= std::max(options_.journal_compaction_bytes, 2 * snapshot_bytes_)) return;
  const auto records = state_.snapshot();
  std::vector<std::string> payloads(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    if (!records[i].SerializeToString(&payloads[i])) {
      spdlog::error("coordinator: serializing a snapshot record failed; the journal stays as is");
      snapshot_bytes_ = before;  // not again before it doubles
      return;
    }
  }
  if (Status st = journal_->rewrite(payloads); !st.is_ok()) {
    if (!journal_->usable()) {
      spdlog::critical("coordinator: the compacted journal cannot be made durable: {}",
                       st.to_string());
      std::abort();
    }
    // The old journal is still whole and in use: try again once it doubles.
    spdlog::error("coordinator: compacting the journal: {}", st.to_string());
    snapshot_bytes_ = before;
    return;
  }
  snapshot_bytes_ = journal_->size();
  spdlog::info("coordinator: compacted the journal from {} to {} bytes ({} records)", before,
               snapshot_bytes_, records.size());
}

void Coordinator::Service::nudge(std::optional<uint64_t> connection) {
  if (!connection) return;
  Message notice;
  notice.mutable_nudge();
  server_->notify(*connection, notice);
}

void Coordinator::Service::nudge_workers() {
  std::set<uint64_t> connections;
  for (const auto& [id, w] : state_.workers()) {
    if (w.alive && w.connection) connections.insert(*w.connection);
  }
  for (uint64_t c : connections) nudge(c);
}

void Coordinator::Service::nudge_consumers(const Job& job) {
  std::set<uint64_t> connections;
  for (uint64_t id : job.consumers) {
    auto it = state_.consumers().find(id);
    if (it != state_.consumers().end() && it->second.connection) {
      connections.insert(*it->second.connection);
    }
  }
  for (uint64_t c : connections) nudge(c);
}

// ---------------------------------------------------------------------------
// stoker-ctl
// ---------------------------------------------------------------------------

uint32_t Coordinator::Service::suggested_workers() const {
  // tf.data service's estimate: N = ceil(sum over consumers of 1/TPT /
  // mean over workers of their rate), TPT being a consumer's target time
  // per batch and a worker's rate its batches per second.
  double demand = 0;
  for (const auto& [id, c] : state_.consumers()) {
    if (c.alive && c.seconds_per_batch > 0) demand += 1.0 / c.seconds_per_batch;
  }
  double rates = 0;
  int measured = 0;
  for (const auto& [id, w] : state_.workers()) {
    if (!w.alive || w.stats.busy_seconds() <= 0 || w.stats.batches_produced() == 0) continue;
    rates += static_cast<double>(w.stats.batches_produced()) / w.stats.busy_seconds() *
             std::max<uint32_t>(1, w.threads);
    ++measured;
  }
  if (demand == 0 || measured == 0) return 0;
  return static_cast<uint32_t>(std::ceil(demand / (rates / measured)));
}

Result<Message> Coordinator::Service::describe_pipeline(const control::DescribePipeline& r) const {
  auto spec = pipeline::parse_pipeline_spec(r.pipeline_spec());
  if (!spec.is_ok()) return spec.status().with_context("the pipeline spec");
  STOKER_ASSIGN_OR_RETURN(auto compiled, pipeline::Pipeline::create(*spec));
  STOKER_ASSIGN_OR_RETURN(auto splits, compiled->splits());
  Message answer;
  auto* info = answer.mutable_pipeline_info();
  info->set_fingerprint(pipeline::fingerprint(*spec));
  info->set_canonical_spec(pipeline::canonical_json(*spec));
  info->set_max_batch_bytes(compiled->max_batch_bytes());
  info->set_splits(splits.size());
  return answer;
}

Message Coordinator::Service::describe_cluster() const {
  const auto now = Clock::now();
  Message answer;
  auto* d = answer.mutable_cluster_description();
  d->set_coordinator(server_->address());
  d->set_uptime_seconds(seconds_between(started_, now));
  for (const auto& [id, w] : state_.workers()) {
    auto* info = d->add_workers();
    info->set_worker_id(id);
    info->set_name(w.name);
    info->set_address(w.address);
    info->set_alive(w.alive);
    info->set_seconds_since_heartbeat(seconds_between(w.last_seen, now));
    info->set_threads(w.threads);
    *info->mutable_stats() = w.stats;
  }
  for (const auto& [id, job] : state_.jobs()) {
    auto* info = d->add_jobs();
    info->set_job_id(id);
    info->set_name(job.name);
    info->set_fingerprint(job.fingerprint);
    *info->mutable_options() = job.options;
    info->set_state(job.failed                 ? control::JOB_FAILED
                    : state_.job_finished(job) ? control::JOB_FINISHED
                                               : control::JOB_RUNNING);
    if (job.failed) info->set_error(job.error.to_string());
    for (const auto& [index, it] : job.iterations) {
      auto* iteration = info->add_iterations();
      iteration->set_iteration(index);
      iteration->set_splits_total(it.units_total);
      uint64_t pending = 0;
      for (const auto& [lid, lane] : it.lanes) pending += lane.pending.size();
      iteration->set_splits_pending(pending);
      iteration->set_splits_assigned(it.units_assigned);
      iteration->set_splits_done(it.units_done);
      iteration->set_splits_lost(it.units_lost);
      iteration->set_complete(state_.iteration_complete(job, it));
    }
    for (uint64_t c : job.consumers) info->add_consumers(c);
  }
  for (const auto& [id, c] : state_.consumers()) {
    auto* info = d->add_consumers();
    info->set_consumer_id(id);
    info->set_name(c.name);
    info->set_job_id(c.job);
    info->set_address(c.address);
    info->set_alive(c.alive);
    info->set_iteration(c.iteration);
  }
  d->set_suggested_workers(suggested_workers());
  return answer;
}

// ---------------------------------------------------------------------------

Coordinator::Coordinator(std::unique_ptr<Service> service) : service_(std::move(service)) {}
Coordinator::~Coordinator() { stop(); }

Result<std::unique_ptr<Coordinator>> Coordinator::start(CoordinatorOptions options) {
  auto service = std::make_unique<Service>(std::move(options));
  STOKER_RETURN_IF_ERROR(service->start());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(service)));
}

void Coordinator::stop() { service_->stop(); }
std::string Coordinator::address() const { return service_->address(); }
uint16_t Coordinator::port() const { return service_->port(); }

}  // namespace stoker::coordinator
