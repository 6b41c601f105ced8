// Retired iterations and journal compaction: a state built from a realistic
// history (several jobs, dead and live workers and consumers, redelivery,
// lost splits, retries, partly done and retired iterations) is snapshotted;
// the snapshot, replayed into an empty state, must rebuild every field that
// is not volatile, in memory and through a compacted journal on disk.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "coordinator/coordinator_state.h"
#include "coordinator/journal.h"
#include "tests/coordinator/journal_history.h"

namespace stoker::coordinator {
namespace {

// Every non-volatile field of a state, in a canonical order (maps sorted),
// one fact a line, so that a difference shows where it is. Dead consumers
// are left out: a snapshot drops them (CoordinatorState::snapshot()).
std::string dump(const CoordinatorState& state) {
  std::string out = fmt::format("next ids: worker {} consumer {} job {}\n", state.next_worker_id(),
                                state.next_consumer_id(), state.next_job_id());
  for (const auto& [id, w] : state.workers()) {
    out += fmt::format("worker {} id {} name '{}' address '{}' threads {} alive {}\n", id, w.id,
                       w.name, w.address, w.threads, w.alive);
  }
  for (const auto& [id, c] : state.consumers()) {
    if (!c.alive) continue;
    out += fmt::format("consumer {} id {} job {} name '{}' address '{}' token '{}'\n", id, c.id,
                       c.job, c.name, c.address, c.access_token);
  }
  for (const auto& [id, j] : state.jobs()) {
    out += fmt::format(
        "job {} id {} name '{}' spec '{}' fingerprint '{}' options {{{}}} seed {} failed {} "
        "error '{}' retired below {}\n",
        id, j.id, j.name, j.pipeline_spec, j.fingerprint, j.options.ShortDebugString(),
        j.shuffle_seed, j.failed, j.error.to_string(), j.retired_below);
    for (const auto& s : j.splits) out += fmt::format("  split {{{}}}\n", s.ShortDebugString());
    for (uint64_t c : j.consumers) out += fmt::format("  consumer {}\n", c);
    for (const auto& [key, ref] : j.requests) {
      out += fmt::format("  request ({}, {}) -> iteration {} lane {} split {}\n", key.first,
                         key.second, ref.iteration, ref.lane, ref.split);
    }
    for (const auto& [index, it] : j.iterations) {
      out += fmt::format(
          "  iteration {} index {} units total {} done {} lost {} assigned {} complete {}\n", index,
          it.index, it.units_total, it.units_done, it.units_lost, it.units_assigned,
          state.iteration_complete(j, it));
      out += fmt::format("    static workers {}\n", fmt::join(it.static_workers, " "));
      out += fmt::format("    participants {}\n", fmt::join(it.participants, " "));
      for (const auto& [w, counts] : it.reported) {
        for (const auto& [c, batches] : counts) {
          out += fmt::format("    reported worker {} consumer {} batches {}\n", w, c, batches);
        }
        if (counts.empty()) out += fmt::format("    reported worker {} nothing\n", w);
      }
      for (const auto& [lane_id, lane] : it.lanes) {
        out += fmt::format("    lane {} owner {} data {}/{} pending {}\n", lane_id, lane.owner,
                           lane.data_index, lane.data_count, fmt::join(lane.pending, " "));
        const std::map<uint64_t, SplitUnit> units(lane.units.begin(), lane.units.end());
        for (const auto& [split, u] : units) {
          out += fmt::format("      unit {} state {} worker {} request {}\n", split,
                             static_cast<int>(u.state), u.worker, u.request_id);
        }
      }
    }
  }
  return out;
}

// The realistic history.
void build(History& h) {
  for (uint64_t w = 1; w <= 5; ++w) h.register_worker(w);
  h.remove_worker(5);  // dead before any job

  // Job 1: dynamic, redelivery, two readers. Iterations 0 and 1 complete
  // and retired; 2 complete; 3 in progress: a worker died holding units
  // (back to the queue), a retried request, a requeued unit, a done one.
  h.create_job(1, control::SHARDING_DYNAMIC, true, 12, 7);
  h.join(1, 1);
  h.join(2, 1);
  for (uint64_t i = 0; i < 3; ++i) {
    h.start(1, i);
    h.run_iteration(1, i, 1, {{1, 6}, {2, 6}});
  }
  h.retire(1, 2);
  h.start(1, 3);
  const UnitRef a = h.assign(1, 3, 2, h.next_request());
  const UnitRef b = h.assign(1, 3, 3, h.next_request());
  h.assign(1, 3, 3, h.next_request());
  const UnitRef c = h.assign(1, 3, 1, h.next_request());
  h.assign(1, 3, 1, h.next_request());  // still assigned: a request to retry
  h.done(1, 2, a);
  h.requeue(1, 3, b);
  h.done(1, 1, c);
  h.remove_worker(3);  // its other unit goes back to the front

  // Job 2: FILE sharding, at most once, among workers 1, 2, 4. Worker 4
  // dies holding a unit: it and its lane's pending units are lost.
  h.create_job(2, control::SHARDING_FILE, false, 9, 0);
  h.join(3, 2);
  h.start(2, 0, {1, 2, 4});
  h.done(2, 1, h.assign(2, 0, 1, h.next_request()));
  h.assign(2, 0, 2, h.next_request());
  h.assign(2, 0, 4, h.next_request());
  h.remove_worker(4);
  h.report(2, 0, 1, {{3, 2}});

  // Job 3: OFF sharding, removed with its reader: a dead consumer of a gone job.
  h.create_job(3, control::SHARDING_OFF, false, 3, 1);
  h.join(4, 3);
  h.start(3, 0, {1, 2});
  {
    JournalRecord r;
    r.mutable_job_removed()->set_job_id(3);
    h.apply(r);
  }

  // Job 4: DATA sharding, failed, with a reader that left and one staying.
  h.create_job(4, control::SHARDING_DATA, false, 4, 3);
  h.join(5, 4);
  h.join(6, 4);
  h.leave(5);
  h.start(4, 0, {1, 2});
  h.done(4, 2, h.assign(4, 0, 2, h.next_request()));
  {
    JournalRecord r;
    r.mutable_job_failed()->set_job_id(4);
    r.mutable_job_failed()->set_error("worker 2: bad record");
    r.mutable_job_failed()->set_code(static_cast<uint32_t>(StatusCode::kDataLoss));
    h.apply(r);
  }
  // The newest worker was removed, so the counter is ahead of every worker.
  h.register_worker(6);
  h.remove_worker(6);
}

CoordinatorState replay(const std::vector<JournalRecord>& records) {
  CoordinatorState state;
  for (const auto& record : records) {
    Status st = state.apply(record);
    EXPECT_TRUE(st.is_ok()) << st.to_string() << "\n" << record.DebugString();
  }
  return state;
}

TEST(Snapshot, AReplayedSnapshotRebuildsTheSameState) {
  History h;
  build(h);
  const CoordinatorState& original = h.state();
  // The history has what the snapshot must carry over.
  const Job& one = original.jobs().at(1);
  EXPECT_EQ(one.retired_below, 2u);
  EXPECT_EQ(one.iterations.size(), 2u);
  EXPECT_FALSE(one.requests.empty());
  EXPECT_EQ(original.jobs().at(2).iterations.at(0).units_lost, 3u);
  EXPECT_TRUE(original.jobs().at(4).failed);
  EXPECT_FALSE(original.jobs().contains(3));
  EXPECT_EQ(original.next_worker_id(), 7u);

  const auto snapshot = original.snapshot();
  EXPECT_LT(snapshot.size(), h.records().size());
  const CoordinatorState rebuilt = replay(snapshot);
  const std::string expected = dump(original);
  EXPECT_EQ(dump(rebuilt), expected);
  // The history replayed gives the same state too (the dump is not blind to
  // what the history did), and a snapshot of the rebuilt state is the same
  // records, byte for byte.
  EXPECT_EQ(dump(replay(h.records())), expected);
  const auto again = rebuilt.snapshot();
  ASSERT_EQ(again.size(), snapshot.size());
  for (size_t i = 0; i < snapshot.size(); ++i) {
    EXPECT_EQ(again[i].SerializeAsString(), snapshot[i].SerializeAsString()) << i;
  }
}

TEST(Snapshot, TheDumpSeesAOneFieldDifference) {
  History h;
  build(h);
  CoordinatorState rebuilt = replay(h.state().snapshot());
  ASSERT_EQ(dump(rebuilt), dump(h.state()));
  Job& job = *rebuilt.job(1);
  job.iterations.rbegin()->second.lanes.at(0).units.begin()->second.request_id += 1;
  EXPECT_NE(dump(rebuilt), dump(h.state()));
}

TEST(Snapshot, TheRebuiltStateDecidesAsTheOriginalDoes) {
  History h;
  build(h);
  CoordinatorState& original = h.state();
  CoordinatorState rebuilt = replay(original.snapshot());
  for (CoordinatorState* s : {&original, &rebuilt}) {
    const Job& one = *s->job(1);
    // The redelivered unit of the dead worker comes first, then the order.
    const auto next = s->next_unit(one, one.iterations.at(3), 2);
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next, original.next_unit(*original.job(1), original.job(1)->iterations.at(3), 2));
    EXPECT_FALSE(s->job_finished(one));
    EXPECT_EQ(CoordinatorState::next_iteration(one), 4u);
  }
  // A retried request of worker 1 finds its unit in both.
  const auto& requests = original.job(1)->requests;
  ASSERT_FALSE(requests.empty());
  const auto [key, ref] = *requests.rbegin();
  EXPECT_EQ(rebuilt.unit_for_request(*rebuilt.job(1), key.first, key.second), ref);
}

TEST(Snapshot, AJournalCompactedOnDiskReplaysToTheSameState) {
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("stoker-snapshot-{}-{}", ::getpid(),
                               ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  History h;
  build(h);
  const auto append = [](Journal& journal, const JournalRecord& record) {
    const std::string bytes = record.SerializeAsString();
    ASSERT_TRUE(journal.append(std::as_bytes(std::span(bytes))).is_ok());
  };
  const auto replay_dir = [&](CoordinatorState& state) {
    return Journal::open(
        dir.string(), Durability::kSync, [&](std::span<const std::byte> payload, uint64_t) {
          JournalRecord record;
          EXPECT_TRUE(record.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
          return state.apply(record);
        });
  };
  uint64_t full = 0;
  {
    CoordinatorState none;
    auto journal = replay_dir(none);
    ASSERT_TRUE(journal.is_ok()) << journal.status().to_string();
    for (const auto& record : h.records()) append(**journal, record);
    full = (*journal)->size();
    std::vector<std::string> payloads;
    for (const auto& record : h.state().snapshot()) payloads.push_back(record.SerializeAsString());
    ASSERT_TRUE((*journal)->rewrite(payloads).is_ok());
    EXPECT_LT((*journal)->size(), full);
    EXPECT_EQ((*journal)->size(), std::filesystem::file_size(dir / "journal.log"));
    // Appends go on after the snapshot.
    const size_t before = h.records().size();
    h.done(1, 1, h.assign(1, 3, 1, h.next_request()));
    for (size_t i = before; i < h.records().size(); ++i) append(**journal, h.records()[i]);
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "journal.log.tmp"));
  CoordinatorState rebuilt;
  auto journal = replay_dir(rebuilt);
  ASSERT_TRUE(journal.is_ok()) << journal.status().to_string();
  EXPECT_EQ(dump(rebuilt), dump(h.state()));
  std::filesystem::remove_all(dir);
}

TEST(Retirement, ARetiredIterationCountsAsCompleteAndCannotStartAgain) {
  History h;
  h.register_worker(1);
  h.create_job(1, control::SHARDING_DYNAMIC, false, 3, 0);  // 4 epochs
  h.join(1, 1);
  for (uint64_t i = 0; i < 4; ++i) {
    h.start(1, i);
    h.run_iteration(1, i, 1, {{1, 3}});
  }
  CoordinatorState& s = h.state();
  EXPECT_TRUE(s.job_finished(*s.job(1)));
  h.retire(1, 3);
  const Job& job = *s.job(1);
  EXPECT_EQ(job.iterations.size(), 1u);
  EXPECT_EQ(job.retired_below, 3u);
  EXPECT_TRUE(s.job_finished(job));
  EXPECT_EQ(CoordinatorState::next_iteration(job), 4u);
  JournalRecord again;
  again.mutable_iteration_started()->set_job_id(1);
  again.mutable_iteration_started()->set_iteration(1);
  EXPECT_FALSE(s.apply(again).is_ok());
}

TEST(Retirement, AnIterationWithSplitsAssignedIsNotRetired) {
  History h;
  h.register_worker(1);
  h.create_job(1, control::SHARDING_DYNAMIC, false, 3, 0);
  h.start(1, 0);
  h.assign(1, 0, 1, 1);
  JournalRecord r;
  r.mutable_iterations_retired()->set_job_id(1);
  r.mutable_iterations_retired()->set_below(1);
  EXPECT_FALSE(h.state().apply(r).is_ok());
}

TEST(Snapshot, AnIterationSnapshotNamingUnitsThatCannotBeIsRefused) {
  History h;
  h.register_worker(1);
  h.create_job(1, control::SHARDING_DYNAMIC, false, 3, 0);  // splits 0-3
  // Each case its own iteration: a refused record may leave part of one
  // behind (replay stops there, so nothing uses it).
  uint64_t next_iteration = 0;
  const auto apply = [&](const std::function<void(IterationSnapshot&)>& spoil) {
    JournalRecord r;
    IterationSnapshot& snapshot = *r.mutable_iteration_snapshot();
    snapshot.set_job_id(1);
    snapshot.set_iteration(next_iteration++);
    auto* lane = snapshot.add_lanes();
    lane->add_pending(0);
    auto* unit = lane->add_units();
    unit->set_split_id(1);
    unit->set_state(static_cast<uint32_t>(SplitUnit::State::kDone));
    unit->set_worker_id(1);
    spoil(snapshot);
    const Status st = h.state().apply(r);
    return st.is_ok() ? std::string("taken") : st.message();
  };
  // The record unspoilt is taken: each refusal below is of what it spoils.
  EXPECT_EQ(apply([](IterationSnapshot&) {}), "taken");
  const auto bad_unit = ::testing::HasSubstr("a bad unit in a snapshot of job 1");
  EXPECT_THAT(apply([](IterationSnapshot& r) { r.mutable_lanes(0)->set_pending(0, 4); }), bad_unit);
  EXPECT_THAT(
      apply([](IterationSnapshot& r) { r.mutable_lanes(0)->mutable_units(0)->set_split_id(4); }),
      bad_unit);
  EXPECT_THAT(
      apply([](IterationSnapshot& r) { r.mutable_lanes(0)->mutable_units(0)->set_state(9); }),
      bad_unit);
  EXPECT_THAT(apply([](IterationSnapshot& r) {
                r.mutable_lanes(0)->mutable_units(0)->set_state(
                    static_cast<uint32_t>(SplitUnit::State::kPending));
              }),
              bad_unit);
  EXPECT_THAT(apply([](IterationSnapshot& r) { r.set_iteration(0); }),
              ::testing::HasSubstr("iteration 0 of job 1 started twice"));
  EXPECT_THAT(apply([](IterationSnapshot& r) { r.set_job_id(7); }),
              ::testing::HasSubstr("iteration of unknown job 7"));
}

}  // namespace
}  // namespace stoker::coordinator
