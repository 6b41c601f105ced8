// Reading a JSON object field by field, with errors that name the path of the
// bad field and what was expected (`ops[2].size: expected a positive integer,
// got "x"`), and that refuse fields nobody asked for: a misspelt optional
// field must not silently fall back to its default.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "stoker/result.h"

namespace stoker::pipeline {

// "source" + "count" -> "source.count"; "" + "seed" -> "seed".
std::string json_path(std::string_view parent, std::string_view key);
// "ops" + 2 -> "ops[2]".
std::string json_path(std::string_view parent, size_t index);
// A short rendering of a JSON value for error messages.
std::string json_excerpt(const nlohmann::json& value);

class JsonObjectReader {
 public:
  // Fails unless `value` is an object. `path` names it ("" for the root).
  static Result<JsonObjectReader> open(const nlohmann::json& value, std::string path);

  const std::string& path() const { return path_; }
  std::string path_of(std::string_view key) const { return json_path(path_, key); }
  bool has(std::string_view key) const { return object_->contains(key); }

  // Each getter marks `key` as known. Without a fallback the field is required.
  Result<uint64_t> get_uint(std::string_view key, std::optional<uint64_t> fallback,
                            uint64_t min = 0, uint64_t max = std::numeric_limits<uint64_t>::max());
  Result<double> get_number(std::string_view key, std::optional<double> fallback, double min,
                            double max);
  Result<bool> get_bool(std::string_view key, std::optional<bool> fallback);
  Result<std::string> get_string(std::string_view key, std::optional<std::string> fallback);
  // One string or a non-empty array of strings.
  Result<std::vector<std::string>> get_strings(std::string_view key,
                                               std::optional<std::vector<std::string>> fallback);
  Result<std::vector<uint32_t>> get_uint32s(std::string_view key, uint32_t min);
  // The raw value, or nullptr when absent.
  const nlohmann::json* get_raw(std::string_view key);

  // Fails on the first field no getter asked for.
  Status check_no_unknown_keys() const;

 private:
  JsonObjectReader(const nlohmann::json* object, std::string path)
      : object_(object), path_(std::move(path)) {}
  const nlohmann::json* object_;
  std::string path_;
  std::set<std::string, std::less<>> known_;
};

// Reads `value` (at `path`) as an integer in [min, max].
Result<uint64_t> json_to_uint(const nlohmann::json& value, std::string_view path, uint64_t min,
                              uint64_t max);

}  // namespace stoker::pipeline
