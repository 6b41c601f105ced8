// parse_byte_size.
#include "common/byte_size.h"

#include <fmt/format.h>

#include <charconv>

namespace stoker {

Result<size_t> parse_byte_size(std::string_view text) {
  size_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) {
    return invalid_argument(fmt::format("'{}' is not a size", text));
  }
  std::string_view suffix(end, static_cast<size_t>(text.data() + text.size() - end));
  unsigned shift = 0;
  if (suffix == "K" || suffix == "k") {
    shift = 10;
  } else if (suffix == "M" || suffix == "m") {
    shift = 20;
  } else if (suffix == "G" || suffix == "g") {
    shift = 30;
  } else if (!suffix.empty()) {
    return invalid_argument(fmt::format("'{}': unknown size suffix '{}'", text, suffix));
  }
  if (shift != 0 && value > (SIZE_MAX >> shift)) {
    return invalid_argument(fmt::format("'{}' is too large", text));
  }
  return value << shift;
}

}  // namespace stoker
