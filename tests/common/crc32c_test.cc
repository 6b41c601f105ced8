// CRC32C against published check values (RFC 3720 appendix B.4) and the
// table-driven implementation against the accelerated one.
#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

namespace stoker {
namespace {

std::span<const std::byte> bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(Crc32c, MatchesPublishedCheckValues) {
  EXPECT_EQ(crc32c(bytes("123456789")), 0xe3069283u);
  std::vector<std::byte> zeros(32, std::byte{0});
  EXPECT_EQ(crc32c(zeros), 0x8a9136aau);
  std::vector<std::byte> ones(32, std::byte{0xff});
  EXPECT_EQ(crc32c(ones), 0x62a8ab43u);
  std::vector<std::byte> ascending(32);
  for (size_t i = 0; i < 32; ++i) ascending[i] = static_cast<std::byte>(i);
  EXPECT_EQ(crc32c(ascending), 0x46dd794eu);
  EXPECT_EQ(crc32c({}), 0u);
}

TEST(Crc32c, ExtendingInPiecesEqualsOneShot) {
  std::mt19937 rng(7);
  std::vector<std::byte> data(1000);
  for (auto& b : data) b = static_cast<std::byte>(rng());
  const uint32_t whole = crc32c(data);
  for (size_t cut : {0u, 1u, 7u, 8u, 9u, 500u, 999u, 1000u}) {
    const auto span = std::span<const std::byte>(data);
    EXPECT_EQ(crc32c_extend(crc32c(span.first(cut)), span.subspan(cut)), whole) << cut;
  }
}

TEST(Crc32c, PortableAndAcceleratedAgree) {
  // Without the instruction crc32c() is the portable code: nothing to compare.
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("sse4.2")) GTEST_SKIP() << "this CPU has no SSE4.2";
#else
  GTEST_SKIP() << "no accelerated CRC32C on this architecture";
#endif
  std::mt19937 rng(11);
  for (size_t n : {0u, 1u, 3u, 8u, 15u, 64u, 4097u}) {
    std::vector<std::byte> data(n);
    for (auto& b : data) b = static_cast<std::byte>(rng());
    EXPECT_EQ(detail::crc32c_extend_portable(0, reinterpret_cast<const uint8_t*>(data.data()),
                                             data.size()),
              crc32c(data))
        << n;
  }
}

TEST(Crc32c, MaskRoundTrips) {
  for (uint32_t crc : {0u, 1u, 0xe3069283u, 0xffffffffu}) {
    EXPECT_EQ(unmask_crc32c(mask_crc32c(crc)), crc);
    EXPECT_NE(mask_crc32c(crc), crc);
  }
}

}  // namespace
}  // namespace stoker
