// tf.train.Example records for images (an encoded image and an int64 label)
// and text (an int64 list of token ids and an optional label): building them
// (stoker-mkdata, tests) and reading them into a Record.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/bad_records.h"
#include "pipeline/source.h"

namespace stoker::pipeline {

struct ExampleKeys {
  std::string image = "image";
  std::string label = "label";  // empty: no label
  std::string tokens = "tokens";
};

std::string make_image_example(std::string_view image, std::optional<int64_t> label,
                               const ExampleKeys& keys = {});
std::string make_tokens_example(std::span<const int32_t> tokens, std::optional<int64_t> label,
                                const ExampleKeys& keys = {});

// Fills record.data (image) or record.tokens, and the label when keys.label
// is set. A problem (malformed_record, token_out_of_range) when the record is
// not an Example or lacks what the keys name.
std::optional<RecordProblem> parse_example(std::string_view bytes, RecordContent content,
                                           const ExampleKeys& keys, Record& record);

}  // namespace stoker::pipeline
