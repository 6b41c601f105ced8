// Split arithmetic and static sharding.
#include "pipeline/split.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace stoker::pipeline {

uint64_t Split::record_count() const {
  if (stride == 0 || begin >= end || phase >= end - begin) return 0;
  return split_count(end - begin - phase, stride);
}

std::string Split::to_string() const {
  if (stride == 1)
    return fmt::format("split {} (shard {}, records [{}, {}))", id, shard, begin, end);
  return fmt::format("split {} (shard {}, records [{}, {}) every {} from +{})", id, shard, begin,
                     end, stride, phase);
}

std::string_view sharding_mode_name(ShardingMode mode) {
  switch (mode) {
    case ShardingMode::kOff:
      return "off";
    case ShardingMode::kDynamic:
      return "dynamic";
    case ShardingMode::kFile:
      return "file";
    case ShardingMode::kData:
      return "data";
  }
  return "unknown";
}

Result<ShardingMode> parse_sharding_mode(std::string_view name) {
  for (ShardingMode m :
       {ShardingMode::kOff, ShardingMode::kDynamic, ShardingMode::kFile, ShardingMode::kData}) {
    if (name == sharding_mode_name(m)) return m;
  }
  return invalid_argument(
      fmt::format("sharding mode '{}': expected off, dynamic, file or data", name));
}

std::vector<Split> static_shard(std::span<const Split> splits, ShardingMode mode, uint32_t index,
                                uint32_t count) {
  std::vector<Split> out;
  if (count == 0 || index >= count) return out;
  for (const Split& s : splits) {
    switch (mode) {
      case ShardingMode::kOff:
      case ShardingMode::kDynamic:
        out.push_back(s);
        break;
      case ShardingMode::kFile:
        if (s.shard % count == index) out.push_back(s);
        break;
      case ShardingMode::kData: {
        // Within the split's own records (every stride-th from phase), keep
        // every count-th from the worker's index.
        Split t = s;
        t.stride = s.stride * count;
        t.phase = s.phase + index * s.stride;
        if (t.record_count() > 0) out.push_back(t);
        break;
      }
    }
  }
  return out;
}

uint64_t split_count(uint64_t count, uint64_t split_size) {
  if (split_size == 0) return count > 0 ? 1 : 0;
  return count / split_size + (count % split_size != 0 ? 1 : 0);
}

Status check_split_count(uint64_t count, uint64_t split_size, std::string_view what,
                         uint64_t before) {
  const uint64_t n = split_count(count, split_size);
  if (n <= kMaxSplits && before <= kMaxSplits - n) return Status::ok();
  const std::string total =
      before == 0 ? "" : fmt::format(" ({} with the shards before it)", before + n);
  return invalid_argument(
      fmt::format("{}: {} records in splits of {} make {} splits{}, more than the {} a job can "
                  "hold: raise split_size",
                  what, count, split_size, n, total, kMaxSplits));
}

namespace {

// Records [0, count) in splits of split_size (0: one split), each of `shard`
// or, without one, its own virtual shard (its id). Never steps past count,
// so no overflow.
void cut(uint64_t count, uint64_t split_size, std::optional<uint32_t> shard,
         std::vector<Split>& out) {
  if (split_size == 0) split_size = count;
  for (uint64_t begin = 0; begin < count;) {
    Split s;
    s.id = out.size();
    s.shard = shard ? *shard : static_cast<uint32_t>(s.id);  // kMaxSplits < 2^32
    s.begin = begin;
    s.end = begin + std::min(split_size, count - begin);
    begin = s.end;
    out.push_back(s);
  }
}

}  // namespace

Status append_splits(uint32_t shard, uint64_t count, uint64_t split_size, std::string_view what,
                     std::vector<Split>& out) {
  STOKER_RETURN_IF_ERROR(check_split_count(count, split_size, what, out.size()));
  cut(count, split_size, shard, out);
  return Status::ok();
}

Result<std::vector<Split>> global_splits(uint64_t count, uint64_t split_size,
                                         std::string_view what) {
  STOKER_RETURN_IF_ERROR(check_split_count(count, split_size, what));
  std::vector<Split> out;
  out.reserve(split_count(count, split_size));
  cut(count, split_size, std::nullopt, out);
  return out;
}

}  // namespace stoker::pipeline
