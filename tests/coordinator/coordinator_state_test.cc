// The coordinator's state machine, driven by journal records as the service
// would write them: retried split requests, requeued units and iteration
// reports. Each scenario is replayed into a second state too, which must
// reach the same answers (the journal rebuilds exactly the state that was).
#include "coordinator/coordinator_state.h"

#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <vector>

#include "tests/coordinator/journal_history.h"

namespace stoker::coordinator {

void PrintTo(const UnitRef& unit, std::ostream* out) {
  *out << "{iteration " << unit.iteration << ", lane " << unit.lane << ", split " << unit.split
       << "}";
}

namespace {

constexpr uint64_t kJob = 1;
constexpr uint64_t kConsumer = 1;

// One dynamic job (kJob) read by one consumer (kConsumer), in its iteration 0.
class Scenario : public History {
 public:
  void create_job(uint64_t splits, bool redeliver) {
    History::create_job(kJob, control::SHARDING_DYNAMIC, redeliver, splits, /*seed=*/0);
    join(kConsumer, kJob);
    start(kJob, 0);
  }
  UnitRef assign(uint64_t w, uint64_t request_id) {
    return History::assign(kJob, 0, w, request_id);
  }
  void done(uint64_t w, const UnitRef& unit) { History::done(kJob, w, unit); }
  void requeue(uint64_t w, const UnitRef& unit) { History::requeue(kJob, w, unit); }
  void report(uint64_t w, uint64_t batches) { History::report(kJob, 0, w, {{kConsumer, batches}}); }
};

std::optional<UnitRef> unit_for(CoordinatorState& state, uint64_t w, uint64_t request_id) {
  return state.unit_for_request(*state.job(kJob), w, request_id);
}

bool complete(CoordinatorState& state) {
  const Job& job = *state.job(kJob);
  return state.iteration_complete(job, job.iterations.at(0));
}

// A worker's pipeline threads ask over one connection, each with its own
// request ids: thread 1's answer is lost, thread 2 gets a unit, thread 1
// retries. It must get its own unit again, not a new one (which would leave
// the first assigned to a live worker forever).
TEST(CoordinatorStateTest, ARetriedRequestGetsItsUnitAfterAnotherRequestGotOne) {
  Scenario s;
  s.register_worker(1);
  s.create_job(4, /*redeliver=*/false);
  const UnitRef x = s.assign(1, /*request_id=*/1);
  const UnitRef y = s.assign(1, /*request_id=*/2);
  ASSERT_NE(x.split, y.split);
  CoordinatorState replayed = s.replayed();
  for (CoordinatorState* state : {&s.state(), &replayed}) {
    EXPECT_EQ(unit_for(*state, 1, 1), x);
    EXPECT_EQ(unit_for(*state, 1, 2), y);
    EXPECT_EQ(unit_for(*state, 1, 3), std::nullopt);
    EXPECT_EQ(unit_for(*state, 2, 1), std::nullopt);  // another worker's request 1
  }
  // Once the unit is done or back in the queue, a retry gets a new one.
  s.done(1, x);
  s.requeue(1, y);
  EXPECT_EQ(unit_for(s.state(), 1, 1), std::nullopt);
  EXPECT_EQ(unit_for(s.state(), 1, 2), std::nullopt);
  EXPECT_TRUE(s.state().job(kJob)->requests.empty());
  EXPECT_TRUE(s.replayed().job(kJob)->requests.empty());
}

TEST(CoordinatorStateTest, ADeadWorkersRequestsAreForgotten) {
  Scenario s;
  s.register_worker(1);
  s.create_job(4, /*redeliver=*/true);
  s.assign(1, 1);
  s.assign(1, 2);
  s.remove_worker(1);
  EXPECT_EQ(unit_for(s.state(), 1, 1), std::nullopt);
  EXPECT_TRUE(s.state().job(kJob)->requests.empty());
  EXPECT_TRUE(s.replayed().job(kJob)->requests.empty());
}

// A unit requeued because its answer never reached the worker: a worker
// with no other unit of the iteration never reports it, so it must not stay
// a participant the iteration waits for.
TEST(CoordinatorStateTest, ARequeuedUnitLeavesAWorkerWithoutOtherUnitsOutOfTheIteration) {
  Scenario s;
  s.register_worker(1);
  s.register_worker(2);
  s.create_job(2, /*redeliver=*/false);
  const UnitRef x = s.assign(1, 1);
  const UnitRef y = s.assign(2, 1);
  s.done(2, y);
  s.requeue(1, x);  // worker 1 re-registered without it
  EXPECT_FALSE(s.state().job(kJob)->iterations.at(0).participants.contains(1));
  const UnitRef again = s.assign(2, 2);
  EXPECT_EQ(again, x);
  s.done(2, x);
  s.report(2, 2);
  EXPECT_TRUE(complete(s.state()));
  CoordinatorState replayed = s.replayed();
  EXPECT_TRUE(complete(replayed));
  EXPECT_FALSE(replayed.job(kJob)->iterations.at(0).participants.contains(1));
}

TEST(CoordinatorStateTest, ARequeuedUnitKeepsAWorkerWithAnotherUnitAParticipant) {
  Scenario s;
  s.register_worker(1);
  s.create_job(2, /*redeliver=*/false);
  const UnitRef x = s.assign(1, 1);
  const UnitRef y = s.assign(1, 2);
  s.done(1, x);
  s.requeue(1, y);
  EXPECT_TRUE(s.state().job(kJob)->iterations.at(0).participants.contains(1));
  s.done(1, s.assign(1, 3));
  EXPECT_FALSE(complete(s.state()));  // worker 1 has not reported yet
  s.report(1, 2);
  EXPECT_TRUE(complete(s.state()));
}

// --redeliver: B reported the iteration, then A died and its unit went to B.
// Once that unit is done, B's old report (without its batches) must not
// complete the iteration: B sends a new one after delivering them.
TEST(CoordinatorStateTest, AReportOlderThanARedeliveredUnitDoesNotCompleteTheIteration) {
  Scenario s;
  s.register_worker(1);  // A
  s.register_worker(2);  // B
  s.create_job(2, /*redeliver=*/true);
  const UnitRef x = s.assign(1, 1);
  s.done(2, s.assign(2, 1));
  s.report(2, 5);
  s.remove_worker(1);
  EXPECT_EQ(s.assign(2, 2), x);  // redelivered
  EXPECT_FALSE(complete(s.state()));
  s.done(2, x);
  EXPECT_FALSE(complete(s.state()));
  CoordinatorState before_report = s.replayed();
  EXPECT_FALSE(complete(before_report));
  s.report(2, 9);
  EXPECT_TRUE(complete(s.state()));
  CoordinatorState replayed = s.replayed();
  EXPECT_TRUE(complete(replayed));
  EXPECT_EQ(replayed.job(kJob)->iterations.at(0).reported.at(2).at(kConsumer), 9u);
}

// The same, but the redelivered unit never reached B (its answer was lost
// and B re-registered without it): B does not report again, so its report
// stands and the iteration completes once another worker did the unit.
TEST(CoordinatorStateTest, AReportStandsWhenARedeliveredUnitNeverReachedTheWorker) {
  Scenario s;
  s.register_worker(1);
  s.register_worker(2);
  s.register_worker(3);
  s.create_job(2, /*redeliver=*/true);
  const UnitRef x = s.assign(1, 1);
  s.done(2, s.assign(2, 1));
  s.report(2, 5);
  s.remove_worker(1);
  EXPECT_EQ(s.assign(2, 2), x);
  s.requeue(2, x);
  EXPECT_TRUE(s.state().job(kJob)->iterations.at(0).participants.contains(2));
  EXPECT_EQ(s.assign(3, 1), x);
  s.done(3, x);
  s.report(3, 4);
  EXPECT_TRUE(complete(s.state()));
  CoordinatorState replayed = s.replayed();
  EXPECT_TRUE(complete(replayed));
  EXPECT_EQ(replayed.job(kJob)->iterations.at(0).reported.at(2).at(kConsumer), 5u);
}

}  // namespace
}  // namespace stoker::coordinator
