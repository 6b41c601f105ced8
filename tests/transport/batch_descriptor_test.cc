// The batch descriptor: encode/decode round trips and every rejection rule.
#include "stoker/batch_descriptor.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace stoker {
namespace {

BatchDescriptor image_batch() {
  BatchDescriptor d;
  d.job_id = 7;
  d.split_id = 11;
  d.sequence = 123456789012ULL;
  d.round = 3;
  d.iteration = 5;
  d.flags = kLastOfSplit;
  const uint64_t images[] = {32, 224, 224, 3};
  const uint64_t labels[] = {32};
  const uint64_t image_bytes = 32 * 224 * 224 * 3;
  EXPECT_TRUE(d.add_tensor("image", DType::kUInt8, images, 0).is_ok());
  EXPECT_TRUE(d.add_tensor("label", DType::kInt32, labels, image_bytes).is_ok());
  d.payload_bytes = image_bytes + 32 * 4;
  return d;
}

std::vector<std::byte> encode(const BatchDescriptor& d) {
  std::vector<std::byte> out(d.encoded_size());
  auto n = d.encode(out);
  EXPECT_TRUE(n.is_ok()) << n.status().to_string();
  return out;
}

// Overwrites a little-endian integer at `offset` of an encoded descriptor.
template <typename T>
void poke(std::vector<std::byte>& bytes, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    bytes[offset + i] = static_cast<std::byte>((static_cast<uint64_t>(value) >> (8 * i)) & 0xFF);
  }
}

constexpr size_t kTensor0 = kDescriptorHeaderBytes;  // first tensor entry

TEST(BatchDescriptor, RoundTripsEveryField) {
  const BatchDescriptor d = image_batch();
  auto bytes = encode(d);
  ASSERT_EQ(bytes.size(), kDescriptorHeaderBytes + 2 * kTensorEntryBytes);
  auto back = BatchDescriptor::decode(bytes);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->job_id, 7u);
  EXPECT_EQ(back->split_id, 11u);
  EXPECT_EQ(back->sequence, 123456789012ULL);
  EXPECT_EQ(back->round, 3u);
  EXPECT_EQ(back->iteration, 5u);
  EXPECT_EQ(back->flags, kLastOfSplit);
  EXPECT_EQ(back->payload_bytes, d.payload_bytes);
  ASSERT_EQ(back->tensor_count, 2);
  EXPECT_EQ(back->tensors[0].name_view(), "image");
  EXPECT_EQ(back->tensors[0].dtype, DType::kUInt8);
  EXPECT_EQ(back->tensors[0].ndim, 4);
  EXPECT_EQ(back->tensors[0].shape[1], 224u);
  EXPECT_EQ(back->tensors[1].name_view(), "label");
  EXPECT_EQ(back->tensors[1].offset, 32u * 224 * 224 * 3);
  EXPECT_EQ(back->tensors[1].bytes, 128u);
}

TEST(BatchDescriptor, IsLittleEndianOnTheWire) {
  auto bytes = encode(image_batch());
  EXPECT_EQ(bytes[0], std::byte{'S'});
  EXPECT_EQ(bytes[1], std::byte{'T'});
  EXPECT_EQ(bytes[2], std::byte{'B'});
  EXPECT_EQ(bytes[3], std::byte{'K'});
  EXPECT_EQ(bytes[4], std::byte{kDescriptorVersion});  // version, low byte first
  EXPECT_EQ(bytes[8], std::byte{7});                   // job_id
}

TEST(BatchDescriptor, RejectsUnknownVersionNamingBoth) {
  auto bytes = encode(image_batch());
  poke<uint16_t>(bytes, 4, 9);
  auto r = BatchDescriptor::decode(bytes);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(r.status().message().find("version 9"), std::string::npos);
  EXPECT_NE(r.status().message().find(fmt::format("speaks {}", kDescriptorVersion)),
            std::string::npos);
}

struct Corruption {
  const char* name;
  size_t offset;
  uint64_t value;
  size_t width;
  const char* expect;  // part of the error message
};

class BatchDescriptorCorruption : public ::testing::TestWithParam<Corruption> {};

TEST_P(BatchDescriptorCorruption, IsRejectedWithAPreciseMessage) {
  const Corruption& c = GetParam();
  auto bytes = encode(image_batch());
  switch (c.width) {
    case 1:
      poke<uint8_t>(bytes, c.offset, static_cast<uint8_t>(c.value));
      break;
    case 2:
      poke<uint16_t>(bytes, c.offset, static_cast<uint16_t>(c.value));
      break;
    case 4:
      poke<uint32_t>(bytes, c.offset, static_cast<uint32_t>(c.value));
      break;
    default:
      poke<uint64_t>(bytes, c.offset, c.value);
      break;
  }
  auto r = BatchDescriptor::decode(bytes);
  ASSERT_FALSE(r.is_ok()) << c.name;
  EXPECT_EQ(r.status().code(), StatusCode::kProtocolError) << r.status().to_string();
  EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(
    EveryRule, BatchDescriptorCorruption,
    ::testing::Values(
        Corruption{"magic", 0, 0xDEADBEEF, 4, "magic"},
        Corruption{"too many tensors", 6, 17, 2, "at most 16"},
        Corruption{"table size", 6, 3, 2, "3 tensors need"},
        Corruption{"unknown dtype", kTensor0 + 32, 200, 1, "unknown dtype code 200"},
        Corruption{"too many dims", kTensor0 + 33, 9, 1, "9 dimensions"},
        Corruption{"reserved", kTensor0 + 36, 1, 4, "reserved"},
        Corruption{"offset beyond payload", kTensor0 + 40, 1ULL << 40, 8, "beyond"},
        Corruption{"bytes disagree with shape", kTensor0 + 48, 5, 8, "shape and dtype give"},
        Corruption{"shape overflow", kTensor0 + 56, 1ULL << 62, 8, "overflows"},
        Corruption{"dim beyond ndim", kTensor0 + 56 + 8 * 5, 4, 8, "beyond ndim"},
        Corruption{"misaligned int32", kTensor0 + kTensorEntryBytes + 40, 3, 8, "aligned"},
        Corruption{"payload too small", 40, 16, 8, "beyond the 16-byte payload"},
        Corruption{"unknown flag", 56, 0x80, 4, "unknown flag bits 0x80"},
        Corruption{"header reserved", 60, 1, 4, "reserved bytes are not zero"},
        Corruption{"name not terminated", kTensor0 + 31, 'x', 1, "NUL-terminated"},
        Corruption{"empty name", kTensor0, 0, 1, "empty"}),
    [](const auto& param_info) {
      std::string n = param_info.param.name;
      for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return n;
    });

TEST(BatchDescriptor, EveryTruncationIsRejectedCleanly) {
  auto bytes = encode(image_batch());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = BatchDescriptor::decode(std::span(bytes).first(n));
    EXPECT_FALSE(r.is_ok()) << "prefix of " << n << " bytes was accepted";
  }
  bytes.push_back(std::byte{0});
  EXPECT_FALSE(BatchDescriptor::decode(bytes).is_ok()) << "trailing byte was accepted";
}

TEST(BatchDescriptor, RandomMutationsNeverCrashAndValidResultsAreConsistent) {
  const auto original = encode(image_batch());
  std::mt19937_64 rng(42);
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    auto bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bytes[rng() % bytes.size()] = static_cast<std::byte>(rng() & 0xFF);
    }
    auto r = BatchDescriptor::decode(bytes);
    if (!r.is_ok()) continue;
    ++accepted;
    // Whatever is accepted must be self-consistent and lie inside the payload.
    for (size_t t = 0; t < r->tensor_count; ++t) {
      const auto& tensor = r->tensors[t];
      EXPECT_LE(tensor.offset + tensor.bytes, r->payload_bytes);
      EXPECT_EQ(tensor.bytes, tensor.element_count() * dtype_size(tensor.dtype));
    }
  }
  EXPECT_GT(accepted, 0u);  // mutations of ids and sequence numbers stay valid
}

TEST(BatchDescriptor, AddTensorRefusesWhatCannotBeEncoded) {
  BatchDescriptor d;
  const uint64_t shape[] = {1};
  EXPECT_EQ(d.add_tensor("", DType::kUInt8, shape, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(d.add_tensor(std::string(32, 'n'), DType::kUInt8, shape, 0).code(),
            StatusCode::kInvalidArgument);
  const uint64_t deep[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(d.add_tensor("deep", DType::kUInt8, deep, 0).code(), StatusCode::kInvalidArgument);
  for (size_t i = 0; i < kMaxTensors; ++i) {
    const std::string name = fmt::format("t{}", i);
    ASSERT_TRUE(d.add_tensor(name, DType::kUInt8, shape, i).is_ok());
  }
  EXPECT_EQ(d.add_tensor("one_more", DType::kUInt8, shape, 0).code(), StatusCode::kInvalidArgument);
}

TEST(BatchDescriptor, EncodeRefusesInconsistentDescriptorsAndShortBuffers) {
  BatchDescriptor d = image_batch();
  d.payload_bytes = 10;  // tensors lie beyond it
  std::vector<std::byte> out(d.encoded_size());
  EXPECT_EQ(d.encode(out).status().code(), StatusCode::kProtocolError);
  d = image_batch();
  std::vector<std::byte> small(d.encoded_size() - 1);
  EXPECT_EQ(d.encode(small).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace stoker
