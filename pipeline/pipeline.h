// A compiled pipeline: the spec's source, ops and batching, ready to turn
// splits into batches. The worker daemon runs N threads, each calling
// run_split() on a different split; a split is processed sequentially on its
// thread, so per-core speed and thread scaling are the same thing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/bad_records.h"
#include "pipeline/batch_sink.h"
#include "pipeline/pipeline_spec.h"
#include "pipeline/split.h"
#include "stoker/result.h"

namespace stoker::pipeline {

struct PipelineOptions {
  // Overrides the spec's bad_records policy when set.
  std::optional<BadRecordPolicy> bad_records;
  // Relative paths in the spec are resolved against this directory (the
  // working directory when empty).
  std::string base_dir;
  // Shard indexes (record offsets of TFRecord files and WebDataset tars) are
  // cached on disk so a shard is scanned once: next to the shard
  // (<shard>.stoker-index) when `index_next_to_shard` and the directory is
  // writable, else in `index_dir` when set, else only in memory.
  bool index_next_to_shard = true;
  std::string index_dir;
};

class Source;
struct CompiledOps;

// Thread-safe: run_split may be called from several threads at once, on
// different splits (or the same one).
class Pipeline {
 public:
  static Result<std::shared_ptr<Pipeline>> create(const PipelineSpec& spec,
                                                  PipelineOptions options = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // The splits of the source, in a deterministic order (id = index). Cheap
  // after the first call; the first call on file sources builds or loads the
  // shard indexes.
  Result<std::vector<Split>> splits() const;

  // Produces the batches of one split, in order, on the calling thread, into
  // `sink`. The same spec (seed included), iteration and split give
  // byte-identical batches whatever else runs concurrently. Returns OK at the
  // end of the split, kCancelled if `cancel` became true, the sink's error,
  // or (policy fail) kDataLoss naming the file and byte offset of the bad
  // record.
  Status run_split(const Split& split, uint64_t iteration, BatchSink& sink,
                   const std::atomic<bool>& cancel);

  // Bad records met since creation, per reason (for metrics and logs).
  BadRecordCounts bad_records() const;

  // Bytes of the largest batch this pipeline can produce (for sizing send
  // buffers and landing slots); for text, the bound batch size x max_length.
  size_t max_batch_bytes() const;

  const PipelineSpec& spec() const { return spec_; }
  BadRecordPolicy bad_record_policy() const { return policy_; }

 private:
  Pipeline(PipelineSpec spec, PipelineOptions options);
  PipelineSpec spec_;
  PipelineOptions options_;
  BadRecordPolicy policy_;
  std::unique_ptr<Source> source_;
  std::unique_ptr<CompiledOps> ops_;
  BadRecordLedger ledger_;
  size_t max_batch_bytes_ = 0;
};

}  // namespace stoker::pipeline
