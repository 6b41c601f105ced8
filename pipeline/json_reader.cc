// JsonObjectReader: typed field access with path-naming errors.
#include "pipeline/json_reader.h"

#include <fmt/format.h>

#include <cmath>

namespace stoker::pipeline {
namespace {

std::string describe_uint_range(uint64_t min, uint64_t max) {
  if (max == std::numeric_limits<uint64_t>::max()) {
    if (min == 0) return "a non-negative integer";
    if (min == 1) return "a positive integer";
    return fmt::format("an integer >= {}", min);
  }
  return fmt::format("an integer in [{}, {}]", min, max);
}

Status expected(std::string_view path, std::string_view what, const nlohmann::json& got) {
  return invalid_argument(fmt::format("{}: expected {}, got {}", path, what, json_excerpt(got)));
}

Status missing(std::string_view path, std::string_view what) {
  return invalid_argument(fmt::format("{}: missing (expected {})", path, what));
}

}  // namespace

std::string json_path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return fmt::format("{}.{}", parent, key);
}

std::string json_path(std::string_view parent, size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

std::string json_excerpt(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr size_t kMax = 60;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

Result<uint64_t> json_to_uint(const nlohmann::json& value, std::string_view path, uint64_t min,
                              uint64_t max) {
  const std::string what = describe_uint_range(min, max);
  uint64_t v = 0;
  if (value.is_number_unsigned()) {
    v = value.get<uint64_t>();
  } else if (value.is_number_integer()) {
    return expected(path, what, value);  // negative
  } else if (value.is_number_float()) {
    // 224.0 is an integer written as a float; 224.5 is not.
    const double d = value.get<double>();
    if (!(d >= 0) || d != std::floor(d) || d >= 18446744073709551616.0) {
      return expected(path, what, value);
    }
    v = static_cast<uint64_t>(d);
  } else {
    return expected(path, what, value);
  }
  if (v < min || v > max) return expected(path, what, value);
  return v;
}

Result<JsonObjectReader> JsonObjectReader::open(const nlohmann::json& value, std::string path) {
  if (!value.is_object()) {
    return expected(path.empty() ? "(top level)" : path, "an object", value);
  }
  return JsonObjectReader(&value, std::move(path));
}

const nlohmann::json* JsonObjectReader::get_raw(std::string_view key) {
  known_.emplace(key);
  auto it = object_->find(key);
  return it == object_->end() ? nullptr : &*it;
}

Result<uint64_t> JsonObjectReader::get_uint(std::string_view key, std::optional<uint64_t> fallback,
                                            uint64_t min, uint64_t max) {
  const nlohmann::json* v = get_raw(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return missing(path_of(key), describe_uint_range(min, max));
  }
  return json_to_uint(*v, path_of(key), min, max);
}

Result<double> JsonObjectReader::get_number(std::string_view key, std::optional<double> fallback,
                                            double min, double max) {
  const std::string what = fmt::format("a number in [{}, {}]", min, max);
  const nlohmann::json* v = get_raw(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return missing(path_of(key), what);
  }
  if (!v->is_number()) return expected(path_of(key), what, *v);
  const double d = v->get<double>();
  if (!(d >= min && d <= max)) return expected(path_of(key), what, *v);
  return d;
}

Result<bool> JsonObjectReader::get_bool(std::string_view key, std::optional<bool> fallback) {
  const nlohmann::json* v = get_raw(key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    return missing(path_of(key), "true or false");
  }
  if (!v->is_boolean()) return expected(path_of(key), "true or false", *v);
  return v->get<bool>();
}

Result<std::string> JsonObjectReader::get_string(std::string_view key,
                                                 std::optional<std::string> fallback) {
  const nlohmann::json* v = get_raw(key);
  if (v == nullptr) {
    if (fallback) return std::move(*fallback);
    return missing(path_of(key), "a string");
  }
  if (!v->is_string()) return expected(path_of(key), "a string", *v);
  return v->get<std::string>();
}

Result<std::vector<std::string>> JsonObjectReader::get_strings(
    std::string_view key, std::optional<std::vector<std::string>> fallback) {
  constexpr std::string_view kWhat = "a string or a non-empty array of strings";
  const nlohmann::json* v = get_raw(key);
  if (v == nullptr) {
    if (fallback) return std::move(*fallback);
    return missing(path_of(key), kWhat);
  }
  if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
  if (!v->is_array() || v->empty()) return expected(path_of(key), kWhat, *v);
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& item = (*v)[i];
    if (!item.is_string()) return expected(json_path(path_of(key), i), "a string", item);
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<std::vector<uint32_t>> JsonObjectReader::get_uint32s(std::string_view key, uint32_t min) {
  const nlohmann::json* v = get_raw(key);
  const std::string what = fmt::format("an array of integers >= {}", min);
  if (v == nullptr) return missing(path_of(key), what);
  if (!v->is_array()) return expected(path_of(key), what, *v);
  std::vector<uint32_t> out;
  for (size_t i = 0; i < v->size(); ++i) {
    STOKER_ASSIGN_OR_RETURN(uint64_t item, json_to_uint((*v)[i], json_path(path_of(key), i), min,
                                                        std::numeric_limits<uint32_t>::max()));
    out.push_back(static_cast<uint32_t>(item));
  }
  return out;
}

Status JsonObjectReader::check_no_unknown_keys() const {
  for (const auto& [key, value] : object_->items()) {
    if (known_.count(key) == 0) {
      std::string names;
      for (const auto& k : known_) names += (names.empty() ? "" : ", ") + k;
      return invalid_argument(
          fmt::format("{}: unknown field (expected one of: {})", path_of(key), names));
    }
  }
  return Status::ok();
}

}  // namespace stoker::pipeline
