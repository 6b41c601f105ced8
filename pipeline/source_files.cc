// Sources that read files: TFRecord shards, WebDataset tar shards, IDX files
// and folders of images. TFRecord and tar shards are indexed (record_index.h)
// so that a split can be any record range of a shard and a worker reads only
// its records; the index also makes a damaged tail one countable bad record.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <mutex>

#include "pipeline/example_codec.h"
#include "pipeline/file_util.h"
#include "pipeline/idx_file.h"
#include "pipeline/record_index.h"
#include "pipeline/source.h"
#include "pipeline/tar_shard.h"
#include "pipeline/tfrecord.h"

namespace stoker::pipeline {
namespace {

// Records of file shards are identified by (shard, index) for seeding.
uint64_t shard_record_key(uint32_t shard, uint64_t index) {
  return (uint64_t{shard} << 40) | index;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Visits the records of one split of one indexed shard.
class ShardCursorBase : public RecordCursor {
 protected:
  ShardCursorBase(const Split& split, std::shared_ptr<const ShardIndex> index,
                  const std::string* file)
      : split_(split), index_(std::move(index)), file_(file), total_(split.record_count()) {}

  // The next record index, or false at the end.
  bool advance(uint64_t& i) {
    if (n_ >= total_) return false;
    i = split_.record_at(n_++);
    return true;
  }
  // The damaged tail as a bad record.
  CursorStep tail(BadRecord& bad) const {
    bad.reason = *index_->tail_reason;
    bad.file = *file_;
    bad.offset = index_->tail_offset;
    bad.detail = index_->tail_detail;
    return CursorStep::kBadRecord;
  }
  CursorStep problem(BadRecord& bad, RecordProblem p, uint64_t offset) const {
    bad.reason = p.reason;
    bad.file = *file_;
    bad.offset = offset;
    bad.detail = std::move(p.detail);
    return CursorStep::kBadRecord;
  }

  Split split_;
  std::shared_ptr<const ShardIndex> index_;
  const std::string* file_;

 private:
  uint64_t total_;
  uint64_t n_ = 0;
};

Status check_split_in_shard(const Split& split, const ShardIndex& index, const std::string& file) {
  if (split.begin > split.end || split.end > index.records()) {
    return invalid_argument(fmt::format("{} is outside {}, which has {} records", split.to_string(),
                                        file, index.records()));
  }
  return Status::ok();
}

// Splits of indexed shards, computed once.
class IndexedSplits {
 public:
  Result<std::vector<Split>> get(IndexCache& cache, uint64_t split_size) {
    std::lock_guard lock(mu_);
    if (!splits_) {
      std::vector<Split> out;
      for (uint32_t shard = 0; shard < cache.files().size(); ++shard) {
        STOKER_ASSIGN_OR_RETURN(auto index, cache.get(shard));
        STOKER_RETURN_IF_ERROR(
            append_splits(shard, index->records(), split_size, cache.files()[shard], out));
      }
      splits_ = std::move(out);
    }
    return *splits_;
  }

 private:
  std::mutex mu_;
  std::optional<std::vector<Split>> splits_;
};

Result<std::vector<std::string>> shard_files(const std::vector<std::string>& patterns,
                                             const SourceContext& context) {
  STOKER_ASSIGN_OR_RETURN(auto files, resolve_files(patterns, context.base_dir));
  if (files.size() > (size_t{1} << 24)) {
    return invalid_argument(
        fmt::format("{} files: at most 2^24 shards are supported", files.size()));
  }
  return files;
}

// ---- TFRecord --------------------------------------------------------------

class TFRecordCursor final : public ShardCursorBase {
 public:
  TFRecordCursor(const Split& split, std::shared_ptr<const ShardIndex> index,
                 const std::string* file, const TFRecordSource* spec, const ExampleKeys* keys)
      : ShardCursorBase(split, std::move(index), file), spec_(spec), keys_(keys) {}

  Result<CursorStep> next(Record& record, BadRecord& bad) override {
    uint64_t i = 0;
    if (!advance(i)) return CursorStep::kEnd;
    if (i >= index_->count()) return tail(bad);
    if (!reader_) {
      STOKER_ASSIGN_OR_RETURN(FileReader r, FileReader::open(*file_));
      reader_.emplace(std::move(r));
    }
    const uint64_t offset = index_->offsets[i];
    const uint64_t frame = index_->offsets[i + 1] - offset;
    STOKER_ASSIGN_OR_RETURN(auto bytes, reader_->read(offset, frame));
    std::string_view data;
    if (auto p = check_tfrecord_frame(bytes, frame - kTFRecordFramingBytes, data)) {
      return problem(bad, std::move(*p), offset);
    }
    record.clear_content();
    record.key = shard_record_key(split_.shard, i);
    record.file = file_;
    record.offset = offset;
    if (auto p = parse_example(data, spec_->content, *keys_, record)) {
      return problem(bad, std::move(*p), offset);
    }
    return CursorStep::kRecord;
  }

 private:
  const TFRecordSource* spec_;
  const ExampleKeys* keys_;
  std::optional<FileReader> reader_;
};

class TFRecordSourceImpl final : public Source {
 public:
  TFRecordSourceImpl(const TFRecordSource& spec, std::vector<std::string> files,
                     const SourceContext& context)
      : spec_(spec),
        keys_{spec.image_feature, spec.label_feature, spec.tokens_feature},
        cache_(IndexKind::kTFRecord, {context.index_next_to_shard, context.index_dir},
               std::move(files), scan_tfrecord) {}

  Result<std::vector<Split>> splits() override { return splits_.get(cache_, spec_.split_size); }

  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    STOKER_ASSIGN_OR_RETURN(auto index, cache_.get(split.shard));
    const std::string* file = &cache_.files()[split.shard];
    STOKER_RETURN_IF_ERROR(check_split_in_shard(split, *index, *file));
    return std::unique_ptr<RecordCursor>(
        std::make_unique<TFRecordCursor>(split, std::move(index), file, &spec_, &keys_));
  }

  SourceTraits traits() const override { return {.has_labels = !spec_.label_feature.empty()}; }

 private:
  TFRecordSource spec_;
  ExampleKeys keys_;
  IndexCache cache_;
  IndexedSplits splits_;
};

// ---- WebDataset ------------------------------------------------------------

// One scan of the member headers: where each sample starts.
Result<ShardIndex> scan_tar(const std::string& path) {
  // Small reads: between two headers libarchive skips the data by seeking.
  STOKER_ASSIGN_OR_RETURN(auto reader, TarReader::open(path, 0, size_t{8} << 10));
  STOKER_ASSIGN_OR_RETURN(FileStat st, stat_file(path));
  ShardIndex index;
  std::string key;
  bool in_sample = false;
  TarMember member;
  RecordProblem problem;
  for (;;) {
    const auto step = reader->next(member, problem);
    if (step == TarReader::Step::kEnd) break;
    if (step == TarReader::Step::kProblem) {
      // The sample being read may be incomplete: it becomes the bad tail.
      index.tail_reason = problem.reason;
      index.tail_detail = std::move(problem.detail);
      if (in_sample) {
        index.tail_offset = index.offsets.back();
        index.offsets.pop_back();
      } else {
        index.tail_offset = 0;
      }
      index.offsets.push_back(index.tail_offset);
      return index;
    }
    if (!member.regular) continue;
    const auto [member_key, ext] = split_sample_name(member.path);
    if (!in_sample || member_key != key) {
      key = member_key;
      in_sample = true;
      index.offsets.push_back(member.header_offset);
    }
  }
  // The last sample runs to the end of the file (its members, up to the
  // end-of-archive blocks, share its key).
  index.offsets.push_back(st.size);
  return index;
}

class WebDatasetCursor final : public ShardCursorBase {
 public:
  WebDatasetCursor(const Split& split, std::shared_ptr<const ShardIndex> index,
                   const std::string* file, const WebDatasetSource* spec)
      : ShardCursorBase(split, std::move(index), file), spec_(spec) {}

  Result<CursorStep> next(Record& record, BadRecord& bad) override {
    uint64_t i = 0;
    if (!advance(i)) return CursorStep::kEnd;
    if (i >= index_->count()) return tail(bad);
    const uint64_t start = index_->offsets[i];
    const uint64_t end = index_->offsets[i + 1];
    RecordProblem p;
    // Continue from the previous sample when this one follows it; else seek.
    if (!reader_ || !pending_ || pending_->header_offset != start) {
      STOKER_ASSIGN_OR_RETURN(reader_, TarReader::open(*file_, start));
      pending_.reset();
    }
    TarMember member;
    if (pending_) {
      member = std::move(*pending_);
      pending_.reset();
    } else {
      const auto step = reader_->next(member, p);
      if (step != TarReader::Step::kMember) {
        reader_.reset();
        if (step == TarReader::Step::kEnd) {
          p = {BadRecordReason::kTruncated, "the archive ends where a sample should start"};
        }
        return problem(bad, std::move(p), start);
      }
    }
    record.clear_content();
    record.key = shard_record_key(split_.shard, i);
    record.file = file_;
    record.offset = start;
    const std::string key(split_sample_name(member.path).first);
    size_t best_image = spec_->image_extensions.size();  // priority of the image kept
    std::string label_text;
    bool has_label_member = false;
    for (;;) {
      if (member.regular) {
        const std::string ext = lower(split_sample_name(member.path).second);
        const auto it =
            std::find(spec_->image_extensions.begin(), spec_->image_extensions.end(), ext);
        const auto priority = static_cast<size_t>(it - spec_->image_extensions.begin());
        if (priority < best_image) {
          if (reader_->read_data(record.data, p) != TarReader::Step::kMember) {
            reader_.reset();
            return problem(bad, std::move(p), start);
          }
          best_image = priority;
        } else if (!spec_->label_extension.empty() && ext == spec_->label_extension) {
          if (reader_->read_data(label_text, p) != TarReader::Step::kMember) {
            reader_.reset();
            return problem(bad, std::move(p), start);
          }
          has_label_member = true;
        }
      }
      TarMember following;
      const auto step = reader_->next(following, p);
      if (step == TarReader::Step::kEnd) {
        reader_.reset();
        break;
      }
      if (step == TarReader::Step::kProblem) {
        reader_.reset();
        return problem(bad, std::move(p), start);
      }
      if (following.header_offset >= end ||
          (following.regular && split_sample_name(following.path).first != key)) {
        pending_ = std::move(following);
        break;
      }
      member = std::move(following);
    }
    if (best_image == spec_->image_extensions.size()) {
      return problem(bad,
                     {BadRecordReason::kMalformedRecord,
                      fmt::format("sample '{}' has no member with an image extension", key)},
                     start);
    }
    if (!spec_->label_extension.empty()) {
      if (!has_label_member) {
        return problem(bad,
                       {BadRecordReason::kMalformedRecord,
                        fmt::format("sample '{}' has no .{} member", key, spec_->label_extension)},
                       start);
      }
      const auto first = label_text.find_first_not_of(" \t\r\n");
      const auto last = label_text.find_last_not_of(" \t\r\n");
      int64_t label = 0;
      const char* b = label_text.data() + (first == std::string::npos ? 0 : first);
      const char* e = label_text.data() + (last == std::string::npos ? 0 : last + 1);
      const auto [ptr, ec] = std::from_chars(b, e, label);
      if (first == std::string::npos || ec != std::errc() || ptr != e) {
        return problem(bad,
                       {BadRecordReason::kMalformedRecord,
                        fmt::format("sample '{}': label '{}' is not an integer", key,
                                    label_text.substr(0, 32))},
                       start);
      }
      record.has_label = true;
      record.label = label;
    }
    return CursorStep::kRecord;
  }

 private:
  const WebDatasetSource* spec_;
  std::unique_ptr<TarReader> reader_;
  std::optional<TarMember> pending_;  // read ahead: the first member of the next sample
};

class WebDatasetSourceImpl final : public Source {
 public:
  WebDatasetSourceImpl(const WebDatasetSource& spec, std::vector<std::string> files,
                       const SourceContext& context)
      : spec_(spec),
        cache_(IndexKind::kTar, {context.index_next_to_shard, context.index_dir}, std::move(files),
               scan_tar) {
    spec_.label_extension = lower(spec_.label_extension);
  }

  Result<std::vector<Split>> splits() override { return splits_.get(cache_, spec_.split_size); }

  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    STOKER_ASSIGN_OR_RETURN(auto index, cache_.get(split.shard));
    const std::string* file = &cache_.files()[split.shard];
    STOKER_RETURN_IF_ERROR(check_split_in_shard(split, *index, *file));
    return std::unique_ptr<RecordCursor>(
        std::make_unique<WebDatasetCursor>(split, std::move(index), file, &spec_));
  }

  SourceTraits traits() const override { return {.has_labels = !spec_.label_extension.empty()}; }

 private:
  WebDatasetSource spec_;
  IndexCache cache_;
  IndexedSplits splits_;
};

// ---- IDX -------------------------------------------------------------------

struct IdxData {
  IdxFile images;
  IdxFile labels;
};

class IdxCursor final : public RecordCursor {
 public:
  IdxCursor(const Split& split, const IdxData* data, const std::string* images_path,
            const std::string* labels_path)
      : split_(split),
        data_(data),
        images_path_(images_path),
        labels_path_(labels_path),
        total_(split.record_count()) {}

  Result<CursorStep> next(Record& record, BadRecord& bad) override {
    if (n_ >= total_) return CursorStep::kEnd;
    const uint64_t i = split_.record_at(n_++);
    const IdxHeader& h = data_->images.header;
    const uint64_t item = h.item_bytes();
    const uint64_t offset = h.header_bytes + i * item;
    if ((i + 1) * item > data_->images.data.size()) {
      return damaged(bad, data_->images, *images_path_, offset);
    }
    record.clear_content();
    record.key = i;
    record.file = images_path_;
    record.offset = offset;
    record.external = std::string_view(data_->images.data).substr(i * item, item);
    record.raw_height = h.dims[1];
    record.raw_width = h.dims[2];
    record.raw_channels = h.dims.size() == 4 ? h.dims[3] : 1;
    if (labels_path_ != nullptr) {
      if (i >= data_->labels.data.size()) {
        return damaged(bad, data_->labels, *labels_path_, data_->labels.header.header_bytes + i);
      }
      record.has_label = true;
      record.label = static_cast<uint8_t>(data_->labels.data[i]);
    }
    return CursorStep::kRecord;
  }

 private:
  static CursorStep damaged(BadRecord& bad, const IdxFile& f, const std::string& path,
                            uint64_t offset) {
    bad.reason = f.damage ? f.damage->reason : BadRecordReason::kTruncated;
    bad.file = path;
    bad.offset = offset;
    bad.detail =
        fmt::format("byte offset in the decompressed stream; {}",
                    f.damage ? f.damage->detail : "the file is shorter than its header says");
    return CursorStep::kBadRecord;
  }
  Split split_;
  const IdxData* data_;
  const std::string* images_path_;
  const std::string* labels_path_;
  uint64_t total_;
  uint64_t n_ = 0;
};

class IdxSourceImpl final : public Source {
 public:
  IdxSourceImpl(const IdxSource& spec, std::string images, std::string labels, IdxHeader header)
      : spec_(spec),
        images_path_(std::move(images)),
        labels_path_(std::move(labels)),
        header_(std::move(header)) {}

  Result<std::vector<Split>> splits() override {
    return global_splits(header_.dims[0], spec_.split_size, images_path_);
  }

  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    if (split.begin > split.end || split.end > header_.dims[0]) {
      return invalid_argument(fmt::format("{} is outside {}, which has {} images",
                                          split.to_string(), images_path_, header_.dims[0]));
    }
    STOKER_ASSIGN_OR_RETURN(const IdxData* data, load());
    return std::unique_ptr<RecordCursor>(std::make_unique<IdxCursor>(
        split, data, &images_path_, labels_path_.empty() ? nullptr : &labels_path_));
  }

  SourceTraits traits() const override {
    return {.has_labels = !labels_path_.empty(),
            .native_image_size = ImageSize{header_.dims[1], header_.dims[2]}};
  }

 private:
  // The files are decompressed once, on first use (a gzip stream cannot be
  // entered in the middle); Fashion-MNIST's training images are 47 MB.
  Result<const IdxData*> load() {
    std::lock_guard lock(mu_);
    if (!data_) {
      auto data = std::make_unique<IdxData>();
      STOKER_ASSIGN_OR_RETURN(data->images, read_idx(images_path_));
      if (!labels_path_.empty()) {
        STOKER_ASSIGN_OR_RETURN(data->labels, read_idx(labels_path_));
      }
      data_ = std::move(data);
    }
    return data_.get();
  }
  IdxSource spec_;
  std::string images_path_;
  std::string labels_path_;
  IdxHeader header_;
  std::mutex mu_;
  std::unique_ptr<IdxData> data_;
};

// ---- image folder ----------------------------------------------------------

class ImageFolderCursor final : public RecordCursor {
 public:
  ImageFolderCursor(const Split& split, const std::vector<std::string>* paths,
                    const std::vector<uint32_t>* labels)
      : split_(split), paths_(paths), labels_(labels), total_(split.record_count()) {}

  Result<CursorStep> next(Record& record, BadRecord&) override {
    if (n_ >= total_) return CursorStep::kEnd;
    const uint64_t i = split_.record_at(n_++);
    record.clear_content();
    STOKER_ASSIGN_OR_RETURN(record.data, read_whole_file((*paths_)[i], kMaxRecordBytes));
    record.key = i;
    record.file = &(*paths_)[i];
    record.offset = 0;
    record.has_label = true;
    record.label = (*labels_)[i];
    return CursorStep::kRecord;
  }

 private:
  Split split_;
  const std::vector<std::string>* paths_;
  const std::vector<uint32_t>* labels_;
  uint64_t total_;
  uint64_t n_ = 0;
};

class ImageFolderSourceImpl final : public Source {
 public:
  ImageFolderSourceImpl(const ImageFolderSource& spec, std::string root,
                        std::vector<std::string> paths, std::vector<uint32_t> labels)
      : spec_(spec), root_(std::move(root)), paths_(std::move(paths)), labels_(std::move(labels)) {}

  Result<std::vector<Split>> splits() override {
    return global_splits(paths_.size(), spec_.split_size, root_);
  }
  Result<std::unique_ptr<RecordCursor>> open(const Split& split) override {
    if (split.begin > split.end || split.end > paths_.size()) {
      return invalid_argument(
          fmt::format("{} is outside the folder's {} images", split.to_string(), paths_.size()));
    }
    return std::unique_ptr<RecordCursor>(
        std::make_unique<ImageFolderCursor>(split, &paths_, &labels_));
  }
  SourceTraits traits() const override { return {.has_labels = true}; }

 private:
  ImageFolderSource spec_;
  std::string root_;
  std::vector<std::string> paths_;
  std::vector<uint32_t> labels_;
};

}  // namespace

Result<std::unique_ptr<Source>> make_tfrecord_source(const TFRecordSource& spec,
                                                     const SourceContext& context) {
  STOKER_ASSIGN_OR_RETURN(auto files, shard_files(spec.files, context));
  return std::unique_ptr<Source>(
      std::make_unique<TFRecordSourceImpl>(spec, std::move(files), context));
}

Result<std::unique_ptr<Source>> make_webdataset_source(const WebDatasetSource& spec,
                                                       const SourceContext& context) {
  STOKER_ASSIGN_OR_RETURN(auto files, shard_files(spec.files, context));
  return std::unique_ptr<Source>(
      std::make_unique<WebDatasetSourceImpl>(spec, std::move(files), context));
}

Result<std::unique_ptr<Source>> make_idx_source(const IdxSource& spec,
                                                const SourceContext& context) {
  const std::string images = resolve_path(spec.images, context.base_dir);
  const std::string labels = spec.labels.empty() ? "" : resolve_path(spec.labels, context.base_dir);
  STOKER_ASSIGN_OR_RETURN(IdxHeader h, read_idx_header(images));
  const bool gray = h.dims.size() == 3;
  const bool rgb = h.dims.size() == 4 && h.dims[3] == 3;
  if (!gray && !rgb) {
    return invalid_argument(fmt::format(
        "{}: IDX images must be [count, rows, cols] or [count, rows, cols, 3]", images));
  }
  if (!labels.empty()) {
    STOKER_ASSIGN_OR_RETURN(IdxHeader l, read_idx_header(labels));
    if (l.dims.size() != 1 || l.dims[0] != h.dims[0]) {
      return invalid_argument(
          fmt::format("{}: expected {} labels in one dimension", labels, h.dims[0]));
    }
  }
  STOKER_RETURN_IF_ERROR(check_split_count(h.dims[0], spec.split_size, images));
  return std::unique_ptr<Source>(
      std::make_unique<IdxSourceImpl>(spec, images, labels, std::move(h)));
}

Result<std::unique_ptr<Source>> make_image_folder_source(const ImageFolderSource& spec,
                                                         const SourceContext& context) {
  namespace fs = std::filesystem;
  const std::string root = resolve_path(spec.root, context.base_dir);
  std::error_code ec;
  std::vector<fs::path> classes;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec)) classes.push_back(it->path());
  }
  if (ec) return not_found(fmt::format("cannot list {}: {}", root, ec.message()));
  std::sort(classes.begin(), classes.end());
  std::vector<std::string> paths;
  std::vector<uint32_t> labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> files;
    for (fs::directory_iterator it(classes[c], ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::string ext = lower(it->path().extension().string());
      if (!ext.empty()) ext.erase(0, 1);
      if (std::find(spec.extensions.begin(), spec.extensions.end(), ext) != spec.extensions.end()) {
        files.push_back(it->path().string());
      }
    }
    if (ec) return io_error(fmt::format("cannot list {}: {}", classes[c].string(), ec.message()));
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      paths.push_back(std::move(f));
      labels.push_back(static_cast<uint32_t>(c));
    }
  }
  if (paths.empty()) {
    return not_found(fmt::format("no images under {} (expected {}/<class>/<image>)", root, root));
  }
  STOKER_RETURN_IF_ERROR(check_split_count(paths.size(), spec.split_size, root));
  return std::unique_ptr<Source>(
      std::make_unique<ImageFolderSourceImpl>(spec, root, std::move(paths), std::move(labels)));
}

}  // namespace stoker::pipeline
