// CoordinatorState: applying journal records, and the queries the service
// makes its decisions with.
#include "coordinator/coordinator_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "pipeline/split.h"
#include "pipeline/split_message.h"

namespace stoker::coordinator {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<uint64_t> split_order(uint64_t count, uint64_t seed, uint64_t iteration) {
  std::vector<uint64_t> order(count);
  for (uint64_t i = 0; i < count; ++i) order[i] = i;
  if (seed == 0) return order;  // no shuffling asked for: file order
  uint64_t state = seed ^ (iteration * 0xd1b54a32d192ed03ULL);
  for (uint64_t i = count; i > 1; --i) {
    const uint64_t j = splitmix64(state) % i;
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

WorkerRecord* CoordinatorState::worker(uint64_t id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}
ConsumerRecord* CoordinatorState::consumer(uint64_t id) {
  auto it = consumers_.find(id);
  return it == consumers_.end() ? nullptr : &it->second;
}
Job* CoordinatorState::job(uint64_t id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}
const Job* CoordinatorState::job(uint64_t id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}
Job* CoordinatorState::job_named(const std::string& name) {
  if (name.empty()) return nullptr;
  for (auto& [id, j] : jobs_) {
    if (j.name == name) return &j;
  }
  return nullptr;
}

std::vector<uint64_t> CoordinatorState::live_workers() const {
  std::vector<uint64_t> out;
  for (const auto& [id, w] : workers_) {
    if (w.alive) out.push_back(id);
  }
  return out;
}

Status CoordinatorState::apply(const JournalRecord& record) {
  ++version_;
  switch (record.change_case()) {
    case JournalRecord::kWorkerRegistered: {
      const auto& r = record.worker_registered();
      WorkerRecord& w = workers_[r.worker_id()];
      w.id = r.worker_id();
      w.name = r.name();
      w.address = r.address();
      w.threads = r.threads();
      w.alive = true;
      w.last_seen = Clock::now();
      next_worker_id_ = std::max(next_worker_id_, r.worker_id() + 1);
      return Status::ok();
    }
    case JournalRecord::kWorkerRemoved:
      return apply_worker_removed(record.worker_removed());
    case JournalRecord::kJobCreated: {
      const auto& r = record.job_created();
      if (jobs_.contains(r.job_id())) {
        return internal_error(fmt::format("job {} created twice", r.job_id()));
      }
      Job& j = jobs_[r.job_id()];
      j.id = r.job_id();
      j.name = r.name();
      j.pipeline_spec = r.pipeline_spec();
      j.fingerprint = r.fingerprint();
      j.options = r.options();
      j.splits.assign(r.splits().begin(), r.splits().end());
      j.shuffle_seed = r.shuffle_seed();
      next_job_id_ = std::max(next_job_id_, r.job_id() + 1);
      return Status::ok();
    }
    case JournalRecord::kJobFailed: {
      Job* j = job(record.job_failed().job_id());
      if (j == nullptr) return internal_error("failure of an unknown job");
      j->failed = true;
      const auto code = static_cast<StatusCode>(record.job_failed().code());
      j->error = Status(code == StatusCode::kOk ? StatusCode::kInternal : code,
                        record.job_failed().error());
      return Status::ok();
    }
    case JournalRecord::kJobRemoved: {
      const uint64_t id = record.job_removed().job_id();
      for (auto& [cid, c] : consumers_) {
        if (c.job == id) c.alive = false;
      }
      jobs_.erase(id);
      return Status::ok();
    }
    case JournalRecord::kConsumerJoined: {
      const auto& r = record.consumer_joined();
      Job* j = job(r.job_id());
      if (j == nullptr)
        return internal_error(fmt::format("consumer of unknown job {}", r.job_id()));
      ConsumerRecord& c = consumers_[r.consumer_id()];
      c.id = r.consumer_id();
      c.job = r.job_id();
      c.name = r.name();
      c.address = r.address();
      c.access_token = r.access_token();
      c.alive = true;
      c.last_seen = Clock::now();
      j->consumers.insert(c.id);
      j->last_consumer = Clock::now();
      next_consumer_id_ = std::max(next_consumer_id_, r.consumer_id() + 1);
      return Status::ok();
    }
    case JournalRecord::kConsumerRemoved: {
      ConsumerRecord* c = consumer(record.consumer_removed().consumer_id());
      if (c == nullptr) return Status::ok();
      c->alive = false;
      if (Job* j = job(c->job)) {
        j->consumers.erase(c->id);
        j->last_consumer = Clock::now();
      }
      return Status::ok();
    }
    case JournalRecord::kIterationStarted:
      return apply_iteration_started(record.iteration_started());
    case JournalRecord::kSplitAssigned:
      return apply_split_assigned(record.split_assigned());
    case JournalRecord::kSplitDone:
      return apply_split_done(record.split_done());
    case JournalRecord::kSplitRequeued:
      return apply_split_requeued(record.split_requeued());
    case JournalRecord::kIterationReported: {
      const auto& r = record.iteration_reported();
      Job* j = job(r.job_id());
      if (j == nullptr) return Status::ok();  // the job is gone: nothing to count for
      auto it = j->iterations.find(r.iteration());
      if (it == j->iterations.end()) return internal_error("report of an unknown iteration");
      auto& counts = it->second.reported[r.worker_id()];
      counts.clear();
      for (const auto& b : r.batches()) counts[b.consumer_id()] = b.batches();
      it->second.participants.insert(r.worker_id());
      return Status::ok();
    }
    case JournalRecord::kIterationsRetired:
      return apply_iterations_retired(record.iterations_retired());
    case JournalRecord::kIdCounters: {
      const auto& r = record.id_counters();
      next_worker_id_ = std::max(next_worker_id_, r.next_worker_id());
      next_consumer_id_ = std::max(next_consumer_id_, r.next_consumer_id());
      next_job_id_ = std::max(next_job_id_, r.next_job_id());
      return Status::ok();
    }
    case JournalRecord::kIterationSnapshot:
      return apply_iteration_snapshot(record.iteration_snapshot());
    case JournalRecord::CHANGE_NOT_SET:
      break;
  }
  return data_loss("journal record of an unknown type (written by a newer coordinator?)");
}

Status CoordinatorState::apply_worker_removed(const WorkerRemoved& r) {
  WorkerRecord* w = worker(r.worker_id());
  if (w == nullptr || !w->alive) return Status::ok();
  w->alive = false;
  for (auto& [jid, j] : jobs_) {
    const bool redeliver = j.options.redeliver();
    for (auto& [index, it] : j.iterations) {
      for (auto& [lane_id, lane] : it.lanes) {
        for (auto& [split, unit] : lane.units) {
          if (unit.state != SplitUnit::State::kAssigned || unit.worker != w->id) continue;
          --it.units_assigned;
          forget_request(j, unit, {index, lane_id, split});
          if (redeliver) {
            unit = SplitUnit{};
            lane.pending.push_front(split);
          } else {
            unit.state = SplitUnit::State::kLost;
            ++it.units_lost;
          }
        }
        if (lane.owner == w->id && !redeliver) {
          // Its static shard dies with it: at most once.
          for (uint64_t split : lane.pending) {
            lane.units[split].state = SplitUnit::State::kLost;
            ++it.units_lost;
          }
          lane.pending.clear();
        }
      }
    }
  }
  return Status::ok();
}

Lane& CoordinatorState::open_lane(Job& job, Iteration& it, uint64_t owner,
                                  const std::vector<uint64_t>& ids) {
  Lane& lane = it.lanes[owner];
  lane.owner = owner;
  // Hand the splits out in the job's (seeded) order for this iteration.
  std::vector<bool> member(job.splits.size(), ids.empty());
  for (uint64_t id : ids) member[id] = true;
  lane.units.reserve(ids.empty() ? job.splits.size() : ids.size());
  for (uint64_t id : split_order(job.splits.size(), job.shuffle_seed, it.index)) {
    if (!member[id]) continue;
    lane.units.emplace(id, SplitUnit{});
    lane.pending.push_back(id);
    ++it.units_total;
  }
  return lane;
}

control::Split CoordinatorState::split_for(const Job& job, const Lane& lane, uint64_t lane_id,
                                           uint64_t split) const {
  control::Split out = job.splits.at(split);
  if (lane.data_count > 0) {
    const auto strided =
        pipeline::static_shard(std::array{pipeline::split_of(out)}, pipeline::ShardingMode::kData,
                               lane.data_index, lane.data_count);
    out = pipeline::message_of(strided.front());
  }
  out.set_lane(lane_id);
  return out;
}

Result<std::pair<Job*, Iteration*>> CoordinatorState::start_iteration(uint64_t job_id,
                                                                      uint64_t index) {
  Job* j = job(job_id);
  if (j == nullptr) return internal_error(fmt::format("iteration of unknown job {}", job_id));
  if (j->iterations.contains(index) || index < j->retired_below) {
    return internal_error(fmt::format("iteration {} of job {} started twice", index, j->id));
  }
  Iteration& it = j->iterations[index];
  it.index = index;
  return std::pair{j, &it};
}

Status CoordinatorState::apply_iteration_started(const IterationStarted& r) {
  STOKER_ASSIGN_OR_RETURN(auto started, start_iteration(r.job_id(), r.iteration()));
  Job* j = started.first;
  Iteration& it = *started.second;
  it.static_workers.assign(r.workers().begin(), r.workers().end());
  switch (j->options.sharding()) {
    case control::SHARDING_FILE: {
      // Worker i of n takes the shards with shard % n == i.
      std::vector<pipeline::Split> all;
      for (const auto& s : j->splits) all.push_back(pipeline::split_of(s));
      const auto n = static_cast<uint32_t>(it.static_workers.size());
      for (uint32_t index = 0; index < n; ++index) {
        std::vector<uint64_t> ids;
        for (const auto& s : pipeline::static_shard(all, pipeline::ShardingMode::kFile, index, n)) {
          ids.push_back(s.id);
        }
        if (!ids.empty()) open_lane(*j, it, it.static_workers[index], ids);
      }
      break;
    }
    case control::SHARDING_DATA: {
      // Every worker visits every split, keeping every n-th record.
      const auto n = static_cast<uint32_t>(it.static_workers.size());
      for (uint32_t index = 0; index < n; ++index) {
        Lane& lane = open_lane(*j, it, it.static_workers[index], {});
        lane.data_index = index;
        lane.data_count = n;
      }
      break;
    }
    case control::SHARDING_OFF:
      for (uint64_t w : it.static_workers) open_lane(*j, it, w, {});
      break;
    default:
      open_lane(*j, it, 0, {});
      break;
  }
  return Status::ok();
}

Result<std::pair<Iteration*, Lane*>> CoordinatorState::lane_of(uint64_t job_id, uint64_t iteration,
                                                               uint64_t lane_id) {
  Job* j = job(job_id);
  if (j == nullptr) return internal_error(fmt::format("unknown job {}", job_id));
  auto it = j->iterations.find(iteration);
  if (it == j->iterations.end()) {
    return internal_error(fmt::format("unknown iteration {} of job {}", iteration, job_id));
  }
  auto lane = it->second.lanes.find(lane_id);
  if (lane == it->second.lanes.end()) {
    return internal_error(
        fmt::format("unknown lane {} of job {} iteration {}", lane_id, job_id, iteration));
  }
  return std::pair{&it->second, &lane->second};
}

Status CoordinatorState::apply_split_assigned(const SplitAssigned& r) {
  STOKER_ASSIGN_OR_RETURN(auto where, lane_of(r.job_id(), r.iteration(), r.lane()));
  auto [it, lane] = where;
  auto unit = lane->units.find(r.split_id());
  if (unit == lane->units.end() || unit->second.state != SplitUnit::State::kPending) {
    return internal_error(fmt::format("split {} assigned while not pending", r.split_id()));
  }
  // Units are handed out from the front of their lane; anything else is a
  // journal written by a coordinator with another order (still correct, slower).
  if (lane->pending.front() == r.split_id()) {
    lane->pending.pop_front();
  } else {
    std::erase(lane->pending, r.split_id());
  }
  unit->second = {SplitUnit::State::kAssigned, r.worker_id(), r.request_id()};
  ++it->units_assigned;
  if (r.request_id() != 0) {
    job(r.job_id())->requests[{r.worker_id(), r.request_id()}] = {r.iteration(), r.lane(),
                                                                  r.split_id()};
  }
  it->participants.insert(r.worker_id());
  return Status::ok();
}

void CoordinatorState::forget_request(Job& job, const SplitUnit& unit, const UnitRef& ref) {
  auto request = job.requests.find({unit.worker, unit.request_id});
  if (request != job.requests.end() && request->second == ref) job.requests.erase(request);
}

Status CoordinatorState::apply_split_done(const SplitDone& r) {
  STOKER_ASSIGN_OR_RETURN(auto where, lane_of(r.job_id(), r.iteration(), r.lane()));
  auto [it, lane] = where;
  auto unit = lane->units.find(r.split_id());
  if (unit == lane->units.end()) return internal_error("done: unknown split");
  if (unit->second.state == SplitUnit::State::kAssigned) {
    --it->units_assigned;
    forget_request(*job(r.job_id()), unit->second, {r.iteration(), r.lane(), r.split_id()});
    // A worker that already reported the iteration got this unit since (a
    // redelivered one): its report lacks the unit's batches, and it sends a
    // new one once they are delivered. Until then the old count must not
    // complete the iteration, or readers would end the epoch without them.
    // (Not at assignment: a unit requeued because it never reached the worker
    // leaves its report standing, and the worker will not report again.)
    it->reported.erase(unit->second.worker);
  }
  if (unit->second.state == SplitUnit::State::kLost) --it->units_lost;
  if (unit->second.state == SplitUnit::State::kPending) std::erase(lane->pending, r.split_id());
  if (unit->second.state != SplitUnit::State::kDone) ++it->units_done;
  unit->second.state = SplitUnit::State::kDone;
  unit->second.worker = r.worker_id();
  return Status::ok();
}

Status CoordinatorState::apply_split_requeued(const SplitRequeued& r) {
  STOKER_ASSIGN_OR_RETURN(auto where, lane_of(r.job_id(), r.iteration(), r.lane()));
  auto [it, lane] = where;
  auto unit = lane->units.find(r.split_id());
  if (unit == lane->units.end() || unit->second.state != SplitUnit::State::kAssigned) {
    return internal_error("requeue of a split that is not assigned");
  }
  const uint64_t w = unit->second.worker;
  --it->units_assigned;
  forget_request(*job(r.job_id()), unit->second, {r.iteration(), r.lane(), r.split_id()});
  unit->second = SplitUnit{};
  lane->pending.push_front(r.split_id());
  // The assignment made the worker a participant, but it never got the unit.
  // A worker that has no other unit of the iteration never reports it (it
  // reports only iterations it had splits of): leaving it a participant
  // would keep the iteration from ever completing.
  const auto holds_a_unit = [&] {
    for (const auto& [lane_id, l] : it->lanes) {
      for (const auto& [split, u] : l.units) {
        if (u.worker == w &&
            (u.state == SplitUnit::State::kAssigned || u.state == SplitUnit::State::kDone)) {
          return true;
        }
      }
    }
    return false;
  };
  if (!it->reported.contains(w) && !holds_a_unit()) it->participants.erase(w);
  return Status::ok();
}

Status CoordinatorState::apply_iterations_retired(const IterationsRetired& r) {
  Job* j = job(r.job_id());
  if (j == nullptr) return internal_error(fmt::format("retirement in unknown job {}", r.job_id()));
  for (auto it = j->iterations.begin(); it != j->iterations.end() && it->first < r.below();) {
    if (it->second.units_assigned != 0) {
      return internal_error(
          fmt::format("iteration {} of job {} retired with splits assigned", it->first, j->id));
    }
    it = j->iterations.erase(it);
  }
  j->retired_below = std::max(j->retired_below, r.below());
  return Status::ok();
}

Status CoordinatorState::apply_iteration_snapshot(const IterationSnapshot& r) {
  STOKER_ASSIGN_OR_RETURN(auto started, start_iteration(r.job_id(), r.iteration()));
  Job* j = started.first;
  Iteration& it = *started.second;
  it.static_workers.assign(r.static_workers().begin(), r.static_workers().end());
  it.participants.insert(r.participants().begin(), r.participants().end());
  for (const auto& report : r.reported()) {
    auto& counts = it.reported[report.worker_id()];
    for (const auto& b : report.batches()) counts[b.consumer_id()] = b.batches();
  }
  for (const auto& l : r.lanes()) {
    Lane& lane = it.lanes[l.lane()];
    lane.owner = l.owner();
    lane.data_index = l.data_index();
    lane.data_count = l.data_count();
    lane.units.reserve(static_cast<size_t>(l.pending_size() + l.units_size()));
    for (uint64_t split : l.pending()) {
      if (split >= j->splits.size()) {
        return internal_error(fmt::format("a bad unit in a snapshot of job {}", j->id));
      }
      lane.pending.push_back(split);
      lane.units.emplace(split, SplitUnit{});
    }
    for (const auto& u : l.units()) {
      const auto state = static_cast<SplitUnit::State>(u.state());
      if (u.split_id() >= j->splits.size() || state == SplitUnit::State::kPending ||
          u.state() > static_cast<uint32_t>(SplitUnit::State::kLost)) {
        return internal_error(fmt::format("a bad unit in a snapshot of job {}", j->id));
      }
      lane.units[u.split_id()] = {state, u.worker_id(), u.request_id()};
      if (state == SplitUnit::State::kDone) ++it.units_done;
      if (state == SplitUnit::State::kLost) ++it.units_lost;
      if (state == SplitUnit::State::kAssigned) {
        ++it.units_assigned;
        if (u.request_id() != 0) {
          j->requests[{u.worker_id(), u.request_id()}] = {it.index, l.lane(), u.split_id()};
        }
      }
    }
    it.units_total += lane.units.size();
  }
  return Status::ok();
}

std::vector<JournalRecord> CoordinatorState::snapshot() const {
  std::vector<JournalRecord> out;
  const auto add = [&] { return &out.emplace_back(); };
  // Workers first, the dead ones removed before any job exists: the removal
  // then changes nothing else, and the iterations below say what it did.
  for (const auto& [id, w] : workers_) {
    auto* r = add()->mutable_worker_registered();
    r->set_worker_id(id);
    r->set_name(w.name);
    r->set_address(w.address);
    r->set_threads(w.threads);
    if (!w.alive) add()->mutable_worker_removed()->set_worker_id(id);
  }
  for (const auto& [id, j] : jobs_) {
    auto* created = add()->mutable_job_created();
    created->set_job_id(id);
    created->set_name(j.name);
    created->set_pipeline_spec(j.pipeline_spec);
    created->set_fingerprint(j.fingerprint);
    *created->mutable_options() = j.options;
    for (const auto& s : j.splits) *created->add_splits() = s;
    created->set_shuffle_seed(j.shuffle_seed);
    if (j.failed) {
      auto* failed = add()->mutable_job_failed();
      failed->set_job_id(id);
      failed->set_error(j.error.message());
      failed->set_code(static_cast<uint32_t>(j.error.code()));
    }
    if (j.retired_below > 0) {
      auto* retired = add()->mutable_iterations_retired();
      retired->set_job_id(id);
      retired->set_below(j.retired_below);
    }
    for (uint64_t cid : j.consumers) {
      const ConsumerRecord& c = consumers_.at(cid);
      auto* joined = add()->mutable_consumer_joined();
      joined->set_consumer_id(cid);
      joined->set_job_id(id);
      joined->set_name(c.name);
      joined->set_address(c.address);
      joined->set_access_token(c.access_token);
    }
    for (const auto& [index, it] : j.iterations) {
      auto* s = add()->mutable_iteration_snapshot();
      s->set_job_id(id);
      s->set_iteration(index);
      for (uint64_t w : it.static_workers) s->add_static_workers(w);
      for (uint64_t w : it.participants) s->add_participants(w);
      for (const auto& [w, counts] : it.reported) {
        auto* report = s->add_reported();
        report->set_worker_id(w);
        for (const auto& [cid, batches] : counts) {
          auto* b = report->add_batches();
          b->set_consumer_id(cid);
          b->set_batches(batches);
        }
      }
      for (const auto& [lane_id, lane] : it.lanes) {
        auto* l = s->add_lanes();
        l->set_lane(lane_id);
        l->set_owner(lane.owner);
        l->set_data_index(lane.data_index);
        l->set_data_count(lane.data_count);
        for (uint64_t split : lane.pending) l->add_pending(split);
        // In split order: the same state always makes the same snapshot.
        std::map<uint64_t, const SplitUnit*> units;
        for (const auto& [split, unit] : lane.units) {
          if (unit.state != SplitUnit::State::kPending) units.emplace(split, &unit);
        }
        for (const auto& [split, unit] : units) {
          auto* u = l->add_units();
          u->set_split_id(split);
          u->set_state(static_cast<uint32_t>(unit->state));
          u->set_worker_id(unit->worker);
          u->set_request_id(unit->request_id);
        }
      }
    }
  }
  auto* counters = add()->mutable_id_counters();
  counters->set_next_worker_id(next_worker_id_);
  counters->set_next_consumer_id(next_consumer_id_);
  counters->set_next_job_id(next_job_id_);
  return out;
}

bool CoordinatorState::iteration_complete(const Job& /*job*/, const Iteration& it) const {
  // Asked on every consumer heartbeat; the answer changes only with the state.
  if (it.complete_at_version == version_) return it.complete;
  it.complete_at_version = version_;
  it.complete = false;
  for (const auto& [id, lane] : it.lanes) {
    if (!lane.pending.empty()) return false;
  }
  if (it.units_assigned != 0) return false;
  for (uint64_t w : it.participants) {
    auto worker = workers_.find(w);
    if (worker != workers_.end() && worker->second.alive && !it.reported.contains(w)) return false;
  }
  it.complete = true;
  return true;
}

bool CoordinatorState::job_finished(const Job& job) const {
  if (job.options.epochs() == 0) return false;
  for (uint64_t e = job.retired_below; e < job.options.epochs(); ++e) {
    auto it = job.iterations.find(e);
    if (it == job.iterations.end() || !iteration_complete(job, it->second)) return false;
  }
  return true;
}

uint64_t CoordinatorState::next_iteration(const Job& job) {
  return job.iterations.empty() ? job.retired_below : job.iterations.rbegin()->first + 1;
}

std::optional<std::pair<uint64_t, uint64_t>> CoordinatorState::next_unit(const Job& job,
                                                                         const Iteration& it,
                                                                         uint64_t w) const {
  const uint64_t own = job.options.sharding() == control::SHARDING_DYNAMIC ? 0 : w;
  if (auto lane = it.lanes.find(own); lane != it.lanes.end() && !lane->second.pending.empty()) {
    return std::pair{own, lane->second.pending.front()};
  }
  // Redelivery: pending units left in the lanes of workers that died.
  for (const auto& [id, lane] : it.lanes) {
    if (id == own || lane.pending.empty()) continue;
    auto owner = workers_.find(lane.owner);
    if (owner == workers_.end() || !owner->second.alive) {
      return std::pair{id, lane.pending.front()};
    }
  }
  return std::nullopt;
}

std::optional<UnitRef> CoordinatorState::unit_for_request(const Job& job, uint64_t w,
                                                          uint64_t request_id) const {
  if (request_id == 0) return std::nullopt;
  auto request = job.requests.find({w, request_id});
  if (request == job.requests.end()) return std::nullopt;
  const UnitRef& ref = request->second;
  auto it = job.iterations.find(ref.iteration);
  if (it == job.iterations.end()) return std::nullopt;
  auto lane = it->second.lanes.find(ref.lane);
  if (lane == it->second.lanes.end()) return std::nullopt;
  auto unit = lane->second.units.find(ref.split);
  if (unit == lane->second.units.end() || unit->second.state != SplitUnit::State::kAssigned ||
      unit->second.worker != w) {
    return std::nullopt;
  }
  return ref;
}

}  // namespace stoker::coordinator
