// Splits: the units of work the coordinator hands to workers, and the static
// sharding helpers (FILE, DATA) it uses when workers are assigned by index.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stoker/result.h"

namespace stoker::pipeline {

// A unit of work. Splits of one pipeline are enumerated deterministically;
// `id` is the index in that enumeration.
struct Split {
  uint64_t id = 0;
  uint32_t shard = 0;   // index of the file/shard in the source's resolved, sorted file list
  uint64_t begin = 0;   // first record index within the shard
  uint64_t end = 0;     // one past the last record
  uint32_t stride = 1;  // DATA sharding: records begin+phase, begin+phase+stride, ... < end
  uint32_t phase = 0;

  // How many records the split visits.
  uint64_t record_count() const;
  // The n-th record it visits (n < record_count()).
  uint64_t record_at(uint64_t n) const { return begin + phase + n * stride; }
  std::string to_string() const;
  friend bool operator==(const Split&, const Split&) = default;
};

// tf.data service's sharding policies.
enum class ShardingMode : uint8_t {
  kOff,      // every worker produces the whole dataset
  kDynamic,  // the coordinator hands out splits on demand
  kFile,     // worker i takes the shards with shard % n == i
  kData,     // worker i takes every n-th record of every split
};

std::string_view sharding_mode_name(ShardingMode mode);
Result<ShardingMode> parse_sharding_mode(
    std::string_view name);  // "off", "dynamic", "file", "data"

// Worker `index` of `count`'s splits. kOff and kDynamic return every split
// unchanged (under kDynamic the coordinator hands them out one at a time).
// kFile keeps whole shards, round-robin by shard index. kData keeps every
// split with its stride multiplied by `count` and its phase moved to the
// worker's: together, the workers visit each record exactly once. Split ids
// are kept. Requires index < count.
std::vector<Split> static_shard(std::span<const Split> splits, ShardingMode mode, uint32_t index,
                                uint32_t count);

// The most splits a source may make. The coordinator keeps every split of a
// job in memory and journals them all in the job's creation record, which
// holds at most 64 MiB (coordinator/journal.h); a split takes at most 35
// bytes there, so 2^20 of them fit with room for the rest of the record.
inline constexpr uint64_t kMaxSplits = uint64_t{1} << 20;

// How many splits records [0, count) make in splits of `split_size` (0: one
// split). Exact for every count (no rounding-up overflow near 2^64).
uint64_t split_count(uint64_t count, uint64_t split_size);

// OK when records [0, count) in splits of `split_size`, after `before` splits
// already made (of other shards), keep the total within kMaxSplits; else
// invalid_argument naming `what` (the source or shard) and the numbers.
Status check_split_count(uint64_t count, uint64_t split_size, std::string_view what,
                         uint64_t before = 0);

// Cuts records [0, count) of `shard` (named `what` in errors) into splits of
// at most `split_size` records (`split_size` 0: one split), appending to
// `out` with consecutive ids; fails, appending nothing, when `out` would
// hold more than kMaxSplits.
Status append_splits(uint32_t shard, uint64_t count, uint64_t split_size, std::string_view what,
                     std::vector<Split>& out);

// For sources whose records are numbered globally (range, IDX, image folders,
// synthetic): records [0, count) cut into splits of `split_size`; split k is
// its own virtual shard k, and begin/end are global record indices, so FILE
// sharding spreads the splits round-robin. Fails beyond kMaxSplits splits.
Result<std::vector<Split>> global_splits(uint64_t count, uint64_t split_size,
                                         std::string_view what);

}  // namespace stoker::pipeline
