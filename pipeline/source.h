// Sources: where records come from. A Source enumerates its splits and opens
// a cursor over the records of one split. Cursors only frame and extract
// (bytes, label, tokens); decoding, checks against the spec and the
// bad-record policy happen in the pipeline, in one place for every source.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/bad_records.h"
#include "pipeline/pipeline_spec.h"
#include "pipeline/split.h"
#include "stoker/result.h"

namespace stoker::pipeline {

// One record, as a cursor produced it. Cursors reuse a Record's buffers, and
// shuffle buffers move Records around, so bytes are owned (`data`) unless the
// source keeps them alive for its whole life (`external`).
struct Record {
  uint64_t key = 0;                   // identity within the pipeline: seeds its random choices
  const std::string* file = nullptr;  // for bad-record reports (owned by the source)
  uint64_t offset = 0;                // byte offset in `file` (the record index for generated data)
  std::string data;
  std::string_view external;
  std::string_view bytes() const { return external.data() != nullptr ? external : data; }
  // Raw pixels (IDX): the dimensions of `bytes`; raw_width == 0: `bytes`
  // holds an encoded image (JPEG or PNG).
  uint32_t raw_width = 0, raw_height = 0, raw_channels = 0;
  bool has_label = false;
  int64_t label = 0;
  std::vector<int32_t> tokens;

  void clear_content() {
    data.clear();
    external = {};
    raw_width = raw_height = raw_channels = 0;
    has_label = false;
    label = 0;
    tokens.clear();
  }
};

enum class CursorStep : uint8_t { kRecord, kBadRecord, kEnd };

class RecordCursor {
 public:
  virtual ~RecordCursor() = default;
  // The next record of the split into `record`, or why the next one cannot
  // be read into `bad`, or the end. A failed Result is an error that ends
  // the split whatever the policy (a shard that cannot be opened, an I/O error).
  virtual Result<CursorStep> next(Record& record, BadRecord& bad) = 0;
};

// What run_split needs to know about a source besides its records.
struct SourceTraits {
  bool has_labels = false;
  // IDX: the size of every image, known from the file header.
  std::optional<ImageSize> native_image_size;
  // synthetic tokens: no sequence is longer.
  uint32_t max_tokens = 0;
};

struct SourceContext {
  std::string base_dir;
  bool index_next_to_shard = true;
  std::string index_dir;
};

class Source {
 public:
  virtual ~Source() = default;
  // Deterministic. Thread-safe; cheap after the first call.
  virtual Result<std::vector<Split>> splits() = 0;
  // Thread-safe.
  virtual Result<std::unique_ptr<RecordCursor>> open(const Split& split) = 0;
  virtual SourceTraits traits() const = 0;
};

// Builds the source of `spec`, checking what can be checked cheaply (files
// exist, IDX headers).
Result<std::unique_ptr<Source>> make_source(const PipelineSpec& spec, const SourceContext& context);

// The sources, one constructor each (source_memory.cc, source_files.cc).
Result<std::unique_ptr<Source>> make_range_source(const RangeSource& spec);
Result<std::unique_ptr<Source>> make_synthetic_images_source(const SyntheticImagesSource& spec);
Result<std::unique_ptr<Source>> make_synthetic_tokens_source(const SyntheticTokensSource& spec);
Result<std::unique_ptr<Source>> make_tfrecord_source(const TFRecordSource& spec,
                                                     const SourceContext& context);
Result<std::unique_ptr<Source>> make_webdataset_source(const WebDatasetSource& spec,
                                                       const SourceContext& context);
Result<std::unique_ptr<Source>> make_idx_source(const IdxSource& spec,
                                                const SourceContext& context);
Result<std::unique_ptr<Source>> make_image_folder_source(const ImageFolderSource& spec,
                                                         const SourceContext& context);

// Reorders the records of `inner` through a shuffle buffer of `buffer_size`
// records (tf.data's algorithm: fill, then emit a random one and refill its
// place). Bad records pass through at once.
std::unique_ptr<RecordCursor> make_shuffle_cursor(std::unique_ptr<RecordCursor> inner,
                                                  uint32_t buffer_size, uint64_t seed);

}  // namespace stoker::pipeline
