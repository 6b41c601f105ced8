// Sources that generate their records: range (indices), synthetic images (a
// pool of JPEGs made once) and synthetic token sequences.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "pipeline/image_synth.h"
#include "pipeline/jpeg_codec.h"
#include "pipeline/random.h"
#include "pipeline/source.h"

namespace stoker::pipeline {
namespace {

// The sources as split errors name them.
constexpr std::string_view kRangeWhat = "source (range)";
constexpr std::string_view kSyntheticImagesWhat = "source (synthetic_images)";
constexpr std::string_view kSyntheticTokensWhat = "source (synthetic_tokens)";

// Visits the records of a split whose begin/end are global indices.
class IndexCursor : public RecordCursor {
 public:
  explicit IndexCursor(const Split& split) : split_(split), total_(split.record_count()) {}

 protected:
  // The next global index, or false at the end.
  bool advance(uint64_t& index) {
    if (n_ >= total_) return false;
    index = split_.record_at(n_++);
    return true;
  }

 private:
  Split split_;
  uint64_t total_;
  uint64_t n_ = 0;
};

// ---- range -----------------------------------------------------------------

class RangeCursor final : public IndexCursor {
 public:
  RangeCursor(const Split& split, const std::string* name) : IndexCursor(split), name_(name) {}
  Result<CursorStep> next(Record& record, BadRecord&) override {
    uint64_t i = 0;
    if (!advance(i)) return CursorStep::kEnd;
    record.clear_content();
    record.key = i;
    record.offset = i;
    record.file = name_;
    return CursorStep::kRecord;
  }

 private:
  const std::string* name_;
};

class RangeSourceImpl final : public Source {
 public:
  explicit RangeSourceImpl(const RangeSource& spec) : spec_(spec) {}
  Result<std::vector<Split>> splits() override {
    return global_splits(spec_.count, spec_.split_size, kRangeWhat);
  }
  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    if (split.end > spec_.count || split.begin > split.end) {
      return invalid_argument(
          fmt::format("{} is outside the range's {} elements", split.to_string(), spec_.count));
    }
    return std::unique_ptr<RecordCursor>(std::make_unique<RangeCursor>(split, &name_));
  }
  SourceTraits traits() const override { return {}; }

 private:
  RangeSource spec_;
  const std::string name_ = "range";
};

// ---- synthetic images ------------------------------------------------------

class SyntheticImagesCursor final : public IndexCursor {
 public:
  SyntheticImagesCursor(const Split& split, const std::vector<std::string>* pool,
                        uint32_t num_classes, const std::string* name)
      : IndexCursor(split), pool_(pool), num_classes_(num_classes), name_(name) {}
  Result<CursorStep> next(Record& record, BadRecord&) override {
    uint64_t i = 0;
    if (!advance(i)) return CursorStep::kEnd;
    record.clear_content();
    record.key = i;
    record.offset = i;
    record.file = name_;
    record.external = (*pool_)[i % pool_->size()];
    record.has_label = true;
    record.label = static_cast<int64_t>(i % num_classes_);
    return CursorStep::kRecord;
  }

 private:
  const std::vector<std::string>* pool_;
  uint32_t num_classes_;
  const std::string* name_;
};

class SyntheticImagesSourceImpl final : public Source {
 public:
  explicit SyntheticImagesSourceImpl(const SyntheticImagesSource& spec) : spec_(spec) {}
  Result<std::vector<Split>> splits() override {
    return global_splits(spec_.count, spec_.split_size, kSyntheticImagesWhat);
  }
  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    if (split.end > spec_.count || split.begin > split.end) {
      return invalid_argument(
          fmt::format("{} is outside the {} synthetic images", split.to_string(), spec_.count));
    }
    STOKER_RETURN_IF_ERROR(make_pool());
    return std::unique_ptr<RecordCursor>(
        std::make_unique<SyntheticImagesCursor>(split, &pool_, spec_.num_classes, &name_));
  }
  SourceTraits traits() const override { return {.has_labels = true}; }

 private:
  // The JPEGs are made on first use, once, whichever thread gets there first.
  Status make_pool() {
    std::lock_guard lock(mu_);
    if (!pool_.empty()) return Status::ok();
    std::vector<std::string> pool;
    for (uint32_t i = 0; i < spec_.distinct; ++i) {
      const auto pixels =
          synthesize_image(spec_.width, spec_.height, 3, mix_seed({spec_.data_seed, i}));
      STOKER_ASSIGN_OR_RETURN(std::string jpeg,
                              encode_jpeg(pixels.data(), spec_.width, spec_.height, 3,
                                          static_cast<int>(spec_.quality)));
      pool.push_back(std::move(jpeg));
    }
    pool_ = std::move(pool);
    return Status::ok();
  }
  SyntheticImagesSource spec_;
  std::mutex mu_;
  std::vector<std::string> pool_;  // immutable once filled
  const std::string name_ = "synthetic_images";
};

// ---- synthetic tokens ------------------------------------------------------

class SyntheticTokensCursor final : public IndexCursor {
 public:
  SyntheticTokensCursor(const Split& split, const SyntheticTokensSource* spec,
                        const std::string* name)
      : IndexCursor(split), spec_(spec), name_(name) {}
  Result<CursorStep> next(Record& record, BadRecord&) override {
    uint64_t i = 0;
    if (!advance(i)) return CursorStep::kEnd;
    record.clear_content();
    record.key = i;
    record.offset = i;
    record.file = name_;
    Rng rng(mix_seed({spec_->data_seed, static_cast<uint64_t>(RandomPurpose::kData), i}));
    const uint32_t length = draw_length(rng);
    record.tokens.resize(length);
    for (auto& t : record.tokens) t = static_cast<int32_t>(rng.below(spec_->vocab_size));
    if (spec_->num_classes > 0) {
      record.has_label = true;
      record.label = static_cast<int64_t>(rng.below(spec_->num_classes));
    }
    return CursorStep::kRecord;
  }

 private:
  uint32_t draw_length(Rng& rng) const {
    const SyntheticTokensSource& s = *spec_;
    switch (s.distribution) {
      case LengthDistribution::kFixed:
        return s.max_length;
      case LengthDistribution::kUniform:
        return s.min_length + static_cast<uint32_t>(rng.below(s.max_length - s.min_length + 1));
      case LengthDistribution::kLogNormal: {
        const double v = std::round(s.mean_length * std::exp(s.sigma * rng.normal()));
        const double clamped =
            std::clamp(v, static_cast<double>(s.min_length), static_cast<double>(s.max_length));
        return static_cast<uint32_t>(clamped);
      }
    }
    return s.max_length;
  }
  const SyntheticTokensSource* spec_;
  const std::string* name_;
};

class SyntheticTokensSourceImpl final : public Source {
 public:
  explicit SyntheticTokensSourceImpl(const SyntheticTokensSource& spec) : spec_(spec) {}
  Result<std::vector<Split>> splits() override {
    return global_splits(spec_.count, spec_.split_size, kSyntheticTokensWhat);
  }
  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    if (split.end > spec_.count || split.begin > split.end) {
      return invalid_argument(
          fmt::format("{} is outside the {} synthetic sequences", split.to_string(), spec_.count));
    }
    return std::unique_ptr<RecordCursor>(
        std::make_unique<SyntheticTokensCursor>(split, &spec_, &name_));
  }
  SourceTraits traits() const override {
    return {.has_labels = spec_.num_classes > 0, .max_tokens = spec_.max_length};
  }

 private:
  SyntheticTokensSource spec_;
  const std::string name_ = "synthetic_tokens";
};

}  // namespace

Result<std::unique_ptr<Source>> make_range_source(const RangeSource& spec) {
  STOKER_RETURN_IF_ERROR(check_split_count(spec.count, spec.split_size, kRangeWhat));
  return std::unique_ptr<Source>(std::make_unique<RangeSourceImpl>(spec));
}

Result<std::unique_ptr<Source>> make_synthetic_images_source(const SyntheticImagesSource& spec) {
  STOKER_RETURN_IF_ERROR(check_split_count(spec.count, spec.split_size, kSyntheticImagesWhat));
  return std::unique_ptr<Source>(std::make_unique<SyntheticImagesSourceImpl>(spec));
}

Result<std::unique_ptr<Source>> make_synthetic_tokens_source(const SyntheticTokensSource& spec) {
  STOKER_RETURN_IF_ERROR(check_split_count(spec.count, spec.split_size, kSyntheticTokensWhat));
  return std::unique_ptr<Source>(std::make_unique<SyntheticTokensSourceImpl>(spec));
}

}  // namespace stoker::pipeline
