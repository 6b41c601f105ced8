// Split arithmetic and static sharding.
#include "pipeline/split.h"

#include <fmt/format.h>

namespace stoker::pipeline {

uint64_t Split::record_count() const {
  if (stride == 0 || begin + phase >= end) return 0;
  return (end - begin - phase + stride - 1) / stride;
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

void append_splits(uint32_t shard, uint64_t count, uint64_t split_size, std::vector<Split>& out) {
  if (count == 0) return;
  if (split_size == 0) split_size = count;
  for (uint64_t begin = 0; begin < count; begin += split_size) {
    Split s;
    s.id = out.size();
    s.shard = shard;
    s.begin = begin;
    s.end = std::min(begin + split_size, count);
    out.push_back(s);
  }
}

std::vector<Split> global_splits(uint64_t count, uint64_t split_size) {
  std::vector<Split> out;
  if (split_size == 0) split_size = count;
  for (uint64_t begin = 0; begin < count; begin += split_size) {
    Split s;
    s.id = out.size();
    s.shard = static_cast<uint32_t>(out.size());
    s.begin = begin;
    s.end = std::min(begin + split_size, count);
    out.push_back(s);
  }
  return out;
}

}  // namespace stoker::pipeline
