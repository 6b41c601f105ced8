// Example records through the generated protobuf-lite classes.
#include "pipeline/example_codec.h"

#include <fmt/format.h>

#include "pipeline/tf_example.pb.h"

namespace stoker::pipeline {
namespace {

namespace tf = stoker::pipeline::tf;

}  // namespace

std::string make_image_example(std::string_view image, std::optional<int64_t> label,
                               const ExampleKeys& keys) {
  tf::Example example;
  auto& features = *example.mutable_features()->mutable_feature();
  features[keys.image].mutable_bytes_list()->add_value(std::string(image));
  if (label && !keys.label.empty()) features[keys.label].mutable_int64_list()->add_value(*label);
  return example.SerializeAsString();
}

std::string make_tokens_example(std::span<const int32_t> tokens, std::optional<int64_t> label,
                                const ExampleKeys& keys) {
  tf::Example example;
  auto& features = *example.mutable_features()->mutable_feature();
  auto* list = features[keys.tokens].mutable_int64_list();
  list->mutable_value()->Reserve(static_cast<int>(tokens.size()));
  for (int32_t t : tokens) list->add_value(t);
  if (label && !keys.label.empty()) features[keys.label].mutable_int64_list()->add_value(*label);
  return example.SerializeAsString();
}

std::optional<RecordProblem> parse_example(std::string_view bytes, RecordContent content,
                                           const ExampleKeys& keys, Record& record) {
  // One parser per thread: its internal buffers are reused record to record.
  thread_local tf::Example example;
  example.Clear();
  if (!example.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return RecordProblem{BadRecordReason::kMalformedRecord, "not a tf.train.Example"};
  }
  auto& features = *example.mutable_features()->mutable_feature();
  const auto missing = [](const std::string& key, std::string_view kind) {
    return RecordProblem{BadRecordReason::kMalformedRecord,
                         fmt::format("no {} feature '{}'", kind, key)};
  };
  if (content == RecordContent::kImage) {
    auto it = features.find(keys.image);
    if (it == features.end() || !it->second.has_bytes_list() ||
        it->second.bytes_list().value_size() < 1) {
      return missing(keys.image, "bytes");
    }
    // Take the bytes without copying them again.
    it->second.mutable_bytes_list()->mutable_value(0)->swap(record.data);
  } else {
    auto it = features.find(keys.tokens);
    if (it == features.end() || !it->second.has_int64_list()) return missing(keys.tokens, "int64");
    const auto& values = it->second.int64_list().value();
    record.tokens.resize(static_cast<size_t>(values.size()));
    for (int i = 0; i < values.size(); ++i) {
      const int64_t v = values[i];
      if (v < INT32_MIN || v > INT32_MAX) {
        return RecordProblem{BadRecordReason::kTokenOutOfRange,
                             fmt::format("token {} at position {} does not fit int32", v, i)};
      }
      record.tokens[static_cast<size_t>(i)] = static_cast<int32_t>(v);
    }
  }
  if (!keys.label.empty()) {
    auto it = features.find(keys.label);
    if (it == features.end() || !it->second.has_int64_list() ||
        it->second.int64_list().value_size() < 1) {
      return missing(keys.label, "int64");
    }
    record.has_label = true;
    record.label = it->second.int64_list().value(0);
  }
  return std::nullopt;
}

}  // namespace stoker::pipeline
