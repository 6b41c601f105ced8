// The range source end to end: splits, batches and their descriptors, the
// payload formula, shuffling, determinism across thread counts, static
// sharding, backpressure, cancellation and the budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <set>
#include <thread>
#include <tuple>

#include "pipeline/range_payload.h"
#include "pipeline_test_util.h"

namespace stoker::pipeline {
namespace {

using testing::CollectedBatch;
using testing::make_pipeline;
using testing::run_splits;

std::string range_spec(uint64_t count, uint64_t split_size, uint32_t batch, uint64_t element_bytes,
                       const std::string& extra = "") {
  return fmt::format(
      R"({{"source": {{"type": "range", "count": {}, "split_size": {}, "element_bytes": {}}},
          "batch": {{"size": {}}}{}}})",
      count, split_size, element_bytes, batch, extra);
}

TEST(RangePipeline, SplitsCoverTheRange) {
  auto p = make_pipeline(range_spec(100000, 1000, 32, 0));
  ASSERT_TRUE(p);
  auto splits = p->splits();
  ASSERT_TRUE(splits.is_ok());
  ASSERT_EQ(splits->size(), 100u);
  for (size_t k = 0; k < splits->size(); ++k) {
    const Split& s = (*splits)[k];
    EXPECT_EQ(s.id, k);
    EXPECT_EQ(s.begin, k * 1000);
    EXPECT_EQ(s.end, (k + 1) * 1000);
    EXPECT_EQ(s.stride, 1u);
  }
  auto p2 = make_pipeline(range_spec(1001, 500, 32, 0));
  auto s2 = p2->splits();
  ASSERT_EQ(s2->size(), 3u);
  EXPECT_EQ((*s2)[2].begin, 1000u);
  EXPECT_EQ((*s2)[2].end, 1001u);
}

TEST(RangePipeline, BatchesHoldEveryIndexOnceWithVerifiablePayload) {
  constexpr uint64_t kBytes = 37;  // not a multiple of 8: the tail of the last word
  auto p = make_pipeline(range_spec(1000, 300, 64, kBytes));
  ASSERT_TRUE(p);
  auto splits = p->splits();
  ASSERT_TRUE(splits.is_ok());
  auto batches = run_splits(*p, *splits);
  ASSERT_EQ(batches.size(), 4u);
  std::vector<int> seen(1000, 0);
  size_t largest = 0;
  for (const auto& [id, list] : batches) {
    const Split& split = (*splits)[id];
    for (size_t i = 0; i < list.size(); ++i) {
      const BatchDescriptor& d = list[i].descriptor;
      EXPECT_TRUE(d.validate().is_ok()) << d.validate().to_string();
      EXPECT_EQ(d.split_id, id);
      EXPECT_EQ(d.sequence, i);
      EXPECT_EQ(d.flags, i + 1 == list.size() ? uint32_t{kLastOfSplit} : 0u);
      EXPECT_EQ(d.payload_bytes, list[i].payload.size());
      largest = std::max<size_t>(largest, d.payload_bytes);
      const auto index = list[i].values<int64_t>("index");
      const TensorDescriptor* payload = list[i].tensor("payload");
      ASSERT_NE(payload, nullptr);
      EXPECT_EQ(payload->dtype, DType::kUInt8);
      ASSERT_EQ(payload->ndim, 2);
      EXPECT_EQ(payload->shape[0], index.size());
      EXPECT_EQ(payload->shape[1], kBytes);
      EXPECT_EQ(list[i].tensor("index")->offset % 64, 0u);
      // Full batches except the last of the split; without shuffling, in order.
      if (i + 1 < list.size()) {
        EXPECT_EQ(index.size(), 64u);
      }
      for (size_t e = 0; e < index.size(); ++e) {
        const auto idx = static_cast<uint64_t>(index[e]);
        EXPECT_EQ(idx, split.begin + i * 64 + e);
        ++seen[idx];
        for (uint64_t j = 0; j < kBytes; ++j) {
          ASSERT_EQ(static_cast<uint8_t>(list[i].payload[payload->offset + e * kBytes + j]),
                    range_payload_byte(idx, j))
              << "element " << idx << " byte " << j;
        }
      }
    }
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  EXPECT_EQ(largest, p->max_batch_bytes());
}

TEST(RangePipeline, PayloadFormulaIsTheDocumentedOne) {
  // docs/pipelines.md states w_k = splitmix64(i ^ (k * 0xD1B54A32D192ED03)).
  const uint64_t i = 12345;
  uint64_t x = i ^ (1 * 0xD1B54A32D192ED03ull);
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  for (uint64_t b = 0; b < 8; ++b) {
    EXPECT_EQ(range_payload_byte(i, 8 + b), static_cast<uint8_t>(x >> (8 * b)));
  }
}

std::vector<int64_t> indices_of(const std::map<uint64_t, std::vector<CollectedBatch>>& batches) {
  std::vector<int64_t> out;
  for (const auto& [id, list] : batches) {
    for (const auto& b : list) {
      auto v = b.values<int64_t>("index");
      out.insert(out.end(), v.begin(), v.end());
    }
  }
  return out;
}

TEST(RangePipeline, ShuffleIsDeterministicPerSeedIterationAndSplit) {
  const std::string shuffled = R"(, "ops": [{"op": "shuffle", "buffer_size": 100}], "seed": 5)";
  auto p = make_pipeline(range_spec(2000, 500, 32, 16, shuffled));
  ASSERT_TRUE(p);
  auto splits = *p->splits();
  const auto once = run_splits(*p, splits, 0, 1);
  const auto again = run_splits(*p, splits, 0, 4);  // other threads, other interleaving
  const auto a = indices_of(once);
  EXPECT_EQ(a, indices_of(again));
  // Byte-identical batches, not just the same indices.
  for (const auto& [id, list] : once) {
    ASSERT_EQ(list.size(), again.at(id).size());
    for (size_t i = 0; i < list.size(); ++i) EXPECT_EQ(list[i].payload, again.at(id)[i].payload);
  }
  // A permutation of each split's records, but not the identity.
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 2000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(a, sorted);
  for (const auto& [id, list] : once) {
    for (const auto& b : list) {
      for (int64_t idx : b.values<int64_t>("index")) {
        EXPECT_GE(static_cast<uint64_t>(idx), splits[id].begin);
        EXPECT_LT(static_cast<uint64_t>(idx), splits[id].end);
      }
    }
  }
  // Another iteration (epoch) or seed shuffles differently.
  EXPECT_NE(indices_of(run_splits(*p, splits, 1)), a);
  auto q = make_pipeline(range_spec(
      2000, 500, 32, 16, R"(, "ops": [{"op": "shuffle", "buffer_size": 100}], "seed": 6)"));
  EXPECT_NE(indices_of(run_splits(*q, splits, 0)), a);
}

TEST(RangePipeline, DropRemainderEndsWithAnEmptyLastBatch) {
  auto p = make_pipeline(R"({"source": {"type": "range", "count": 100, "split_size": 50},
                             "batch": {"size": 16, "drop_remainder": true}})");
  ASSERT_TRUE(p);
  auto batches = run_splits(*p, *p->splits());
  for (const auto& [id, list] : batches) {
    ASSERT_EQ(list.size(), 4u);  // 3 full batches, then the empty last one
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(list[i].values<int64_t>("index").size(), 16u);
      EXPECT_EQ(list[i].descriptor.flags, 0u);
    }
    EXPECT_EQ(list[3].descriptor.flags, uint32_t{kLastOfSplit});
    EXPECT_EQ(list[3].descriptor.payload_bytes, 0u);
    EXPECT_EQ(list[3].tensor("index")->shape[0], 0u);
    EXPECT_TRUE(list[3].descriptor.validate().is_ok());
  }
  // Exactly divisible: the last full batch carries the flag, no empty batch.
  auto q = make_pipeline(R"({"source": {"type": "range", "count": 64, "split_size": 32},
                             "batch": {"size": 16, "drop_remainder": true}})");
  for (const auto& [id, list] : run_splits(*q, *q->splits())) {
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[1].descriptor.flags, uint32_t{kLastOfSplit});
  }
}

TEST(RangePipeline, StaticShardingCoversEveryRecordOnce) {
  auto p = make_pipeline(range_spec(1000, 64, 10, 0));
  ASSERT_TRUE(p);
  const auto splits = *p->splits();
  for (ShardingMode mode : {ShardingMode::kFile, ShardingMode::kData}) {
    std::vector<int> seen(1000, 0);
    for (uint32_t w = 0; w < 3; ++w) {
      const auto mine = static_shard(splits, mode, w, 3);
      for (const Split& s : mine) {
        if (mode == ShardingMode::kFile) {
          EXPECT_EQ(s.shard % 3, w);
        }
        if (mode == ShardingMode::kData) {
          EXPECT_EQ(s.stride, 3u);
          EXPECT_EQ(s.phase, w);
        }
      }
      for (int64_t idx : indices_of(run_splits(*p, mine))) ++seen[static_cast<size_t>(idx)];
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }))
        << sharding_mode_name(mode);
  }
  EXPECT_EQ(static_shard(splits, ShardingMode::kDynamic, 1, 3).size(), splits.size());
  EXPECT_EQ(static_shard(splits, ShardingMode::kOff, 0, 3).size(), splits.size());
  EXPECT_TRUE(static_shard(splits, ShardingMode::kData, 3, 3).empty());
  // DATA sharding composes: sharding a sharded list again still partitions it.
  Split s{.id = 0, .shard = 0, .begin = 0, .end = 100};
  std::set<uint64_t> all;
  for (uint32_t a = 0; a < 2; ++a) {
    for (const Split& t : static_shard(std::span(&s, 1), ShardingMode::kData, a, 2)) {
      for (uint32_t b = 0; b < 3; ++b) {
        for (const Split& u : static_shard(std::span(&t, 1), ShardingMode::kData, b, 3)) {
          for (uint64_t n = 0; n < u.record_count(); ++n) {
            EXPECT_TRUE(all.insert(u.record_at(n)).second);
          }
        }
      }
    }
  }
  EXPECT_EQ(all.size(), 100u);
}

TEST(RangePipeline, SinkBackpressureBoundsMemoryAndCancelStops) {
  auto p = make_pipeline(range_spec(100000, 100000, 100, 1000));
  ASSERT_TRUE(p);
  const size_t batch = p->max_batch_bytes();
  // The consumer holds batches until the test takes them: two batches of budget.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<SendBuffer> held;
  MemoryBudgetSink sink(2 * batch, [&](BatchDescriptor, SendBuffer b) {
    std::lock_guard lock(mu);
    held.push_back(std::move(b));
    cv.notify_all();
    return Status::ok();
  });
  std::atomic<bool> cancel{false};
  Status result;
  std::thread runner([&] { result = p->run_split((*p->splits())[0], 0, sink, cancel); });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held.size() >= 2; }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(held.size(), 2u) << "the pipeline ran past its budget";
  }
  EXPECT_LE(sink.peak_bytes_in_use(), 2 * batch);
  // Release one: exactly one more batch is made.
  {
    std::lock_guard lock(mu);
    held.pop_front();
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return held.size() >= 2; }));
  }
  EXPECT_GE(sink.acquire_waits(), 1u);
  cancel = true;
  sink.cancel();
  runner.join();
  EXPECT_EQ(result.code(), StatusCode::kCancelled) << result.to_string();
  std::lock_guard lock(mu);
  held.clear();
  EXPECT_EQ(sink.bytes_in_use(), 0u);
}

TEST(RangePipeline, CancelFlagStopsBetweenElements) {
  auto p = make_pipeline(range_spec(1000, 1000, 10, 0));
  testing::CollectingSink sink;
  std::atomic<bool> cancel{true};
  Status st = p->run_split((*p->splits())[0], 0, sink.sink(), cancel);
  EXPECT_EQ(st.code(), StatusCode::kCancelled);
}

TEST(RangePipeline, BatchLargerThanBudgetIsResourceExhausted) {
  auto p = make_pipeline(range_spec(1000, 1000, 100, 1000));
  MemoryBudgetSink sink(p->max_batch_bytes() - 1, nullptr);
  std::atomic<bool> cancel{false};
  Status st = p->run_split((*p->splits())[0], 0, sink, cancel);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
}

TEST(RangePipeline, SinkErrorsStopTheRun) {
  auto p = make_pipeline(range_spec(1000, 1000, 10, 0));
  int emitted = 0;
  MemoryBudgetSink sink(1 << 20, [&](BatchDescriptor, SendBuffer) {
    return ++emitted == 3 ? unavailable("consumer went away") : Status::ok();
  });
  std::atomic<bool> cancel{false};
  Status st = p->run_split((*p->splits())[0], 0, sink, cancel);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("emitting batch 2 of split 0"), std::string::npos) << st.message();
  EXPECT_EQ(emitted, 3);
}

TEST(RangePipeline, SplitOutsideTheRangeIsRejected) {
  auto p = make_pipeline(range_spec(100, 10, 10, 0));
  testing::CollectingSink sink;
  std::atomic<bool> cancel{false};
  Split bogus{.id = 99, .shard = 0, .begin = 90, .end = 200};
  EXPECT_EQ(p->run_split(bogus, 0, sink.sink(), cancel).code(), StatusCode::kInvalidArgument);
}

// Pipeline::create's error for `json`, or OK when it succeeds.
Status create_status(const std::string& json) {
  auto spec = parse_pipeline_spec(json);
  if (!spec.is_ok()) return spec.status();
  auto p = Pipeline::create(*spec);
  return p.is_ok() ? Status::ok() : p.status();
}

TEST(RangePipeline, MoreSplitsThanAJobCanHoldAreRefused) {
  constexpr uint64_t kMax = ~uint64_t{0};
  for (const auto& [count, split_size, splits] :
       {std::tuple{kMax, uint64_t{2}, std::string("9223372036854775808")},
        std::tuple{uint64_t{1} << 30, uint64_t{1}, std::string("1073741824")},
        std::tuple{kMax, uint64_t{1}, std::string("18446744073709551615")},
        std::tuple{(uint64_t{1} << 20) + 1, uint64_t{1}, std::string("1048577")}}) {
    const Status st = create_status(range_spec(count, split_size, 32, 0));
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << count;
    EXPECT_NE(st.message().find(fmt::format("source (range): {} records in splits of {} make {} "
                                            "splits, more than the 1048576 a job can hold",
                                            count, split_size, splits)),
              std::string::npos)
        << st.message();
  }
  // Synthetic sources too.
  const Status tokens = create_status(
      R"({"source": {"type": "synthetic_tokens", "count": 18446744073709551615, "split_size": 3},
          "ops": [{"op": "truncate", "max_length": 8}], "batch": {"size": 4}})");
  EXPECT_EQ(tokens.code(), StatusCode::kInvalidArgument) << tokens.message();
  // Huge splits near 2^64: exact counts, no wrap while cutting them.
  auto p = make_pipeline(range_spec(kMax, uint64_t{1} << 63, 32, 0));
  ASSERT_TRUE(p);
  auto splits = p->splits();
  ASSERT_TRUE(splits.is_ok()) << splits.status().to_string();
  ASSERT_EQ(splits->size(), 2u);
  EXPECT_EQ((*splits)[0].end, uint64_t{1} << 63);
  EXPECT_EQ((*splits)[1].begin, uint64_t{1} << 63);
  EXPECT_EQ((*splits)[1].end, kMax);
  EXPECT_EQ((*splits)[1].record_count(), (uint64_t{1} << 63) - 1);
  // Exactly the limit is fine.
  auto q = make_pipeline(range_spec(uint64_t{1} << 20, 1, 32, 0));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->splits()->size(), uint64_t{1} << 20);
}

TEST(RangePipeline, SplitRecordCountsDoNotWrapNear2To64) {
  const Split whole{.begin = 0, .end = ~uint64_t{0}, .stride = 2, .phase = 0};
  EXPECT_EQ(whole.record_count(), uint64_t{1} << 63);
  const Split odd{.begin = 0, .end = ~uint64_t{0}, .stride = 2, .phase = 1};
  EXPECT_EQ(odd.record_count(), (uint64_t{1} << 63) - 1);
  const Split past{.begin = ~uint64_t{0} - 1, .end = ~uint64_t{0}, .stride = 3, .phase = 2};
  EXPECT_EQ(past.record_count(), 0u);
  EXPECT_EQ(split_count(~uint64_t{0}, 2), uint64_t{1} << 63);
  EXPECT_EQ(split_count(~uint64_t{0}, 0), 1u);
  EXPECT_EQ(split_count(0, 0), 0u);
}

TEST(RangePipeline, DropRemainderWithSplitsSmallerThanABatchIsRefused) {
  const auto spec = [](uint64_t count, uint64_t split_size, bool drop) {
    return fmt::format(
        R"({{"source": {{"type": "range", "count": {}, "split_size": {}}},
            "batch": {{"size": 256, "drop_remainder": {}}}}})",
        count, split_size, drop);
  };
  // docs/pipelines.md's old first example: splits of 250, batches of 256.
  const Status st = create_status(spec(10000, 250, true));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("batch.drop_remainder: splits hold at most 250 records "
                              "(source.split_size) and batches of 256 never span splits"),
            std::string::npos)
      << st.message();
  // A count below the batch size says so.
  const Status small = create_status(spec(100, 1000, true));
  EXPECT_NE(small.message().find("at most 100 records (source.count)"), std::string::npos)
      << small.message();
  EXPECT_TRUE(create_status(spec(10000, 250, false)).is_ok());
  EXPECT_TRUE(create_status(spec(10000, 256, true)).is_ok());
  // Buckets: refused only when no bucket's batch can fill.
  const auto text = [](uint64_t split_size) {
    return fmt::format(
        R"({{"source": {{"type": "synthetic_tokens", "count": 100, "split_size": {}}},
            "ops": [{{"op": "truncate", "max_length": 64}}],
            "batch": {{"bucket": {{"boundaries": [16], "sizes": [32, 8]}},
                       "drop_remainder": true}}}})",
        split_size);
  };
  const Status buckets = create_status(text(7));
  EXPECT_NE(buckets.message().find("batches of at least 8"), std::string::npos)
      << buckets.message();
  EXPECT_TRUE(create_status(text(8)).is_ok());
}

TEST(SendBuffer, ReleasesOnceWhenDestroyedOrReset) {
  struct Owner final : SendBufferOwner {
    int released = 0;
    uint64_t last_token = 0;
    void release_send_buffer(std::span<std::byte>, uint64_t token) noexcept override {
      ++released;
      last_token = token;
    }
  } owner;
  std::byte memory[16];
  {
    SendBuffer a(std::span<std::byte>(memory), &owner, 7);
    SendBuffer b = std::move(a);
    EXPECT_FALSE(a.valid());  // NOLINT: testing the moved-from state
    EXPECT_EQ(b.bytes().size(), 16u);
  }
  EXPECT_EQ(owner.released, 1);
  EXPECT_EQ(owner.last_token, 7u);
  SendBuffer c(std::span<std::byte>(memory), &owner, 8);
  c.reset();
  c.reset();
  EXPECT_EQ(owner.released, 2);
  SendBuffer d(std::span<std::byte>(memory), &owner, 9);
  auto bytes = d.detach();
  EXPECT_EQ(bytes.size(), 16u);
  EXPECT_EQ(owner.released, 2);  // detached: the caller releases
}

}  // namespace
}  // namespace stoker::pipeline
