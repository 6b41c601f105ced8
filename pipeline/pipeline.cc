// Pipeline: compiles a spec and runs splits. Two batch loops:
//  - fixed slots (images, range): every element has the same size, so each
//    one is written straight into its slot of the send buffer;
//  - staged (text): elements wait in their length bucket until it fills,
//    then the batch is written into a send buffer of exactly its size.
// A split's last batch carries kLastOfSplit; a split that yields no element
// (all bad, or fewer than a batch with drop_remainder) still ends with an
// empty batch so consumers can account for every split.
#include "pipeline/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "pipeline/image_ops.h"
#include "pipeline/overloaded.h"
#include "pipeline/random.h"
#include "pipeline/range_payload.h"
#include "pipeline/source.h"

namespace stoker::pipeline {
namespace {

constexpr size_t kTensorAlignment = 64;  // every tensor starts on a cache line
size_t align_up(size_t n) { return (n + kTensorAlignment - 1) & ~(kTensorAlignment - 1); }

// Alignment padding is zeroed: batches are byte-identical run to run, and
// no stale memory of the send buffer goes over the wire.
void zero_gap(std::byte* payload, size_t from, size_t to) {
  if (to > from) std::memset(payload + from, 0, to - from);
}

struct SourceChecks {
  LabelChecks labels;
  ImageChecks images;
};

SourceChecks checks_of(const SourceSpec& source) {
  return std::visit(Overloaded{[](const TFRecordSource& s) {
                                 return SourceChecks{s.label_checks, s.image_checks};
                               },
                               [](const WebDatasetSource& s) {
                                 return SourceChecks{s.label_checks, s.image_checks};
                               },
                               [](const IdxSource& s) {
                                 return SourceChecks{s.label_checks, s.image_checks};
                               },
                               [](const ImageFolderSource& s) {
                                 return SourceChecks{{}, s.image_checks};
                               },
                               [](const SyntheticImagesSource& s) {
                                 return SourceChecks{{s.num_classes}, {}};
                               },
                               [](const SyntheticTokensSource& s) {
                                 return SourceChecks{{s.num_classes}, {}};
                               },
                               [](const RangeSource&) { return SourceChecks{}; }},
                    source);
}

// The most records a split can hold, when the spec alone says: a fixed
// split_size, or a count below it; nullopt for whole-shard splits.
struct SplitBound {
  uint64_t records = 0;
  std::string_view field;  // what sets it
};
std::optional<SplitBound> largest_split(const SourceSpec& source) {
  const auto counted = [](uint64_t count, uint64_t split_size) {
    return std::optional<SplitBound>(count < split_size ? SplitBound{count, "count"}
                                                        : SplitBound{split_size, "split_size"});
  };
  return std::visit(
      Overloaded{[&](const RangeSource& s) { return counted(s.count, s.split_size); },
                 [&](const SyntheticImagesSource& s) { return counted(s.count, s.split_size); },
                 [&](const SyntheticTokensSource& s) { return counted(s.count, s.split_size); },
                 [](const auto& s) {
                   return s.split_size == 0
                              ? std::nullopt
                              : std::optional<SplitBound>(SplitBound{s.split_size, "split_size"});
                 }},
      source);
}

// Batches never span splits, so with drop_remainder a split shorter than
// every batch yields nothing: refuse a spec where that holds for all splits.
Status check_splits_fill_a_batch(const PipelineSpec& spec) {
  const BatchSpec& batch = spec.batch;
  if (!batch.drop_remainder) return Status::ok();
  const uint32_t smallest =
      batch.bucketed() ? *std::min_element(batch.bucket_sizes.begin(), batch.bucket_sizes.end())
                       : batch.size;
  const auto bound = largest_split(spec.source);
  if (!bound || bound->records >= smallest) return Status::ok();
  return invalid_argument(fmt::format(
      "batch.drop_remainder: splits hold at most {} records (source.{}) and batches of {}{} never "
      "span splits, so every batch would be dropped: raise source.split_size or lower the "
      "batch size",
      bound->records, bound->field, batch.bucketed() ? "at least " : "", smallest));
}

}  // namespace

struct CompiledOps {
  ElementKind kind = ElementKind::kIndex;
  uint32_t shuffle_buffer = 0;  // 0: no shuffle
  SourceChecks checks;
  bool has_labels = false;
  std::optional<ImageTransform> image;  // images
  uint32_t max_length = 0;              // text
  uint64_t element_bytes = 0;           // range
};

namespace {

// Validates a record's label against the spec.
std::optional<RecordProblem> check_label(const Record& record, const CompiledOps& ops) {
  if (!ops.has_labels) return std::nullopt;
  if (!record.has_label) return RecordProblem{BadRecordReason::kMalformedRecord, "no label"};
  const uint32_t k = ops.checks.labels.num_classes;
  if (record.label < 0 || record.label > INT32_MAX || (k > 0 && record.label >= k)) {
    return RecordProblem{BadRecordReason::kLabelOutOfRange,
                         k > 0 ? fmt::format("label {} is outside [0, {})", record.label, k)
                               : fmt::format("label {} is negative or beyond int32", record.label)};
  }
  return std::nullopt;
}

// Turns one record into one fixed-size element: the big tensor's slot and a
// small scalar (the label, or the range index).
class SlotWriter {
 public:
  virtual ~SlotWriter() = default;
  virtual size_t slot_bytes() const = 0;
  virtual std::optional<RecordProblem> write(const Record& record, uint8_t* slot,
                                             int64_t& scalar) = 0;
  // Adds the tensors of an n-element batch laid out as the loop writes it:
  // the slots from offset 0, then the scalars.
  virtual Status describe(BatchDescriptor& d, uint64_t n) const = 0;
  // Bytes of an n-element batch.
  virtual size_t batch_bytes(uint64_t n) const = 0;
  // Writes the n scalars where describe() says they are.
  virtual void write_scalars(std::span<const int64_t> scalars, std::byte* payload) const = 0;
};

class RangeWriter final : public SlotWriter {
 public:
  explicit RangeWriter(uint64_t element_bytes) : element_bytes_(element_bytes) {}
  size_t slot_bytes() const override { return element_bytes_; }
  std::optional<RecordProblem> write(const Record& record, uint8_t* slot,
                                     int64_t& scalar) override {
    scalar = static_cast<int64_t>(record.key);
    fill_range_payload(record.key, std::span(reinterpret_cast<std::byte*>(slot), element_bytes_));
    return std::nullopt;
  }
  Status describe(BatchDescriptor& d, uint64_t n) const override {
    if (element_bytes_ > 0) {
      const uint64_t shape[] = {n, element_bytes_};
      STOKER_RETURN_IF_ERROR(d.add_tensor("payload", DType::kUInt8, shape, 0));
    }
    const uint64_t shape[] = {n};
    return d.add_tensor("index", DType::kInt64, shape, scalars_offset(n));
  }
  size_t batch_bytes(uint64_t n) const override { return scalars_offset(n) + 8 * n; }
  void write_scalars(std::span<const int64_t> scalars, std::byte* payload) const override {
    const size_t n = scalars.size();
    zero_gap(payload, n * element_bytes_, scalars_offset(n));
    std::memcpy(payload + scalars_offset(n), scalars.data(), 8 * n);
  }

 private:
  size_t scalars_offset(uint64_t n) const {
    return element_bytes_ ? align_up(n * element_bytes_) : 0;
  }
  uint64_t element_bytes_;
};

class ImageWriter final : public SlotWriter {
 public:
  ImageWriter(const CompiledOps& ops, uint64_t seed) : ops_(ops), seed_(seed) {}
  size_t slot_bytes() const override { return ops_.image->output_bytes(); }
  std::optional<RecordProblem> write(const Record& record, uint8_t* slot,
                                     int64_t& scalar) override {
    if (auto problem = check_label(record, ops_)) return problem;
    scalar = record.label;
    return processor_.process(record, *ops_.image, ops_.checks.images, seed_, slot);
  }
  Status describe(BatchDescriptor& d, uint64_t n) const override {
    const ImageSize s = ops_.image->output_size();
    const uint64_t shape[] = {n, s.height, s.width, ops_.image->channels()};
    STOKER_RETURN_IF_ERROR(d.add_tensor("image", DType::kUInt8, shape, 0));
    if (!ops_.has_labels) return Status::ok();
    const uint64_t label_shape[] = {n};
    return d.add_tensor("label", DType::kInt32, label_shape, align_up(n * slot_bytes()));
  }
  size_t batch_bytes(uint64_t n) const override {
    return ops_.has_labels ? align_up(n * slot_bytes()) + 4 * n : n * slot_bytes();
  }
  void write_scalars(std::span<const int64_t> scalars, std::byte* payload) const override {
    if (!ops_.has_labels) return;
    zero_gap(payload, scalars.size() * slot_bytes(), align_up(scalars.size() * slot_bytes()));
    std::byte* out = payload + align_up(scalars.size() * slot_bytes());
    for (size_t i = 0; i < scalars.size(); ++i) {
      const auto label = static_cast<int32_t>(scalars[i]);
      std::memcpy(out + 4 * i, &label, 4);
    }
  }

 private:
  const CompiledOps& ops_;
  uint64_t seed_;
  ImageProcessor processor_;
};

// A text batch being assembled.
struct StagedBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> offsets{0};
  std::vector<int32_t> labels;
  uint64_t size() const { return offsets.size() - 1; }
  void clear() {
    tokens.clear();
    offsets.assign(1, 0);
    labels.clear();
  }
};

size_t text_batch_bytes(uint64_t n, uint64_t tokens, bool labels) {
  const size_t offsets_at = align_up(4 * tokens);
  const size_t labels_at = align_up(offsets_at + 4 * (n + 1));
  return labels ? labels_at + 4 * n : offsets_at + 4 * (n + 1);
}

// The state of one run_split call.
class SplitRun {
 public:
  SplitRun(const Split& split, uint64_t iteration, BatchSink& sink, const std::atomic<bool>& cancel,
           BadRecordLedger& ledger, BadRecordPolicy policy)
      : split_(split),
        iteration_(iteration),
        sink_(sink),
        cancel_(cancel),
        ledger_(ledger),
        policy_(policy) {}

  // The next record that passes `accept`, or false at the end of the split.
  template <class Accept>
  Result<bool> next_good(RecordCursor& cursor, Record& record, Accept&& accept) {
    BadRecord bad;
    for (;;) {
      if (cancel_.load(std::memory_order_relaxed)) {
        return cancelled(fmt::format("{} was cancelled", split_.to_string()));
      }
      STOKER_ASSIGN_OR_RETURN(CursorStep step, cursor.next(record, bad));
      if (step == CursorStep::kEnd) return false;
      if (step == CursorStep::kBadRecord) {
        STOKER_RETURN_IF_ERROR(ledger_.report(bad, policy_));
        continue;
      }
      if (std::optional<RecordProblem> problem = accept(record)) {
        BadRecord b{problem->reason, record.file ? *record.file : std::string("?"), record.offset,
                    std::move(problem->detail)};
        STOKER_RETURN_IF_ERROR(ledger_.report(b, policy_));
        continue;
      }
      return true;
    }
  }

  Status emit(BatchDescriptor d, SendBuffer buffer, bool last) {
    const uint64_t sequence = sequence_++;
    d.split_id = split_.id;
    d.sequence = sequence;
    d.iteration = iteration_;
    d.flags = last ? uint32_t{kLastOfSplit} : 0u;
    last_sent_ = last;
    Status st = sink_.emit(std::move(d), std::move(buffer));
    if (st.is_ok()) return st;
    return st.with_context(fmt::format("emitting batch {} of {}", sequence, split_.to_string()));
  }

  bool last_sent() const { return last_sent_; }
  BatchSink& sink() { return sink_; }

 private:
  Split split_;
  uint64_t iteration_;
  BatchSink& sink_;
  const std::atomic<bool>& cancel_;
  BadRecordLedger& ledger_;
  BadRecordPolicy policy_;
  uint64_t sequence_ = 0;
  bool last_sent_ = false;
};

// Elements written into their slots as they are made. The first element of
// each batch after the first is made ahead (into `ahead`) to learn whether
// the batch before it was the split's last.
Status run_fixed_slots(SplitRun& run, RecordCursor& cursor, SlotWriter& writer, uint32_t batch_size,
                       bool drop_remainder) {
  const size_t slot = writer.slot_bytes();
  std::vector<uint8_t> ahead(slot);
  int64_t ahead_scalar = 0;
  std::vector<int64_t> scalars(batch_size);
  Record record;
  const auto make = [&](uint8_t* out, int64_t& scalar) {
    return run.next_good(cursor, record,
                         [&](const Record& r) { return writer.write(r, out, scalar); });
  };
  STOKER_ASSIGN_OR_RETURN(bool have, make(ahead.data(), ahead_scalar));
  while (have) {
    STOKER_ASSIGN_OR_RETURN(SendBuffer buffer, run.sink().acquire(writer.batch_bytes(batch_size)));
    auto* base = reinterpret_cast<uint8_t*>(buffer.bytes().data());
    if (slot > 0) std::memcpy(base, ahead.data(), slot);
    scalars[0] = ahead_scalar;
    uint32_t n = 1;
    while (n < batch_size) {
      STOKER_ASSIGN_OR_RETURN(bool more, make(base + size_t{n} * slot, scalars[n]));
      if (!more) break;
      ++n;
    }
    if (n == batch_size) {
      STOKER_ASSIGN_OR_RETURN(have, make(ahead.data(), ahead_scalar));
    } else {
      have = false;
      if (drop_remainder) break;
    }
    writer.write_scalars(std::span(scalars.data(), n), buffer.bytes().data());
    BatchDescriptor d;
    STOKER_RETURN_IF_ERROR(writer.describe(d, n));
    d.payload_bytes = writer.batch_bytes(n);
    STOKER_RETURN_IF_ERROR(run.emit(d, std::move(buffer), !have));
  }
  if (!run.last_sent()) {
    STOKER_ASSIGN_OR_RETURN(SendBuffer buffer, run.sink().acquire(writer.batch_bytes(0)));
    BatchDescriptor d;
    STOKER_RETURN_IF_ERROR(writer.describe(d, 0));
    d.payload_bytes = writer.batch_bytes(0);
    STOKER_RETURN_IF_ERROR(run.emit(d, std::move(buffer), true));
  }
  return Status::ok();
}

Status emit_text(SplitRun& run, const StagedBatch& b, bool labels, bool last) {
  const uint64_t n = b.size();
  const size_t bytes = text_batch_bytes(n, b.tokens.size(), labels);
  STOKER_ASSIGN_OR_RETURN(SendBuffer buffer, run.sink().acquire(bytes));
  std::byte* out = buffer.bytes().data();
  const size_t offsets_at = align_up(4 * b.tokens.size());
  const size_t labels_at = align_up(offsets_at + 4 * (n + 1));
  if (!b.tokens.empty()) std::memcpy(out, b.tokens.data(), 4 * b.tokens.size());
  zero_gap(out, 4 * b.tokens.size(), offsets_at);
  std::memcpy(out + offsets_at, b.offsets.data(), 4 * (n + 1));
  if (labels) zero_gap(out, offsets_at + 4 * (n + 1), labels_at);
  BatchDescriptor d;
  const uint64_t token_shape[] = {b.tokens.size()};
  STOKER_RETURN_IF_ERROR(d.add_tensor("tokens", DType::kInt32, token_shape, 0));
  const uint64_t offsets_shape[] = {n + 1};
  STOKER_RETURN_IF_ERROR(d.add_tensor("offsets", DType::kInt32, offsets_shape, offsets_at));
  if (labels) {
    if (n > 0) std::memcpy(out + labels_at, b.labels.data(), 4 * n);
    const uint64_t label_shape[] = {n};
    STOKER_RETURN_IF_ERROR(d.add_tensor("label", DType::kInt32, label_shape, labels_at));
  }
  d.payload_bytes = bytes;
  return run.emit(d, std::move(buffer), last);
}

// Text: truncate, bucket by length, batch per bucket.
Status run_text(SplitRun& run, RecordCursor& cursor, const CompiledOps& ops,
                const BatchSpec& batch) {
  const bool bucketed = batch.bucketed();
  const size_t buckets = bucketed ? batch.bucket_sizes.size() : 1;
  std::vector<StagedBatch> staged(buckets);
  StagedBatch pending;  // complete, waiting to learn whether it is the last
  bool have_pending = false;
  const auto capacity = [&](size_t b) { return bucketed ? batch.bucket_sizes[b] : batch.size; };
  const auto complete = [&](StagedBatch& b) -> Status {
    if (have_pending) STOKER_RETURN_IF_ERROR(emit_text(run, pending, ops.has_labels, false));
    std::swap(pending, b);
    b.clear();
    have_pending = true;
    return Status::ok();
  };
  Record record;
  for (;;) {
    STOKER_ASSIGN_OR_RETURN(bool more, run.next_good(cursor, record, [&](const Record& r) {
      return check_label(r, ops);
    }));
    if (!more) break;
    const size_t length = std::min<size_t>(record.tokens.size(), ops.max_length);
    size_t b = 0;
    if (bucketed) {
      b = static_cast<size_t>(
          std::upper_bound(batch.bucket_boundaries.begin(), batch.bucket_boundaries.end(), length) -
          batch.bucket_boundaries.begin());
    }
    StagedBatch& s = staged[b];
    s.tokens.insert(s.tokens.end(), record.tokens.begin(),
                    record.tokens.begin() + static_cast<ptrdiff_t>(length));
    s.offsets.push_back(static_cast<int32_t>(s.tokens.size()));
    if (ops.has_labels) s.labels.push_back(static_cast<int32_t>(record.label));
    if (s.size() == capacity(b)) STOKER_RETURN_IF_ERROR(complete(s));
  }
  if (!batch.drop_remainder) {
    for (auto& s : staged) {
      if (s.size() > 0) STOKER_RETURN_IF_ERROR(complete(s));
    }
  }
  if (have_pending) return emit_text(run, pending, ops.has_labels, true);
  return emit_text(run, StagedBatch{}, ops.has_labels, true);
}

}  // namespace

Pipeline::Pipeline(PipelineSpec spec, PipelineOptions options)
    : spec_(std::move(spec)),
      options_(std::move(options)),
      policy_(options_.bad_records.value_or(spec_.bad_records)) {}

Pipeline::~Pipeline() = default;

Result<std::shared_ptr<Pipeline>> Pipeline::create(const PipelineSpec& spec,
                                                   PipelineOptions options) {
  STOKER_RETURN_IF_ERROR(check_splits_fill_a_batch(spec));
  std::shared_ptr<Pipeline> p(new Pipeline(spec, std::move(options)));
  SourceContext context{p->options_.base_dir, p->options_.index_next_to_shard,
                        p->options_.index_dir};
  STOKER_ASSIGN_OR_RETURN(p->source_, make_source(p->spec_, context));
  const SourceTraits traits = p->source_->traits();

  auto ops = std::make_unique<CompiledOps>();
  ops->kind = p->spec_.element_kind();
  ops->checks = checks_of(p->spec_.source);
  ops->has_labels = traits.has_labels;
  for (const auto& op : p->spec_.ops) {
    if (const auto* s = std::get_if<ShuffleOp>(&op)) ops->shuffle_buffer = s->buffer_size;
    if (const auto* t = std::get_if<TruncateOp>(&op)) ops->max_length = t->max_length;
  }
  const BatchSpec& batch = p->spec_.batch;
  switch (ops->kind) {
    case ElementKind::kIndex: {
      ops->element_bytes = std::get<RangeSource>(p->spec_.source).element_bytes;
      p->max_batch_bytes_ = RangeWriter(ops->element_bytes).batch_bytes(batch.size);
      break;
    }
    case ElementKind::kImage: {
      std::optional<ImageSize> fixed = ops->checks.images.image_size;
      if (!fixed) fixed = traits.native_image_size;
      if (const auto* s = std::get_if<SyntheticImagesSource>(&p->spec_.source)) {
        fixed = ImageSize{s->height, s->width};
      }
      STOKER_ASSIGN_OR_RETURN(ops->image, ImageTransform::compile(p->spec_.ops, fixed));
      const size_t slot = ops->image->output_bytes();
      const size_t n = batch.size;
      p->max_batch_bytes_ = ops->has_labels ? align_up(n * slot) + 4 * n : n * slot;
      break;
    }
    case ElementKind::kText: {
      size_t bound = 0;
      uint64_t most_tokens = 0;  // offsets are int32: a batch's tokens must fit
      const auto consider = [&](uint64_t n, uint64_t longest) {
        most_tokens = std::max(most_tokens, n * longest);
        bound = std::max(bound, text_batch_bytes(n, n * longest, ops->has_labels));
      };
      if (batch.bucketed()) {
        for (size_t b = 0; b < batch.bucket_sizes.size(); ++b) {
          // Bucket b holds lengths below its boundary (the last: up to max_length).
          consider(batch.bucket_sizes[b], b < batch.bucket_boundaries.size()
                                              ? batch.bucket_boundaries[b] - 1
                                              : ops->max_length);
        }
      } else {
        consider(batch.size, ops->max_length);
      }
      if (most_tokens > INT32_MAX) {
        return invalid_argument(
            fmt::format("batch: up to {} tokens per batch; offsets are int32, so at most {} fit",
                        most_tokens, INT32_MAX));
      }
      p->max_batch_bytes_ = bound;
      break;
    }
  }
  p->ops_ = std::move(ops);
  return p;
}

Result<std::vector<Split>> Pipeline::splits() const { return source_->splits(); }

Status Pipeline::run_split(const Split& split, uint64_t iteration, BatchSink& sink,
                           const std::atomic<bool>& cancel) {
  STOKER_ASSIGN_OR_RETURN(std::unique_ptr<RecordCursor> cursor, source_->open(split));
  if (ops_->shuffle_buffer > 0) {
    cursor =
        make_shuffle_cursor(std::move(cursor), ops_->shuffle_buffer,
                            mix_seed({spec_.seed, static_cast<uint64_t>(RandomPurpose::kShuffle),
                                      iteration, split.id}));
  }
  SplitRun run(split, iteration, sink, cancel, ledger_, policy_);
  switch (ops_->kind) {
    case ElementKind::kIndex: {
      RangeWriter writer(ops_->element_bytes);
      return run_fixed_slots(run, *cursor, writer, spec_.batch.size, spec_.batch.drop_remainder);
    }
    case ElementKind::kImage: {
      ImageWriter writer(*ops_, mix_seed({spec_.seed, iteration}));
      return run_fixed_slots(run, *cursor, writer, spec_.batch.size, spec_.batch.drop_remainder);
    }
    case ElementKind::kText:
      return run_text(run, *cursor, *ops_, spec_.batch);
  }
  return internal_error("unknown element kind");
}

BadRecordCounts Pipeline::bad_records() const { return ledger_.counts(); }

size_t Pipeline::max_batch_bytes() const { return max_batch_bytes_; }

}  // namespace stoker::pipeline
