// Collation against plain scalar references written here, on every backend
// (host threads; a GPU when the build has CUDA and the machine has one): every
// output dtype and layout, odd sizes, flips, sequence edge cases, dense
// concatenation, and the errors. Outputs start poisoned so a missed element
// shows.
#include "stoker/collate.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu/collate/kernels.h"
#include "gpu/collate/numeric.h"
#include "stoker/landing.h"
#include "tests/gpu/reference_numbers.h"
#include "tests/gpu/test_memory.h"

namespace stoker {
namespace {

using testing::Backend;
using testing::BackendTest;
using testing::kBFloat16Format;
using testing::kFloat16Format;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng() & 0xFF);
  return out;
}

// The value of element `i` of a downloaded float32/float16/bfloat16 tensor.
double element(const std::vector<std::byte>& bytes, DType dtype, size_t i) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, bytes.data() + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes.data() + 2 * i, 2);
  return testing::decode_half(h, dtype == DType::kFloat16 ? kFloat16Format : kBFloat16Format);
}

uint16_t half_bits(const std::vector<std::byte>& bytes, size_t i) {
  uint16_t h;
  std::memcpy(&h, bytes.data() + 2 * i, 2);
  return h;
}

// ---------------------------------------------------------------------------
// Images

struct ImageCase {
  int64_t batch, height, width, channels;
  DType dtype;
  ImageLayout layout;
  bool flip;
  size_t in_offset = 0;   // bytes past an aligned start
  size_t out_offset = 0;  // bytes past an aligned start
};

std::string describe(const ImageCase& c) {
  return "B=" + std::to_string(c.batch) + " H=" + std::to_string(c.height) +
         " W=" + std::to_string(c.width) + " C=" + std::to_string(c.channels) + " " +
         std::string(dtype_name(c.dtype)) + (c.layout == ImageLayout::kNCHW ? " NCHW" : " NHWC") +
         (c.flip ? " flip" : "") + " in+" + std::to_string(c.in_offset) + " out+" +
         std::to_string(c.out_offset);
}

ImageCollation image_options(const ImageCase& c) {
  ImageCollation options;
  options.output_dtype = c.dtype;
  options.layout = c.layout;
  if (c.channels != 3) {
    options.mean.clear();
    options.stddev.clear();
    for (int64_t ch = 0; ch < c.channels; ++ch) {
      options.mean.push_back(0.3f + 0.1f * static_cast<float>(ch));
      options.stddev.push_back(0.2f + 0.05f * static_cast<float>(ch));
    }
  }
  options.random_flip = c.flip;
  options.seed = 1234;
  options.first_sample = 77;
  return options;
}

// Collates one random batch and compares every element with the reference.
void check_image(testing::TestMemory& memory, const ImageCase& c) {
  SCOPED_TRACE(describe(c));
  const size_t pixels = static_cast<size_t>(c.batch * c.height * c.width * c.channels);
  const auto in_host = random_bytes(pixels, static_cast<uint32_t>(pixels + 17));
  const ImageCollation options = image_options(c);
  const TensorView in =
      memory.upload(in_host, DType::kUInt8, {c.batch, c.height, c.width, c.channels}, c.in_offset);
  auto spec = image_output_spec(in, options);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  const std::vector<int64_t> expected_shape =
      c.layout == ImageLayout::kNCHW ? std::vector<int64_t>{c.batch, c.channels, c.height, c.width}
                                     : std::vector<int64_t>{c.batch, c.height, c.width, c.channels};
  ASSERT_EQ(spec->shape, expected_shape);
  ASSERT_EQ(spec->dtype, c.dtype);
  const TensorView out = memory.allocate(*spec, c.out_offset);
  const Status st = collate_image(in, out, options, memory.stream());
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  memory.finish();
  const auto got = memory.download<std::byte>(out);

  int bad = 0;
  for (int64_t n = 0; n < c.batch; ++n) {
    const bool flipped =
        c.flip &&
        testing::reference_flip(options.seed, options.first_sample + static_cast<uint64_t>(n), 0.5);
    EXPECT_EQ(image_sample_flipped(options, static_cast<uint64_t>(n)), flipped);
    for (int64_t y = 0; y < c.height; ++y) {
      for (int64_t x = 0; x < c.width; ++x) {
        const int64_t src_x = flipped ? c.width - 1 - x : x;
        for (int64_t ch = 0; ch < c.channels; ++ch) {
          const uint8_t v = in_host[static_cast<size_t>(
              ((n * c.height + y) * c.width + src_x) * c.channels + ch)];
          const double mean = options.mean[static_cast<size_t>(ch)];
          const double stddev = options.stddev[static_cast<size_t>(ch)];
          const double exact = (v / 255.0 - mean) / stddev;
          const auto i =
              static_cast<size_t>(c.layout == ImageLayout::kNCHW
                                      ? ((n * c.channels + ch) * c.height + y) * c.width + x
                                      : ((n * c.height + y) * c.width + x) * c.channels + ch);
          bool ok;
          if (c.dtype == DType::kFloat32) {
            ok = std::fabs(element(got, c.dtype, i) - exact) <= 2e-6;
          } else {
            // One ulp of the output format, plus the float32 arithmetic's
            // absolute error (collate.h) for values near zero.
            const auto& format = c.dtype == DType::kFloat16 ? kFloat16Format : kBFloat16Format;
            ok = testing::half_error_in_ulps(half_bits(got, i), exact, format) <= 1.0 ||
                 std::fabs(element(got, c.dtype, i) - exact) <= 2e-6;
          }
          if (!ok && ++bad <= 5) {
            ADD_FAILURE() << "sample " << n << " y " << y << " x " << x << " c " << ch << ": got "
                          << element(got, c.dtype, i) << ", expected " << exact;
          }
        }
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

class ImageCollationTest : public BackendTest {};

TEST_P(ImageCollationTest, EveryDtypeLayoutAndOddSizeMatchesTheReference) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (ImageLayout layout : {ImageLayout::kNCHW, ImageLayout::kNHWC}) {
      for (bool flip : {false, true}) {
        for (int64_t width : {1, 3, 4, 5, 8, 13}) {
          for (int64_t channels : {1, 2, 3, 4}) {
            check_image(memory(), {3, 5, width, channels, dtype, layout, flip});
          }
        }
      }
    }
  }
}

TEST_P(ImageCollationTest, SingleSampleSingleRow) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    check_image(memory(), {1, 1, 7, 3, dtype, ImageLayout::kNCHW, true});
    check_image(memory(), {1, 1, 4, 1, dtype, ImageLayout::kNHWC, false});
  }
}

TEST_P(ImageCollationTest, UnalignedBuffersTakeTheElementwisePath) {
  // Width % 4 == 0 but the pointers are not aligned for vector access.
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    check_image(memory(), {2, 3, 8, 3, dtype, ImageLayout::kNCHW, true, 1, 0});
    check_image(memory(), {2, 3, 8, 3, dtype, ImageLayout::kNHWC, true, 0, dtype_size(dtype)});
    check_image(memory(), {2, 3, 8, 3, dtype, ImageLayout::kNCHW, false, 0, dtype_size(dtype)});
  }
}

TEST_P(ImageCollationTest, LargeBatchRunsInParallel) {
  // Enough work items for every OpenMP thread / many GPU blocks.
  check_image(memory(), {4, 64, 64, 3, DType::kBFloat16, ImageLayout::kNCHW, true});
  check_image(memory(), {4, 64, 60, 3, DType::kFloat32, ImageLayout::kNHWC, true});
}

TEST_P(ImageCollationTest, EmptyBatchWritesNothing) {
  const TensorView in = memory().upload(std::vector<uint8_t>{}, DType::kUInt8, {0, 4, 4, 3});
  auto spec = image_output_spec(in, {});
  ASSERT_TRUE(spec.is_ok());
  EXPECT_EQ(spec->element_count(), 0);
  const TensorView out = memory().allocate(*spec);
  EXPECT_TRUE(collate_image(in, out, {}, memory().stream()).is_ok());
}

TEST_P(ImageCollationTest, FlipsFollowTheDocumentedHash) {
  ImageCollation options;
  options.random_flip = true;
  options.seed = 99;
  int flipped = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    const bool f = image_sample_flipped(options, i);
    EXPECT_EQ(f, testing::reference_flip(99, i, 0.5));
    flipped += f ? 1 : 0;
  }
  EXPECT_GT(flipped, 900);
  EXPECT_LT(flipped, 1100);
  options.flip_probability = 0.0;
  options.first_sample = 5;
  for (uint64_t i = 0; i < 100; ++i) EXPECT_FALSE(image_sample_flipped(options, i));
  options.flip_probability = 1.0;
  for (uint64_t i = 0; i < 100; ++i) EXPECT_TRUE(image_sample_flipped(options, i));
  options.random_flip = false;
  EXPECT_FALSE(image_sample_flipped(options, 0));
}

TEST_P(ImageCollationTest, ErrorsArePreciseAndWriteNothing) {
  const auto pixels = random_bytes(2 * 4 * 4 * 3, 5);
  const TensorView in = memory().upload(pixels, DType::kUInt8, {2, 4, 4, 3});
  const TensorView out = memory().allocate({DType::kFloat32, {2, 3, 4, 4}});
  const auto expect_error = [&](const TensorView& images, const TensorView& output,
                                const ImageCollation& options, const std::string& words) {
    const Status st = collate_image(images, output, options, memory().stream());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(words), std::string::npos) << st.to_string();
  };
  ImageCollation options;
  expect_error(memory().upload(std::vector<int32_t>(96), DType::kInt32, {2, 4, 4, 3}), out, options,
               "images must be uint8 but is int32[2, 4, 4, 3]");
  expect_error(memory().upload(pixels, DType::kUInt8, {8, 4, 3}), out, options,
               "images must be uint8 [B, H, W, C]");
  expect_error(memory().upload(random_bytes(2 * 4 * 5, 1), DType::kUInt8, {2, 4, 1, 5}), out,
               options, "images have 5 channels");
  options.mean = {0.5f, 0.5f};
  expect_error(in, out, options, "mean has 2 values but the images have 3 channels");
  options.mean = {0.5f};
  options.stddev = {0.2f, 0.0f, 0.2f};
  expect_error(in, out, options, "stddev[1] = 0 must be finite and non-zero");
  options = {};
  options.random_flip = true;
  options.flip_probability = 1.5;
  expect_error(in, out, options, "flip_probability 1.5 is not in [0, 1]");
  options = {};
  options.output_dtype = DType::kInt8;
  expect_error(in, out, options, "output dtype must be float32, float16 or bfloat16, not int8");
  options = {};
  expect_error(in, memory().allocate({DType::kFloat32, {2, 4, 4, 3}}), options,
               "out must be float32[2, 3, 4, 4] but is float32[2, 4, 4, 3]");
  options.layout = ImageLayout::kNHWC;
  expect_error(in, out, options, "out must be float32[2, 4, 4, 3] but is float32[2, 3, 4, 4]");

  // Every failure above left the output untouched.
  for (std::byte b : memory().download<std::byte>(out)) ASSERT_EQ(b, testing::kPoison);
}

TEST_P(ImageCollationTest, RefusesStridedAndOverlappingTensors) {
  const TensorView in = memory().upload(random_bytes(96, 2), DType::kUInt8, {2, 4, 4, 3});
  const int64_t shape[] = {2, 4, 4, 3};
  const int64_t strides[] = {48, 12, 3, 2};  // channels not adjacent
  auto strided =
      TensorView::strided(in.data(), DType::kUInt8, shape, strides, in.memory(), in.device());
  ASSERT_TRUE(strided.is_ok());
  const TensorView out = memory().allocate({DType::kFloat32, {2, 3, 4, 4}});
  Status st = collate_image(*strided, out, {}, memory().stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("is not contiguous"), std::string::npos) << st.to_string();

  // The output starts inside the input.
  const TensorView big = memory().allocate({DType::kFloat32, {2, 3, 4, 4}});
  const int64_t in_shape[] = {2, 4, 4, 3};
  auto in_alias =
      TensorView::contiguous(big.data(), DType::kUInt8, in_shape, big.memory(), big.device());
  ASSERT_TRUE(in_alias.is_ok());
  st = collate_image(*in_alias, big, {}, memory().stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out overlaps images"), std::string::npos) << st.to_string();
}

TEST_P(ImageCollationTest, DeviceWorkNeedsEveryTensorReachableByTheGpu) {
  if (GetParam() != Backend::kDevice) GTEST_SKIP() << "device backend only";
  testing::TestMemory host(Backend::kHost);
  const TensorView in = host.upload(random_bytes(96, 3), DType::kUInt8, {2, 4, 4, 3});
  const TensorView out = memory().allocate({DType::kFloat32, {2, 3, 4, 4}});
  const Status st = collate_image(in, out, {}, memory().stream());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("images is in host (pageable) memory, which the GPU cannot read"),
            std::string::npos)
      << st.to_string();
}

INSTANTIATE_TEST_SUITE_P(Backends, ImageCollationTest,
                         ::testing::Values(Backend::kHost, Backend::kDevice),
                         testing::backend_param_name);

TEST(ImageCollation, DeviceMemoryNeedsACudaBuild) {
  if (build_has_cuda()) GTEST_SKIP() << "this build has CUDA";
  // Never dereferenced: validation stops first.
  alignas(16) static uint8_t fake[96];
  const int64_t in_shape[] = {2, 4, 4, 3};
  auto in = TensorView::contiguous(fake, DType::kUInt8, in_shape, MemoryKind::kDevice, 0);
  ASSERT_TRUE(in.is_ok());
  std::vector<float> out_host(96);
  const int64_t out_shape[] = {2, 3, 4, 4};
  auto out = TensorView::contiguous(out_host.data(), DType::kFloat32, out_shape);
  ASSERT_TRUE(out.is_ok());
  const Status st = collate_image(*in, *out, {});
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("this build of stoker has no CUDA"), std::string::npos)
      << st.to_string();
}

// ---------------------------------------------------------------------------
// Sequences

struct SequenceCase {
  std::string name;
  std::vector<int32_t> offsets;
  int64_t token_count;
  int64_t max_length;
  bool pad_to_max_length;
};

// Values of a downloaded integer or float tensor, as int64.
std::vector<int64_t> as_int64(const std::vector<std::byte>& bytes, DType dtype) {
  const size_t size = dtype_size(dtype);
  std::vector<int64_t> out(bytes.size() / size);
  for (size_t i = 0; i < out.size(); ++i) {
    const std::byte* p = bytes.data() + i * size;
    switch (dtype) {
      case DType::kInt32: {
        int32_t v;
        std::memcpy(&v, p, 4);
        out[i] = v;
        break;
      }
      case DType::kInt64:
        std::memcpy(&out[i], p, 8);
        break;
      case DType::kFloat32: {
        float v;
        std::memcpy(&v, p, 4);
        out[i] = v == 1.0f ? 1 : (v == 0.0f ? 0 : -999);
        break;
      }
      default:  // bool, uint8
        out[i] = static_cast<int64_t>(*p);
        break;
    }
  }
  return out;
}

void check_sequences(testing::TestMemory& memory, const SequenceCase& c, DType ids_dtype,
                     DType mask_dtype, bool positions) {
  SCOPED_TRACE(c.name + " ids " + std::string(dtype_name(ids_dtype)) + " mask " +
               std::string(dtype_name(mask_dtype)) + (positions ? " positions" : ""));
  std::vector<int32_t> tokens(static_cast<size_t>(c.token_count));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(1000 + 7 * i);
  const int64_t batch = static_cast<int64_t>(c.offsets.size()) - 1;
  SequenceCollation options;
  options.max_length = c.max_length;
  options.pad_to_max_length = c.pad_to_max_length;
  options.pad_id = -3;
  options.ids_dtype = ids_dtype;
  options.mask_dtype = mask_dtype;
  options.position_ids = positions;

  // The spec is computed from host offsets: the Reader's pinned landing.
  testing::TestMemory host(Backend::kHost);
  const TensorView host_offsets = host.upload(c.offsets, DType::kInt32, {batch + 1});
  const TensorView host_tokens = host.upload(tokens, DType::kInt32, {c.token_count});
  auto spec = sequence_output_spec(host_tokens, host_offsets, options);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    longest = std::max<int64_t>(
        longest, c.offsets[static_cast<size_t>(b + 1)] - c.offsets[static_cast<size_t>(b)]);
  }
  const int64_t length = c.pad_to_max_length ? c.max_length : std::min(longest, c.max_length);
  ASSERT_EQ(spec->length, length);
  ASSERT_EQ(spec->ids, (TensorSpec{ids_dtype, {batch, length}}));
  ASSERT_EQ(spec->mask, (TensorSpec{mask_dtype, {batch, length}}));
  ASSERT_EQ(spec->positions.has_value(), positions);

  const TensorView in_tokens = memory.upload(tokens, DType::kInt32, {c.token_count});
  const TensorView in_offsets = memory.upload(c.offsets, DType::kInt32, {batch + 1});
  SequenceOutputs out;
  out.ids = memory.allocate(spec->ids);
  out.mask = memory.allocate(spec->mask);
  if (positions) out.positions = memory.allocate(*spec->positions);
  out.malformed_samples = memory.allocate({DType::kInt32, {1}});
  const Status st = collate_sequences(in_tokens, in_offsets, out, options, memory.stream());
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  memory.finish();
  const auto ids = as_int64(memory.download<std::byte>(out.ids), ids_dtype);
  const auto mask = as_int64(memory.download<std::byte>(out.mask), mask_dtype);
  const auto pos =
      positions ? as_int64(memory.download<std::byte>(*out.positions), ids_dtype) : ids;
  EXPECT_EQ(memory.download<int32_t>(*out.malformed_samples), std::vector<int32_t>{0});

  for (int64_t b = 0; b < batch; ++b) {
    const int64_t start = c.offsets[static_cast<size_t>(b)];
    const int64_t present = c.offsets[static_cast<size_t>(b + 1)] - start;
    for (int64_t l = 0; l < length; ++l) {
      const auto i = static_cast<size_t>(b * length + l);
      const bool token = l < present;
      ASSERT_EQ(ids[i], token ? tokens[static_cast<size_t>(start + l)] : -3)
          << "sample " << b << " position " << l;
      ASSERT_EQ(mask[i], token ? 1 : 0) << "sample " << b << " position " << l;
      if (positions) {
        ASSERT_EQ(pos[i], token ? l : 0) << "sample " << b << " position " << l;
      }
    }
  }
}

class SequenceCollationTest : public BackendTest {};

TEST_P(SequenceCollationTest, EveryOutputDtypeAndEdgeCaseMatchesTheReference) {
  const std::vector<SequenceCase> cases = {
      {"empty sample and truncation", {0, 3, 3, 12, 13}, 13, 5, false},
      {"all the same length", {0, 4, 8, 12}, 12, 16, false},
      {"padded to max_length", {0, 2, 9}, 9, 9, true},
      {"offsets not starting at 0", {2, 5, 6}, 8, 512, false},
      {"every sample empty", {4, 4, 4}, 6, 8, false},
      {"one sample", {0, 6}, 6, 6, false},
      {"longer than max_length, padded", {0, 30, 31}, 31, 8, true},
  };
  for (const auto& c : cases) {
    for (DType ids : {DType::kInt32, DType::kInt64}) {
      for (DType mask :
           {DType::kBool, DType::kUInt8, DType::kInt32, DType::kInt64, DType::kFloat32}) {
        for (bool positions : {false, true}) check_sequences(memory(), c, ids, mask, positions);
      }
    }
  }
}

TEST_P(SequenceCollationTest, LargeBatchRunsInParallel) {
  std::vector<int32_t> offsets = {0};
  for (int b = 0; b < 512; ++b) offsets.push_back(offsets.back() + (b * 37) % 101);
  check_sequences(memory(), {"large", offsets, offsets.back(), 64, false}, DType::kInt64,
                  DType::kUInt8, true);
  check_sequences(memory(), {"large", offsets, offsets.back(), 63, false}, DType::kInt32,
                  DType::kFloat32, false);
}

TEST_P(SequenceCollationTest, MalformedHostOffsetsAreRefusedBeforeLaunch) {
  testing::TestMemory host(Backend::kHost);
  const TensorView tokens = memory().upload(std::vector<int32_t>(10, 1), DType::kInt32, {10});
  SequenceOutputs out;
  out.ids = memory().allocate({DType::kInt32, {3, 4}});
  out.mask = memory().allocate({DType::kUInt8, {3, 4}});
  const auto expect_error = [&](std::vector<int32_t> offsets, const std::string& words) {
    const TensorView o = host.upload(offsets, DType::kInt32, {4});
    const Status st = collate_sequences(tokens, o, out, {}, memory().stream());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(words), std::string::npos) << st.to_string();
    const auto spec = sequence_output_spec(tokens, o, {});
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  };
  expect_error({0, 4, 2, 6}, "offsets[2] = 2 is less than offsets[1] = 4");
  expect_error({0, 4, 6, 11}, "offsets[3] = 11 lies beyond the 10 tokens");
  expect_error({-1, 4, 6, 8}, "offsets[0] = -1 is negative");
  for (std::byte b : memory().download<std::byte>(out.ids)) ASSERT_EQ(b, testing::kPoison);
}

TEST_P(SequenceCollationTest, DeviceOffsetsAreClampedAndCounted) {
  if (GetParam() != Backend::kDevice) GTEST_SKIP() << "device backend only";
  std::vector<int32_t> tokens = {10, 11, 12, 13, 14, 15};
  // Sample 0 ends before it starts, sample 1 is fine, sample 2 runs past the tokens.
  const std::vector<int32_t> offsets = {3, 1, 4, 9};
  const TensorView t = memory().upload(tokens, DType::kInt32, {6});
  const TensorView o = memory().upload(offsets, DType::kInt32, {4});
  SequenceCollation options;
  options.max_length = 4;
  options.pad_to_max_length = true;
  auto spec = sequence_output_spec(t, o, options);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  SequenceOutputs out{.ids = memory().allocate(spec->ids),
                      .mask = memory().allocate(spec->mask),
                      .positions = std::nullopt,
                      .malformed_samples = memory().allocate({DType::kInt32, {1}})};
  ASSERT_TRUE(collate_sequences(t, o, out, options, memory().stream()).is_ok());
  memory().finish();
  EXPECT_EQ(memory().download<int32_t>(out.ids),
            (std::vector<int32_t>{0, 0, 0, 0, 11, 12, 13, 0, 14, 15, 0, 0}));
  EXPECT_EQ(memory().download<int32_t>(*out.malformed_samples), std::vector<int32_t>{2});

  options.pad_to_max_length = false;
  EXPECT_EQ(sequence_output_spec(t, o, options).status().code(), StatusCode::kFailedPrecondition);
}

TEST_P(SequenceCollationTest, ErrorsArePrecise) {
  const TensorView tokens = memory().upload(std::vector<int32_t>(8, 1), DType::kInt32, {8});
  testing::TestMemory host(Backend::kHost);
  const TensorView offsets = host.upload(std::vector<int32_t>{0, 3, 8}, DType::kInt32, {3});
  SequenceOutputs out;
  out.ids = memory().allocate({DType::kInt32, {2, 5}});
  out.mask = memory().allocate({DType::kUInt8, {2, 5}});
  const auto expect_error = [&](const TensorView& tok, const TensorView& off,
                                const SequenceOutputs& o, const SequenceCollation& options,
                                const std::string& words) {
    const Status st = collate_sequences(tok, off, o, options, memory().stream());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(words), std::string::npos) << st.to_string();
  };
  SequenceCollation options;
  expect_error(memory().upload(std::vector<int64_t>(8), DType::kInt64, {8}), offsets, out, options,
               "tokens must be int32 but is int64[8]");
  expect_error(tokens, host.upload(std::vector<int32_t>{0, 3, 8}, DType::kInt32, {1, 3}), out,
               options, "offsets must be int32 [B + 1]");
  options.max_length = 4;
  expect_error(tokens, offsets, out, options, "ids have length 5, but max_length is 4");
  options = {};
  options.ids_dtype = DType::kUInt16;
  expect_error(tokens, offsets, out, options, "ids_dtype must be int32 or int64, not uint16");
  options = {};
  options.mask_dtype = DType::kFloat16;
  expect_error(tokens, offsets, out, options, "mask_dtype must be bool, uint8");
  options = {};
  options.pad_id = int64_t{1} << 40;
  expect_error(tokens, offsets, out, options, "does not fit int32 ids");
  options = {};
  options.position_ids = true;
  expect_error(tokens, offsets, out, options, "options.position_ids is true but position ids");
  options = {};
  SequenceOutputs wrong_mask = out;
  wrong_mask.mask = memory().allocate({DType::kInt32, {2, 5}});
  expect_error(tokens, offsets, wrong_mask, options, "mask must be uint8[2, 5] but is int32");
}

INSTANTIATE_TEST_SUITE_P(Backends, SequenceCollationTest,
                         ::testing::Values(Backend::kHost, Backend::kDevice),
                         testing::backend_param_name);

// The clamping every unchecked (device) offset goes through, run by the
// host executor directly: the same functor the GPU runs.
TEST(SequenceKernel, ClampsAndCountsMalformedOffsetsOnHostThreads) {
  const std::vector<int32_t> tokens = {10, 11, 12, 13, 14, 15};
  const std::vector<int32_t> offsets = {3, 1, 4, 9, -5, 2};
  std::vector<int32_t> ids(5 * 4, -1);
  std::vector<uint8_t> mask(5 * 4, 9);
  int32_t malformed = 0;
  collate_detail::SequenceArgs args;
  args.tokens = tokens.data();
  args.token_count = 6;
  args.offsets = offsets.data();
  args.batch = 5;
  args.length = 4;
  args.ids = ids.data();
  args.mask = mask.data();
  args.malformed = &malformed;
  ASSERT_TRUE(collate_detail::launch_sequences(args, {}).is_ok());
  // [3,1) -> empty; [1,4); [4,9) -> [4,6); [9,-5) -> empty; [-5,2) -> [0,2)
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 0, 0, 0, 11, 12, 13, 0,  14, 15,
                                       0, 0, 0, 0, 0,  0,  10, 11, 0,  0}));
  EXPECT_EQ(malformed, 4);
}

// ---------------------------------------------------------------------------
// Dense features

struct Feature {
  DType dtype;
  int64_t width;  // 0: a 1-D [B] feature
};

class DenseCollationTest : public BackendTest {};

void check_dense(testing::TestMemory& memory, const std::vector<Feature>& features, int64_t batch,
                 DType out_dtype, size_t out_offset = 0) {
  SCOPED_TRACE("B=" + std::to_string(batch) + " out " + std::string(dtype_name(out_dtype)) +
               " features " + std::to_string(features.size()));
  DenseCollation options;
  options.output_dtype = out_dtype;
  options.uint8_scale = 1.0f / 255.0f;
  std::mt19937 rng(static_cast<uint32_t>(batch * 31 + static_cast<int64_t>(features.size())));
  std::uniform_real_distribution<float> uniform(-4.0f, 4.0f);
  std::vector<TensorView> views;
  std::vector<std::vector<double>> values;  // the exact input values, row-major
  int64_t total = 0;
  for (const Feature& f : features) {
    const int64_t width = f.width == 0 ? 1 : f.width;
    const auto n = static_cast<size_t>(batch * width);
    std::vector<int64_t> shape = {batch};
    if (f.width != 0) shape.push_back(f.width);
    std::vector<double> exact(n);
    if (f.dtype == DType::kUInt8) {
      auto bytes = random_bytes(n, static_cast<uint32_t>(n));
      for (size_t i = 0; i < n; ++i) {
        exact[i] =
            static_cast<float>(bytes[i]) * options.uint8_scale;  // the documented float product
      }
      views.push_back(memory.upload(bytes, f.dtype, shape));
    } else if (f.dtype == DType::kFloat32) {
      std::vector<float> floats(n);
      for (size_t i = 0; i < n; ++i) exact[i] = floats[i] = uniform(rng);
      views.push_back(memory.upload(floats, f.dtype, shape));
    } else {
      const auto& format = f.dtype == DType::kFloat16 ? kFloat16Format : kBFloat16Format;
      std::vector<uint16_t> halves(n);
      for (size_t i = 0; i < n; ++i) {
        halves[i] = testing::round_half(uniform(rng), format);
        exact[i] = testing::decode_half(halves[i], format);
      }
      views.push_back(memory.upload(halves, f.dtype, shape));
    }
    values.push_back(std::move(exact));
    total += width;
  }
  auto spec = dense_output_spec(views, options);
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  ASSERT_EQ(*spec, (TensorSpec{out_dtype, {batch, total}}));
  const TensorView out = memory.allocate(*spec, out_offset);
  const Status st = collate_dense(views, out, options, memory.stream());
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  memory.finish();
  const auto got = memory.download<std::byte>(out);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t column = 0;
    for (size_t k = 0; k < features.size(); ++k) {
      const int64_t width = features[k].width == 0 ? 1 : features[k].width;
      for (int64_t j = 0; j < width; ++j, ++column) {
        const double exact = values[k][static_cast<size_t>(b * width + j)];
        const auto i = static_cast<size_t>(b * total + column);
        // Inputs are exact floats: the output is their correctly rounded value.
        if (out_dtype == DType::kFloat32) {
          ASSERT_EQ(element(got, out_dtype, i), static_cast<float>(exact))
              << "row " << b << " column " << column;
        } else {
          const auto& format = out_dtype == DType::kFloat16 ? kFloat16Format : kBFloat16Format;
          ASSERT_EQ(half_bits(got, i), testing::round_half(static_cast<float>(exact), format))
              << "row " << b << " column " << column;
        }
      }
    }
  }
}

TEST_P(DenseCollationTest, ConcatenatesEveryInputDtypeIntoEveryOutputDtype) {
  const std::vector<Feature> mixed = {{DType::kFloat32, 3},
                                      {DType::kUInt8, 5},
                                      {DType::kFloat16, 0},
                                      {DType::kBFloat16, 2},
                                      {DType::kFloat32, 4}};
  const std::vector<Feature> aligned = {{DType::kFloat32, 4}, {DType::kUInt8, 8}};
  for (DType out : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int64_t batch : {1, 7}) {
      check_dense(memory(), mixed, batch, out);
      check_dense(memory(), aligned, batch, out);
      check_dense(memory(), aligned, batch, out, /*out_offset=*/4);
    }
  }
}

TEST_P(DenseCollationTest, MoreFeaturesThanOneLaunchTakes) {
  std::vector<Feature> many;
  for (int k = 0; k < 19; ++k) {
    many.push_back({k % 3 == 0 ? DType::kUInt8 : DType::kFloat32, k % 4 == 0 ? 0 : k % 5});
  }
  check_dense(memory(), many, 33, DType::kFloat32);
  check_dense(memory(), many, 5, DType::kBFloat16);
}

TEST_P(DenseCollationTest, LargeBatchRunsInParallel) {
  check_dense(memory(), {{DType::kFloat32, 64}, {DType::kUInt8, 64}}, 512, DType::kFloat32);
}

TEST_P(DenseCollationTest, ErrorsArePrecise) {
  const TensorView a = memory().upload(std::vector<float>(12), DType::kFloat32, {4, 3});
  const TensorView out = memory().allocate({DType::kFloat32, {4, 5}});
  const auto expect_error = [&](std::vector<TensorView> features, const TensorView& o,
                                const DenseCollation& options, const std::string& words) {
    const Status st = collate_dense(features, o, options, memory().stream());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(words), std::string::npos) << st.to_string();
  };
  expect_error({}, out, {}, "collate_dense: no features");
  expect_error({a, memory().upload(std::vector<float>(6), DType::kFloat32, {3, 2})}, out, {},
               "feature 1 has 3 samples");
  expect_error({a, memory().upload(std::vector<int32_t>(8), DType::kInt32, {4, 2})}, out, {},
               "feature 1 is int32[4, 2]");
  expect_error({a, memory().upload(std::vector<float>(8), DType::kFloat32, {4, 1, 2})}, out, {},
               "feature 1 must be [B, d] or [B]");
  expect_error({a, a}, out, {}, "out must be float32[4, 6] but is float32[4, 5]");
  DenseCollation options;
  options.output_dtype = DType::kUInt8;
  expect_error({a}, out, options, "output dtype must be float32, float16 or bfloat16");
}

INSTANTIATE_TEST_SUITE_P(Backends, DenseCollationTest,
                         ::testing::Values(Backend::kHost, Backend::kDevice),
                         testing::backend_param_name);

// ---------------------------------------------------------------------------
// One implementation: the GPU and the host threads produce the same bits.

TEST(CollationBackends, GpuAndHostAgreeBitForBit) {
  if (!testing::unavailable_reason(Backend::kDevice).empty()) {
    GTEST_SKIP() << testing::unavailable_reason(Backend::kDevice);
  }
  testing::TestMemory host(Backend::kHost);
  testing::TestMemory gpu(Backend::kDevice);
  const auto pixels = random_bytes(16 * 31 * 29 * 3, 9);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (ImageLayout layout : {ImageLayout::kNCHW, ImageLayout::kNHWC}) {
      for (int64_t width : {28, 29}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " width " + std::to_string(width));
        ImageCollation options;
        options.output_dtype = dtype;
        options.layout = layout;
        options.random_flip = true;
        options.seed = 3;
        const std::vector<uint8_t> batch(pixels.begin(), pixels.begin() + 16 * 31 * width * 3);
        std::vector<std::vector<std::byte>> outputs;
        for (testing::TestMemory* memory : {&host, &gpu}) {
          const TensorView in = memory->upload(batch, DType::kUInt8, {16, 31, width, 3});
          const TensorView out = memory->allocate(*image_output_spec(in, options));
          ASSERT_TRUE(collate_image(in, out, options, memory->stream()).is_ok());
          memory->finish();
          outputs.push_back(memory->download<std::byte>(out));
        }
        EXPECT_TRUE(outputs[0] == outputs[1]);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The conversions both builds share, against the search-based reference.

TEST(HalfConversion, RoundsToNearestEvenLikeTheReference) {
  std::vector<float> samples = {0.0f,      -0.0f,     1.0f,      -1.0f, 65504.0f,  65519.99f,
                                65520.0f,  -65520.0f, 1e9f,      1e-8f, 2.98e-8f,  5.96e-8f,
                                6.1e-5f,   6.09e-5f,  3.0e-7f,   0.1f,  0.333333f, INFINITY,
                                -INFINITY, 3.4e38f,   1.17e-38f, 1e-45f};
  // Every float16 and bfloat16 value, and the midpoints between neighbours (the ties).
  for (int bits = 0; bits < 0x7C00; ++bits) {
    const double v = testing::decode_half(static_cast<uint16_t>(bits), kFloat16Format);
    const double next = testing::decode_half(static_cast<uint16_t>(bits + 1), kFloat16Format);
    samples.push_back(static_cast<float>(v));
    samples.push_back(static_cast<float>((v + next) / 2));  // exact in float
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = static_cast<uint32_t>(rng());
    float f;
    std::memcpy(&f, &u, 4);
    if (!std::isnan(f)) samples.push_back(f);
  }
  for (float f : samples) {
    ASSERT_EQ(collate_detail::float_to_float16_bits(f), testing::round_half(f, kFloat16Format))
        << "float16 of " << f;
    ASSERT_EQ(collate_detail::float_to_bfloat16_bits(f), testing::round_half(f, kBFloat16Format))
        << "bfloat16 of " << f;
  }
  for (int bits = 0; bits < 0x10000; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const double f16 = testing::decode_half(h, kFloat16Format);
    const double bf16 = testing::decode_half(h, kBFloat16Format);
    if (!std::isnan(f16)) {
      ASSERT_EQ(collate_detail::float16_bits_to_float(h), f16) << bits;
    }
    if (!std::isnan(bf16)) {
      ASSERT_EQ(collate_detail::bfloat16_bits_to_float(h), bf16) << bits;
    }
  }
  EXPECT_TRUE(std::isnan(
      collate_detail::float16_bits_to_float(collate_detail::float_to_float16_bits(std::nanf("")))));
  EXPECT_TRUE(std::isnan(collate_detail::bfloat16_bits_to_float(
      collate_detail::float_to_bfloat16_bits(std::nanf("")))));
}

TEST(FastDivider, DividesEveryNarrowIndexExactly) {
  std::mt19937_64 rng(11);
  std::vector<uint64_t> divisors = {1,
                                    2,
                                    3,
                                    4,
                                    5,
                                    7,
                                    56,
                                    57,
                                    224,
                                    1000,
                                    65535,
                                    65536,
                                    65537,
                                    (1u << 30) - 1,
                                    1u << 30,
                                    (1u << 30) + 1,
                                    (1u << 31) - 1};
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + rng() % ((1u << 31) - 1));
  for (uint64_t d : divisors) {
    const collate_detail::FastDivider divider(d);
    std::vector<uint32_t> numerators = {0, 1, (1u << 31) - 1, (1u << 31) - 2};
    for (uint64_t k : {uint64_t{1}, uint64_t{2}, uint64_t{3}, ((1u << 31) - 1) / d}) {
      if (k * d < (1u << 31)) numerators.push_back(static_cast<uint32_t>(k * d));
      if (k * d - 1 < (1u << 31)) numerators.push_back(static_cast<uint32_t>(k * d - 1));
    }
    for (int j = 0; j < 50; ++j) numerators.push_back(static_cast<uint32_t>(rng() % (1u << 31)));
    for (uint32_t n : numerators) {
      ASSERT_EQ(divider.divide(n), n / d) << n << " / " << d;
      ASSERT_EQ(divider.divide(uint64_t{n} * 5), uint64_t{n} * 5 / d) << "wide " << n << " / " << d;
    }
  }
}

}  // namespace
}  // namespace stoker
