// Shard indexes: the byte offset of every record (TFRecord) or sample
// (WebDataset tar) of a shard, so splits can be record ranges and a worker
// can start reading in the middle of a shard. Built by one scan of the
// shard's framing (headers only, data is skipped) on first use, then cached
// in memory and on disk: <shard>.stoker-index next to the shard, or in a
// cache directory. A cached index is used only while the shard's size and
// modification time match and its own CRC32C checks out.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pipeline/bad_records.h"
#include "stoker/result.h"

namespace stoker::pipeline {

struct ShardIndex {
  // offsets[i]: where record i starts; offsets[count()]: where the last ends.
  std::vector<uint64_t> offsets;
  // A damaged tail (truncated, or a header whose CRC fails, after which the
  // framing cannot be trusted) stands as one more, bad, record: index count().
  std::optional<BadRecordReason> tail_reason;
  uint64_t tail_offset = 0;
  std::string tail_detail;

  uint64_t count() const { return offsets.empty() ? 0 : offsets.size() - 1; }
  // Records as splits see them: the good ones and the damaged tail.
  uint64_t records() const { return count() + (tail_reason ? 1 : 0); }
};

enum class IndexKind : uint32_t { kTFRecord = 1, kTar = 2 };

// The on-disk form, for a shard with the given size and mtime.
std::vector<std::byte> encode_shard_index(const ShardIndex& index, IndexKind kind,
                                          uint64_t file_size, int64_t mtime_ns);
// Fails unless `bytes` is a valid index of `kind` for a shard of that size and mtime.
Result<ShardIndex> decode_shard_index(std::span<const std::byte> bytes, IndexKind kind,
                                      uint64_t file_size, int64_t mtime_ns);

struct IndexLocation {
  bool next_to_shard = true;
  std::string dir;  // empty: none
};

// Indexes of a fixed list of shards, built at most once each. Thread-safe.
class IndexCache {
 public:
  using Builder = std::function<Result<ShardIndex>(const std::string& path)>;
  IndexCache(IndexKind kind, IndexLocation location, std::vector<std::string> files, Builder build);

  const std::vector<std::string>& files() const { return files_; }
  Result<std::shared_ptr<const ShardIndex>> get(uint32_t shard);

 private:
  Result<std::shared_ptr<const ShardIndex>> load_or_build(const std::string& path);
  std::string cache_path(const std::string& shard) const;

  const IndexKind kind_;
  const IndexLocation location_;
  const std::vector<std::string> files_;
  const Builder build_;
  std::unique_ptr<std::mutex[]> locks_;  // one per shard
  std::vector<std::shared_ptr<const ShardIndex>> indexes_;
};

}  // namespace stoker::pipeline
