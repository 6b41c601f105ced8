// Shard index encoding and the two-level (memory, disk) cache.
#include "pipeline/record_index.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>

#include "common/byte_codec.h"
#include "common/crc32c.h"
#include "pipeline/file_util.h"

namespace stoker::pipeline {
namespace {

constexpr char kMagic[8] = {'S', 'T', 'K', 'I', 'N', 'D', 'E', 'X'};
constexpr uint32_t kVersion = 1;
constexpr uint8_t kNoTail = 0xFF;
constexpr uint64_t kMaxIndexBytes = uint64_t{1} << 32;

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

}  // namespace

std::vector<std::byte> encode_shard_index(const ShardIndex& index, IndexKind kind,
                                          uint64_t file_size, int64_t mtime_ns) {
  const size_t size =
      8 + 4 + 4 + 8 + 8 + 8 + 1 + 8 + 4 + index.tail_detail.size() + 8 * index.offsets.size() + 4;
  std::vector<std::byte> out(size);
  wire::ByteWriter w(out);
  w.put_bytes(std::as_bytes(std::span(kMagic)));
  w.put(kVersion);
  w.put(static_cast<uint32_t>(kind));
  w.put(file_size);
  w.put(static_cast<uint64_t>(mtime_ns));
  w.put(static_cast<uint64_t>(index.offsets.size()));
  w.put(index.tail_reason ? static_cast<uint8_t>(*index.tail_reason) : kNoTail);
  w.put(index.tail_offset);
  w.put(static_cast<uint32_t>(index.tail_detail.size()));
  w.put_bytes(std::as_bytes(std::span(index.tail_detail)));
  for (uint64_t o : index.offsets) w.put(o);
  w.put(crc32c(std::span(out).first(size - 4)));
  return out;
}

Result<ShardIndex> decode_shard_index(std::span<const std::byte> bytes, IndexKind kind,
                                      uint64_t file_size, int64_t mtime_ns) {
  if (bytes.size() < 4) return data_loss("index file too short");
  wire::ByteReader crc_reader(bytes.last(4));
  if (crc_reader.get<uint32_t>() != crc32c(bytes.first(bytes.size() - 4))) {
    return data_loss("index file CRC mismatch");
  }
  wire::ByteReader r(bytes.first(bytes.size() - 4));
  const auto magic = r.get_bytes(8);
  if (magic.size() != 8 || std::memcmp(magic.data(), kMagic, 8) != 0) {
    return data_loss("not a stoker index file");
  }
  if (r.get<uint32_t>() != kVersion) return data_loss("index file of another version");
  if (r.get<uint32_t>() != static_cast<uint32_t>(kind)) return data_loss("index of another kind");
  if (r.get<uint64_t>() != file_size || r.get<uint64_t>() != static_cast<uint64_t>(mtime_ns)) {
    return data_loss("the shard changed since it was indexed");
  }
  ShardIndex index;
  const uint64_t n = r.get<uint64_t>();
  const uint8_t tail = r.get<uint8_t>();
  index.tail_offset = r.get<uint64_t>();
  const uint32_t detail = r.get<uint32_t>();
  const auto detail_bytes = r.get_bytes(detail);
  index.tail_detail.assign(reinterpret_cast<const char*>(detail_bytes.data()), detail_bytes.size());
  if (tail != kNoTail) {
    if (tail >= kBadRecordReasonCount) return data_loss("index file with an unknown tail reason");
    index.tail_reason = static_cast<BadRecordReason>(tail);
  }
  if (r.underflowed() || n > r.remaining() / 8 || r.remaining() != 8 * n) {
    return data_loss("index file with a wrong record count");
  }
  index.offsets.resize(n);
  for (auto& o : index.offsets) o = r.get<uint64_t>();
  for (size_t i = 1; i < index.offsets.size(); ++i) {
    if (index.offsets[i] < index.offsets[i - 1] || index.offsets[i] > file_size) {
      return data_loss("index file with offsets out of order");
    }
  }
  return index;
}

IndexCache::IndexCache(IndexKind kind, IndexLocation location, std::vector<std::string> files,
                       Builder build)
    : kind_(kind),
      location_(std::move(location)),
      files_(std::move(files)),
      build_(std::move(build)),
      locks_(new std::mutex[files_.size()]),
      indexes_(files_.size()) {}

std::string IndexCache::cache_path(const std::string& shard) const {
  const std::string base = std::filesystem::path(shard).filename().string();
  return fmt::format("{}/{:016x}-{}.stoker-index", location_.dir, fnv1a(shard), base);
}

Result<std::shared_ptr<const ShardIndex>> IndexCache::get(uint32_t shard) {
  if (shard >= files_.size()) {
    return invalid_argument(
        fmt::format("shard {} does not exist (the source has {})", shard, files_.size()));
  }
  std::lock_guard lock(locks_[shard]);
  if (!indexes_[shard]) {
    STOKER_ASSIGN_OR_RETURN(indexes_[shard], load_or_build(files_[shard]));
  }
  return indexes_[shard];
}

Result<std::shared_ptr<const ShardIndex>> IndexCache::load_or_build(const std::string& path) {
  STOKER_ASSIGN_OR_RETURN(FileStat st, stat_file(path));
  std::vector<std::string> candidates;
  if (location_.next_to_shard) candidates.push_back(path + ".stoker-index");
  if (!location_.dir.empty()) candidates.push_back(cache_path(path));
  for (const auto& candidate : candidates) {
    auto bytes = read_whole_file(candidate, kMaxIndexBytes);
    if (!bytes.is_ok()) continue;
    auto index = decode_shard_index(std::as_bytes(std::span(*bytes)), kind_, st.size, st.mtime_ns);
    if (index.is_ok()) return std::make_shared<const ShardIndex>(std::move(*index));
    spdlog::info("pipeline: ignoring index {}: {}", candidate, index.status().message());
  }
  STOKER_ASSIGN_OR_RETURN(ShardIndex index, build_(path));
  const auto encoded = encode_shard_index(index, kind_, st.size, st.mtime_ns);
  bool stored = false;
  for (const auto& candidate : candidates) {
    if (candidate != candidates.front() || !location_.next_to_shard) {
      if (Status s = make_directories(location_.dir); !s.is_ok()) continue;
    }
    if (Status s = write_file_atomic(candidate, encoded); s.is_ok()) {
      stored = true;
      break;
    } else {
      spdlog::debug("pipeline: cannot store index {}: {}", candidate, s.message());
    }
  }
  if (!stored) {
    spdlog::debug("pipeline: index of {} kept in memory only", path);
  }
  return std::make_shared<const ShardIndex>(std::move(index));
}

}  // namespace stoker::pipeline
