// History: a coordinator state built from journal records as the service
// would decide them, keeping the records for a replay. For the tests of the
// state machine and of snapshots.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "coordinator/coordinator_state.h"

namespace stoker::coordinator {

// Builds a state from records as the service would decide them, keeping
// the records.
class History {
 public:
  void apply(const JournalRecord& record) {
    ASSERT_TRUE(state_.apply(record).is_ok()) << record.DebugString();
    records_.push_back(record);
  }
  CoordinatorState& state() { return state_; }
  const std::vector<JournalRecord>& records() const { return records_; }
  // A fresh state rebuilt from every record applied so far.
  CoordinatorState replayed() const {
    CoordinatorState state;
    for (const auto& record : records_) EXPECT_TRUE(state.apply(record).is_ok());
    return state;
  }

  void register_worker(uint64_t id) {
    JournalRecord r;
    auto* reg = r.mutable_worker_registered();
    reg->set_worker_id(id);
    reg->set_name(fmt::format("w{}", id));
    reg->set_address(fmt::format("10.0.0.{}:1", id));
    reg->set_threads(static_cast<uint32_t>(id));
    apply(r);
  }
  void remove_worker(uint64_t id) {
    JournalRecord r;
    r.mutable_worker_removed()->set_worker_id(id);
    apply(r);
  }
  void create_job(uint64_t id, control::ShardingMode sharding, bool redeliver, uint64_t splits,
                  uint64_t seed) {
    JournalRecord r;
    auto* created = r.mutable_job_created();
    created->set_job_id(id);
    created->set_name(fmt::format("job{}", id));
    created->set_pipeline_spec(fmt::format("{{\"job\":{}}}", id));
    created->set_fingerprint(fmt::format("fp{}", id));
    created->mutable_options()->set_sharding(sharding);
    created->mutable_options()->set_redeliver(redeliver);
    created->mutable_options()->set_epochs(4);
    created->set_shuffle_seed(seed);
    for (uint64_t i = 0; i < splits; ++i) {
      auto* split = created->add_splits();
      split->set_id(i);
      split->set_shard(static_cast<uint32_t>(i));
      split->set_begin(i * 10);
      split->set_end(i * 10 + 10);
    }
    apply(r);
  }
  void join(uint64_t consumer, uint64_t job) {
    JournalRecord r;
    auto* joined = r.mutable_consumer_joined();
    joined->set_consumer_id(consumer);
    joined->set_job_id(job);
    joined->set_name(fmt::format("reader{}", consumer));
    joined->set_address(fmt::format("10.0.1.{}:2", consumer));
    joined->set_access_token(fmt::format("token{}", consumer));
    apply(r);
  }
  void leave(uint64_t consumer) {
    JournalRecord r;
    r.mutable_consumer_removed()->set_consumer_id(consumer);
    apply(r);
  }
  void start(uint64_t job, uint64_t iteration, const std::vector<uint64_t>& workers = {}) {
    JournalRecord r;
    r.mutable_iteration_started()->set_job_id(job);
    r.mutable_iteration_started()->set_iteration(iteration);
    for (uint64_t w : workers) r.mutable_iteration_started()->add_workers(w);
    apply(r);
  }
  // Gives worker `w` the next unit of the iteration, as get_split would.
  UnitRef assign(uint64_t job, uint64_t iteration, uint64_t w, uint64_t request_id) {
    const Job& j = *state_.job(job);
    const auto unit = state_.next_unit(j, j.iterations.at(iteration), w);
    EXPECT_TRUE(unit.has_value());
    if (!unit) return {};
    JournalRecord r;
    auto* assigned = r.mutable_split_assigned();
    assigned->set_job_id(job);
    assigned->set_iteration(iteration);
    assigned->set_lane(unit->first);
    assigned->set_split_id(unit->second);
    assigned->set_worker_id(w);
    assigned->set_request_id(request_id);
    apply(r);
    return {iteration, unit->first, unit->second};
  }
  void done(uint64_t job, uint64_t w, const UnitRef& unit) {
    JournalRecord r;
    auto* done = r.mutable_split_done();
    done->set_job_id(job);
    done->set_iteration(unit.iteration);
    done->set_lane(unit.lane);
    done->set_split_id(unit.split);
    done->set_worker_id(w);
    apply(r);
  }
  void requeue(uint64_t job, uint64_t w, const UnitRef& unit) {
    JournalRecord r;
    auto* requeued = r.mutable_split_requeued();
    requeued->set_job_id(job);
    requeued->set_iteration(unit.iteration);
    requeued->set_lane(unit.lane);
    requeued->set_split_id(unit.split);
    requeued->set_worker_id(w);
    apply(r);
  }
  void report(uint64_t job, uint64_t iteration, uint64_t w,
              const std::map<uint64_t, uint64_t>& batches) {
    JournalRecord r;
    auto* reported = r.mutable_iteration_reported();
    reported->set_job_id(job);
    reported->set_iteration(iteration);
    reported->set_worker_id(w);
    for (const auto& [c, n] : batches) {
      auto* count = reported->add_batches();
      count->set_consumer_id(c);
      count->set_batches(n);
    }
    apply(r);
  }
  void retire(uint64_t job, uint64_t below) {
    JournalRecord r;
    r.mutable_iterations_retired()->set_job_id(job);
    r.mutable_iterations_retired()->set_below(below);
    apply(r);
  }
  // Every unit of an iteration done by `w` (one request each), and reported.
  void run_iteration(uint64_t job, uint64_t iteration, uint64_t w,
                     const std::map<uint64_t, uint64_t>& batches) {
    const Job& j = *state_.job(job);
    while (state_.next_unit(j, j.iterations.at(iteration), w)) {
      done(job, w, assign(job, iteration, w, ++request_));
    }
    report(job, iteration, w, batches);
  }
  uint64_t next_request() { return ++request_; }

 private:
  CoordinatorState state_;
  std::vector<JournalRecord> records_;
  uint64_t request_ = 0;
};

}  // namespace stoker::coordinator
