// Byte sizes as people write them on command lines: "4096", "64K", "256M", "2G".
#pragma once

#include <cstddef>
#include <string_view>

#include "stoker/result.h"

namespace stoker {

// Binary multiples (K = 1024). Fails on garbage, unknown suffixes and overflow.
Result<size_t> parse_byte_size(std::string_view text);

}  // namespace stoker
