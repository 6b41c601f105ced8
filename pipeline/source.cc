// make_source and the shuffle buffer, which works on any source's records.
#include "pipeline/source.h"

#include <utility>

#include "pipeline/overloaded.h"
#include "pipeline/random.h"

namespace stoker::pipeline {
namespace {

class ShuffleCursor final : public RecordCursor {
 public:
  ShuffleCursor(std::unique_ptr<RecordCursor> inner, uint32_t buffer_size, uint64_t seed)
      : inner_(std::move(inner)), capacity_(buffer_size), rng_(seed) {
    buffer_.reserve(std::min<uint32_t>(buffer_size, 4096));
  }

  Result<CursorStep> next(Record& record, BadRecord& bad) override {
    // Fill the buffer; a bad record met on the way goes out at once.
    while (!inner_done_ && buffer_.size() < capacity_) {
      if (spare_.empty()) spare_.emplace_back();
      Record& slot = spare_.back();
      STOKER_ASSIGN_OR_RETURN(CursorStep step, inner_->next(slot, bad));
      if (step == CursorStep::kEnd) {
        inner_done_ = true;
        break;
      }
      if (step == CursorStep::kBadRecord) return CursorStep::kBadRecord;
      buffer_.push_back(std::move(slot));
      spare_.pop_back();
    }
    if (buffer_.empty()) return CursorStep::kEnd;
    const auto pick = static_cast<size_t>(rng_.below(buffer_.size()));
    // Hand the picked record out and keep the caller's old one for reuse, so
    // buffers keep their capacity instead of being reallocated per record.
    std::swap(record, buffer_[pick]);
    spare_.push_back(std::move(buffer_[pick]));
    spare_.back().clear_content();
    if (pick + 1 != buffer_.size()) buffer_[pick] = std::move(buffer_.back());
    buffer_.pop_back();
    return CursorStep::kRecord;
  }

 private:
  std::unique_ptr<RecordCursor> inner_;
  const uint32_t capacity_;
  Rng rng_;
  std::vector<Record> buffer_;
  std::vector<Record> spare_;
  bool inner_done_ = false;
};

}  // namespace

std::unique_ptr<RecordCursor> make_shuffle_cursor(std::unique_ptr<RecordCursor> inner,
                                                  uint32_t buffer_size, uint64_t seed) {
  return std::make_unique<ShuffleCursor>(std::move(inner), buffer_size, seed);
}

Result<std::unique_ptr<Source>> make_source(const PipelineSpec& spec,
                                            const SourceContext& context) {
  return std::visit(
      Overloaded{[](const RangeSource& s) { return make_range_source(s); },
                 [](const SyntheticImagesSource& s) { return make_synthetic_images_source(s); },
                 [](const SyntheticTokensSource& s) { return make_synthetic_tokens_source(s); },
                 [&](const TFRecordSource& s) { return make_tfrecord_source(s, context); },
                 [&](const WebDatasetSource& s) { return make_webdataset_source(s, context); },
                 [&](const IdxSource& s) { return make_idx_source(s, context); },
                 [&](const ImageFolderSource& s) { return make_image_folder_source(s, context); }},
      spec.source);
}

}  // namespace stoker::pipeline
