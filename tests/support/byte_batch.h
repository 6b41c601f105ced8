// The descriptor of a batch whose bytes are all one uint8 tensor, "data":
// what a transport test sends when only the payload's size and order matter.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>

#include "stoker/batch_descriptor.h"

namespace stoker::testing {

inline BatchDescriptor byte_batch(uint64_t bytes, uint64_t sequence = 0) {
  BatchDescriptor d;
  d.sequence = sequence;
  d.payload_bytes = bytes;
  const uint64_t shape[] = {bytes};
  EXPECT_TRUE(d.add_tensor("data", DType::kUInt8, shape, 0).is_ok());
  return d;
}

}  // namespace stoker::testing
