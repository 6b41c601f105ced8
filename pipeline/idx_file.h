// IDX files (the MNIST family's format), gzip-compressed or not: a big-endian
// header (two zero bytes, a type code, the number of dimensions, then one
// uint32 per dimension) followed by the data.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/bad_records.h"
#include "stoker/result.h"

namespace stoker::pipeline {

struct IdxHeader {
  uint8_t type = 0;             // 0x08: unsigned byte, the only type stoker reads
  std::vector<uint32_t> dims;   // dims[0]: the number of items
  uint64_t header_bytes = 0;    // where the data starts (in the decompressed stream)
  uint64_t item_bytes() const;  // product of dims[1..]; reading checks it cannot overflow
};

// Reads and checks the header (decompressing only that much).
Result<IdxHeader> read_idx_header(const std::string& path);

struct IdxFile {
  IdxHeader header;
  std::string data;  // the items' bytes (possibly fewer than the header promises)
  // Set when the file ends (or its compressed stream breaks) before the
  // header's item count: items from data.size() / item_bytes() on are lost.
  std::optional<RecordProblem> damage;
};

// Reads the whole file. A short or corrupt stream is not an error: `damage`
// says why. Memory follows the data read, not the header's item count.
Result<IdxFile> read_idx(const std::string& path);

// Writes an IDX file of unsigned bytes, uncompressed (for tests and tools).
Status write_idx(const std::string& path, const std::vector<uint32_t>& dims, std::string_view data);

}  // namespace stoker::pipeline
