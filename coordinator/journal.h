// The coordinator's journal: an append-only file of framed records in the
// work dir. Each record is
//   u32 length | u32 masked CRC32C(length) | payload | u32 masked CRC32C(payload)
// (little-endian; CRCs masked as TFRecord does), after a 16-byte file header.
// open() replays every record through a callback. A torn last record (a
// crash in the middle of a write) is dropped with a warning and cut off; a
// damaged record anywhere before the end refuses the start, naming the file
// and the offset, because replaying past it would silently lose state.
//
// rewrite() replaces the whole journal (compaction): the new records go to
// `<dir>/journal.log.tmp`, which is synced and renamed over journal.log, so a
// crash leaves one journal or the other whole. open() removes a leftover
// temporary file: its rename never happened, and journal.log is the journal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "stoker/result.h"

namespace stoker::coordinator {

inline constexpr uint32_t kJournalMagic = 0x4A4B5453;  // "STKJ" little-endian
inline constexpr uint16_t kJournalVersion = 1;
inline constexpr size_t kJournalHeaderBytes = 16;
inline constexpr size_t kRecordOverheadBytes = 12;
inline constexpr size_t kMaxRecordBytes = size_t{64} << 20;

enum class Durability {
  kSync,  // sync() makes appended records durable (fdatasync): survives power loss
  kOs,    // records reach the OS at once (write), survive a process crash, not power loss
};

struct ReplayStats {
  uint64_t records = 0;
  uint64_t bytes = 0;
  bool torn_tail_dropped = false;
};

class Journal {
 public:
  using Apply = std::function<Status(std::span<const std::byte> payload, uint64_t offset)>;

  // Opens (creating if needed) `<dir>/journal.log`, replays it through
  // `apply` and positions for appends. An error from `apply` stops the replay
  // and is returned with the offset of the record.
  static Result<std::unique_ptr<Journal>> open(const std::string& dir, Durability durability,
                                               const Apply& apply, ReplayStats* stats = nullptr);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Writes one record after the last whole one. It is durable after sync()
  // under kSync.
  // A failed write is cut off again, so the journal holds whole records only
  // and later appends may succeed; if it cannot be cut off, the journal is
  // unusable (usable() false) and every later append fails.
  Status append(std::span<const std::byte> payload);
  // Makes every appended record durable (kSync), cheaply when nothing is new.
  Status sync();
  // Replaces the journal with `payloads` (whatever the durability, durable
  // on return); appends go on after them. On an error before the rename the
  // old journal stays in use; after it (the directory cannot be synced) the
  // journal is unusable.
  Status rewrite(std::span<const std::string> payloads);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  uint64_t records_appended() const { return appended_; }
  // False once a failed append could not be cut off: the file may end in a
  // partial record, and nothing written after it would replay.
  bool usable() const { return usable_; }

 private:
  Journal(std::string dir, std::string path, UniqueFd fd, Durability durability)
      : dir_(std::move(dir)), path_(std::move(path)), fd_(std::move(fd)), durability_(durability) {}
  std::string dir_;
  std::string path_;
  UniqueFd fd_;
  Durability durability_;
  uint64_t size_ = 0;
  uint64_t appended_ = 0;
  bool dirty_ = false;
  bool usable_ = true;
  std::vector<std::byte> scratch_;
};

}  // namespace stoker::coordinator
