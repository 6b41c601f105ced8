// The coordinator's state: workers, consumers, jobs, their iterations and
// the split queues. It changes only through apply(JournalRecord), so replaying
// the journal rebuilds it exactly; the service (coordinator_service.h) decides
// what records to write. What is not journaled — liveness clocks, connections,
// statistics — is marked "volatile" and rebuilt as peers reconnect.
//
// Split bookkeeping: each iteration of a job has lanes, queues of split
// units. DYNAMIC sharding has one shared lane (id 0) every worker draws from.
// FILE and DATA sharding give each worker of the iteration a lane of its own
// (lane id = worker id) holding its static shard; OFF gives every worker of
// the iteration a lane with every split. Static and OFF iterations are divided
// among the workers alive when they start; a worker that joins later takes
// part from the next iteration (or takes redelivered units). A unit is pending, assigned (to a
// worker), done or lost. When a worker dies, its assigned units are lost (at most once) or go back
// to pending (--redeliver: at least once), and the pending units of its own lane are lost or opened
// to the other workers.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coordinator/journal.pb.h"
#include "stoker/result.h"
#include "transport/control/control.pb.h"

namespace stoker::coordinator {

using Clock = std::chrono::steady_clock;

struct SplitUnit {
  enum class State : uint8_t { kPending, kAssigned, kDone, kLost };
  State state = State::kPending;
  uint64_t worker = 0;      // kAssigned/kDone: who has or had it
  uint64_t request_id = 0;  // the GetSplit attempt that got it
};

struct Lane {
  uint64_t owner = 0;                             // 0: shared by every worker
  std::deque<uint64_t> pending;                   // split ids, in hand-out order
  std::unordered_map<uint64_t, SplitUnit> units;  // split id -> state
  // DATA sharding: this lane is worker `data_index` of `data_count`, and
  // visits every data_count-th record of each split.
  uint32_t data_index = 0;
  uint32_t data_count = 0;
};

// One unit of a job: its iteration, lane and split.
struct UnitRef {
  uint64_t iteration = 0;
  uint64_t lane = 0;
  uint64_t split = 0;
  bool operator==(const UnitRef&) const = default;
};

struct Iteration {
  uint64_t index = 0;
  std::map<uint64_t, Lane> lanes;
  std::vector<uint64_t> static_workers;  // FILE/DATA/OFF: the workers it was divided among
  std::set<uint64_t> participants;       // workers that asked for splits of it
  // worker -> (consumer -> batches it sent that consumer), from IterationDone
  std::map<uint64_t, std::map<uint64_t, uint64_t>> reported;
  uint64_t units_total = 0, units_done = 0, units_lost = 0, units_assigned = 0;
  // iteration_complete()'s answer, valid while the state's version is this.
  mutable uint64_t complete_at_version = 0;
  mutable bool complete = false;
};

struct Job {
  uint64_t id = 0;
  std::string name;
  std::string pipeline_spec;
  std::string fingerprint;
  control::JobOptions options;
  std::vector<control::Split> splits;
  uint64_t shuffle_seed = 0;
  std::map<uint64_t, Iteration> iterations;
  // Iterations below this were complete and are retired (IterationsRetired):
  // gone from `iterations`, and answered for as complete.
  uint64_t retired_below = 0;
  // (worker, request id) -> the unit that GetSplit attempt got, while it is
  // assigned to that worker. Each of a worker's pipeline threads asks with
  // its own request ids, so a retry must find its unit among all of the
  // worker's outstanding attempts, not only the latest one.
  std::map<std::pair<uint64_t, uint64_t>, UnitRef> requests;
  std::set<uint64_t> consumers;  // live consumers
  bool failed = false;
  Status error;
  // volatile: when the job last had a consumer (for garbage collection)
  Clock::time_point last_consumer = Clock::now();
};

struct WorkerRecord {
  uint64_t id = 0;
  std::string name;
  std::string address;
  uint32_t threads = 0;
  bool alive = true;
  // volatile
  Clock::time_point last_seen = Clock::now();
  std::optional<uint64_t> connection;
  std::optional<Clock::time_point> disconnected_at;
  control::WorkerStats stats;
};

struct ConsumerRecord {
  uint64_t id = 0;
  uint64_t job = 0;
  std::string name;
  std::string address;
  std::string access_token;
  bool alive = true;
  // volatile
  Clock::time_point last_seen = Clock::now();
  std::optional<uint64_t> connection;
  std::optional<Clock::time_point> disconnected_at;
  uint64_t iteration = 0;
  double seconds_per_batch = 0;
};

class CoordinatorState {
 public:
  // Applies one journaled change. Fails only on a record that contradicts the
  // state (a journal from another coordinator, or a bug): replay stops there.
  Status apply(const JournalRecord& record);

  const std::map<uint64_t, WorkerRecord>& workers() const { return workers_; }
  const std::map<uint64_t, ConsumerRecord>& consumers() const { return consumers_; }
  const std::map<uint64_t, Job>& jobs() const { return jobs_; }
  WorkerRecord* worker(uint64_t id);
  ConsumerRecord* consumer(uint64_t id);
  Job* job(uint64_t id);
  const Job* job(uint64_t id) const;
  Job* job_named(const std::string& name);

  uint64_t next_worker_id() const { return next_worker_id_; }
  uint64_t next_consumer_id() const { return next_consumer_id_; }
  uint64_t next_job_id() const { return next_job_id_; }

  // Every split is done or lost, and every live participant has reported.
  bool iteration_complete(const Job& job, const Iteration& iteration) const;
  // epochs > 0 and every epoch's iteration exists and is complete (or retired).
  bool job_finished(const Job& job) const;
  // The index the job's next iteration will have.
  static uint64_t next_iteration(const Job& job);
  // The next pending unit worker `w` may take from iteration `it`: its own
  // lane (or the shared one) first, then lanes of dead workers (redelivery).
  std::optional<std::pair<uint64_t, uint64_t>> next_unit(const Job& job, const Iteration& it,
                                                         uint64_t w) const;
  // The unit worker `w` got with this GetSplit attempt, if it still has it.
  std::optional<UnitRef> unit_for_request(const Job& job, uint64_t w, uint64_t request_id) const;
  // The live workers that run a task for `job` (every live worker, today).
  std::vector<uint64_t> live_workers() const;
  // The split a worker is given for unit `split` of `lane`: the job's
  // split, strided for DATA sharding, tagged with the lane.
  control::Split split_for(const Job& job, const Lane& lane, uint64_t lane_id,
                           uint64_t split) const;

  // The fewest records that rebuild this state when applied to an empty one
  // (a compacted journal). Dead consumers are left out: nothing refers to
  // them, and they can never come back.
  std::vector<JournalRecord> snapshot() const;

 private:
  Status apply_worker_removed(const WorkerRemoved& r);
  // A new, empty iteration `index` of job `job_id`: an error for an unknown
  // job or an iteration that exists or was retired.
  Result<std::pair<Job*, Iteration*>> start_iteration(uint64_t job_id, uint64_t index);
  Status apply_iteration_started(const IterationStarted& r);
  // Opens a lane holding the job's splits `ids` (every split, when empty),
  // in the job's hand-out order for the iteration.
  Lane& open_lane(Job& job, Iteration& it, uint64_t owner, const std::vector<uint64_t>& ids);
  Status apply_split_assigned(const SplitAssigned& r);
  Status apply_split_done(const SplitDone& r);
  Status apply_split_requeued(const SplitRequeued& r);
  Status apply_iterations_retired(const IterationsRetired& r);
  Status apply_iteration_snapshot(const IterationSnapshot& r);
  // The unit `ref` of `job` is no longer assigned to the worker in `unit`:
  // a retry of the attempt that got it must not get it again.
  static void forget_request(Job& job, const SplitUnit& unit, const UnitRef& ref);
  Result<std::pair<Iteration*, Lane*>> lane_of(uint64_t job, uint64_t iteration, uint64_t lane);

  std::map<uint64_t, WorkerRecord> workers_;
  std::map<uint64_t, ConsumerRecord> consumers_;
  std::map<uint64_t, Job> jobs_;
  uint64_t next_worker_id_ = 1;
  uint64_t next_consumer_id_ = 1;
  uint64_t next_job_id_ = 1;
  uint64_t version_ = 1;  // changes with every applied record
};

// The order splits are handed out in, for a job's iteration: a permutation
// of 0..count-1 seeded by (seed, iteration), identical on every platform (a
// SplitMix64-driven Fisher-Yates; std::shuffle's output is implementation-defined).
std::vector<uint64_t> split_order(uint64_t count, uint64_t seed, uint64_t iteration);

}  // namespace stoker::coordinator
