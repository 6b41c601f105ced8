// The journal on real files: records replay in order; a torn last record
// (the tail of a crashed write) is cut off with a warning and appends follow
// the last good record; damage before the end refuses to start, naming the
// file and the offset. A rewrite (compaction) replaces the file whole or
// not at all.
#include "coordinator/journal.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace stoker::coordinator {
namespace {

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("stoker-journal-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path() const { return (dir_ / "journal.log").string(); }

  // Opens the journal and returns what it replayed.
  Result<std::unique_ptr<Journal>> open(std::vector<std::string>& replayed,
                                        ReplayStats* stats = nullptr) {
    return Journal::open(
        dir_.string(), Durability::kSync,
        [&](std::span<const std::byte> payload, uint64_t) {
          replayed.emplace_back(reinterpret_cast<const char*>(payload.data()), payload.size());
          return Status::ok();
        },
        stats);
  }
  // Opens the journal, which must start after dropping a torn tail; returns
  // what it replayed.
  std::vector<std::string> replay_dropping_a_torn_tail() {
    std::vector<std::string> replayed;
    ReplayStats stats;
    auto j = open(replayed, &stats);
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    EXPECT_TRUE(stats.torn_tail_dropped);
    return replayed;
  }
  void write_records(const std::vector<std::string>& records) {
    std::vector<std::string> none;
    auto j = open(none);
    ASSERT_TRUE(j.is_ok()) << j.status().to_string();
    for (const auto& r : records) ASSERT_TRUE((*j)->append(std::as_bytes(std::span(r))).is_ok());
    ASSERT_TRUE((*j)->sync().is_ok());
  }
  std::vector<char> contents() const {
    std::ifstream in(path(), std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  void overwrite(const std::vector<char>& bytes) const {
    std::ofstream out(path(), std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  std::filesystem::path dir_;
};

TEST_F(JournalTest, RecordsReplayInOrderAcrossRestarts) {
  write_records({"first", "", std::string(100'000, 'x')});
  {
    std::vector<std::string> replayed;
    auto j = open(replayed);
    ASSERT_TRUE(j.is_ok()) << j.status().to_string();
    ASSERT_EQ(replayed.size(), 3u);
    EXPECT_EQ(replayed[0], "first");
    EXPECT_EQ(replayed[1], "");
    EXPECT_EQ(replayed[2].size(), 100'000u);
    const std::string more = "fourth";
    ASSERT_TRUE((*j)->append(std::as_bytes(std::span(more))).is_ok());
  }
  std::vector<std::string> replayed;
  ASSERT_TRUE(open(replayed).is_ok());
  ASSERT_EQ(replayed.size(), 4u);
  EXPECT_EQ(replayed[3], "fourth");
}

TEST_F(JournalTest, EveryTornTailIsDroppedAndAppendsContinueAfterTheLastGoodRecord) {
  write_records({"alpha", "beta", "gamma"});
  const auto whole = contents();
  const size_t third = whole.size() - (kRecordOverheadBytes + 5);  // where "gamma" starts
  for (size_t cut = third + 1; cut < whole.size(); ++cut) {
    overwrite({whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(cut)});
    std::vector<std::string> replayed;
    ReplayStats stats;
    auto j = open(replayed, &stats);
    ASSERT_TRUE(j.is_ok()) << "cut at " << cut << ": " << j.status().to_string();
    EXPECT_TRUE(stats.torn_tail_dropped);
    ASSERT_EQ(replayed, (std::vector<std::string>{"alpha", "beta"})) << "cut at " << cut;
    const std::string next = "delta";
    ASSERT_TRUE((*j)->append(std::as_bytes(std::span(next))).is_ok());
    j->reset();
    replayed.clear();
    ASSERT_TRUE(open(replayed).is_ok());
    ASSERT_EQ(replayed, (std::vector<std::string>{"alpha", "beta", "delta"}));
    overwrite(whole);
  }
}

TEST_F(JournalTest, AGarbledLastRecordIsTornButAZeroFilledTailIsToo) {
  write_records({"alpha", "beta"});
  auto bytes = contents();
  bytes[bytes.size() - 6] ^= 0x5a;  // inside "beta"'s payload
  overwrite(bytes);
  EXPECT_EQ(replay_dropping_a_torn_tail(), std::vector<std::string>{"alpha"});

  write_records({"gamma"});
  bytes = contents();
  bytes.insert(bytes.end(), 4096, 0);  // a crash left preallocated zeros
  overwrite(bytes);
  EXPECT_EQ(replay_dropping_a_torn_tail(), (std::vector<std::string>{"alpha", "gamma"}));
}

TEST_F(JournalTest, AGarbledLastRecordFollowedByZerosIsTorn) {
  write_records({"alpha", "beta"});
  auto bytes = contents();
  bytes[bytes.size() - 6] ^= 0x5a;     // inside "beta"'s payload; its length checks out
  bytes.insert(bytes.end(), 4096, 0);  // and the file went on with zeros
  overwrite(bytes);
  EXPECT_EQ(replay_dropping_a_torn_tail(), std::vector<std::string>{"alpha"});
  // Cut off: what is appended next replays after "alpha".
  write_records({"gamma"});
  std::vector<std::string> replayed;
  ASSERT_TRUE(open(replayed).is_ok());
  EXPECT_EQ(replayed, (std::vector<std::string>{"alpha", "gamma"}));
}

TEST_F(JournalTest, DamageBeforeTheEndRefusesToStartNamingFileAndOffset) {
  write_records({"alpha", "beta", "gamma"});
  const auto whole = contents();
  const size_t beta = kJournalHeaderBytes + kRecordOverheadBytes + 5;
  struct Damage {
    size_t offset;
    const char* what;
  };
  for (const Damage& d : {Damage{beta + 8, "payload fails its checksum"},
                          Damage{beta + 1, "length fails its checksum"}}) {
    auto bytes = whole;
    bytes[d.offset] ^= 0x01;
    overwrite(bytes);
    std::vector<std::string> replayed;
    auto j = open(replayed);
    ASSERT_FALSE(j.is_ok());
    EXPECT_EQ(j.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(j.status().message().find(path()), std::string::npos) << j.status().to_string();
    EXPECT_NE(j.status().message().find(fmt::format("offset {}", beta)), std::string::npos)
        << j.status().to_string();
    EXPECT_NE(j.status().message().find(d.what), std::string::npos) << j.status().to_string();
  }
}

TEST_F(JournalTest, AnotherFormatVersionOrAForeignFileIsRefused) {
  write_records({"alpha"});
  auto bytes = contents();
  bytes[4] = 9;  // version
  overwrite(bytes);
  std::vector<std::string> replayed;
  auto j = open(replayed);
  EXPECT_EQ(j.status().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(j.status().message().find("version 9"), std::string::npos);
  bytes[0] = 'X';
  overwrite(bytes);
  EXPECT_EQ(open(replayed).status().code(), StatusCode::kDataLoss);
}

TEST_F(JournalTest, AnApplyErrorStopsTheReplayAtItsRecord) {
  write_records({"good", "bad", "unreached"});
  std::vector<std::string> replayed;
  auto j = Journal::open(
      dir_.string(), Durability::kOs, [&](std::span<const std::byte> payload, uint64_t) -> Status {
        std::string s(reinterpret_cast<const char*>(payload.data()), payload.size());
        if (s == "bad") return internal_error("cannot apply");
        replayed.push_back(s);
        return Status::ok();
      });
  ASSERT_FALSE(j.is_ok());
  EXPECT_NE(j.status().message().find("cannot apply"), std::string::npos);
  EXPECT_EQ(replayed, std::vector<std::string>{"good"});
}

// A write that fails part-way (no space left; here the file size limit)
// leaves part of a record in the file. It must be cut off again: appends that
// followed the torn bytes would make the next start refuse the journal.
TEST_F(JournalTest, AFailedAppendIsCutOffAndLaterAppendsReplay) {
  std::vector<std::string> none;
  auto j = open(none);
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  const std::string first = "first";
  ASSERT_TRUE((*j)->append(std::as_bytes(std::span(first))).is_ok());
  const uint64_t size = (*j)->size();

  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  if (saved.rlim_cur != RLIM_INFINITY && saved.rlim_cur < size + 1000) {
    GTEST_SKIP() << "the file size limit is already below what the test needs";
  }
  // Over the limit, write(2) stores what fits, then fails with EFBIG
  // instead of raising SIGXFSZ.
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = saved;
  limited.rlim_cur = size + 5;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string second(100, 'x');
  const Status failed = (*j)->append(std::as_bytes(std::span(second)));
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(failed.is_ok());
  EXPECT_EQ(failed.code(), StatusCode::kIoError);
  EXPECT_NE(failed.message().find(path()), std::string::npos) << failed.to_string();
  EXPECT_TRUE((*j)->usable());
  EXPECT_EQ((*j)->size(), size);
  EXPECT_EQ(contents().size(), size);

  const std::string third = "third";
  ASSERT_TRUE((*j)->append(std::as_bytes(std::span(third))).is_ok());
  ASSERT_TRUE((*j)->sync().is_ok());
  j->reset();
  std::vector<std::string> replayed;
  ReplayStats stats;
  auto reopened = open(replayed, &stats);
  ASSERT_TRUE(reopened.is_ok()) << reopened.status().to_string();
  EXPECT_FALSE(stats.torn_tail_dropped);
  EXPECT_EQ(replayed, (std::vector<std::string>{"first", "third"}));
}

TEST_F(JournalTest, ARewriteReplacesTheJournalAndAppendsFollowIt) {
  write_records({"old 1", "old 2", "old 3"});
  {
    std::vector<std::string> replayed;
    auto j = open(replayed);
    ASSERT_TRUE(j.is_ok()) << j.status().to_string();
    const std::vector<std::string> snapshot{"new 1", std::string(5'000'000, 'y')};
    ASSERT_TRUE((*j)->rewrite(snapshot).is_ok());
    EXPECT_EQ((*j)->size(), contents().size());
    const std::string more = "appended";
    ASSERT_TRUE((*j)->append(std::as_bytes(std::span(more))).is_ok());
  }
  EXPECT_FALSE(std::filesystem::exists(path() + ".tmp"));
  std::vector<std::string> replayed;
  ReplayStats stats;
  ASSERT_TRUE(open(replayed, &stats).is_ok());
  EXPECT_FALSE(stats.torn_tail_dropped);
  ASSERT_EQ(replayed.size(), 3u);
  EXPECT_EQ(replayed[0], "new 1");
  EXPECT_EQ(replayed[1].size(), 5'000'000u);
  EXPECT_EQ(replayed[2], "appended");
}

// A crash after the snapshot was written but before the rename: the
// temporary file is whole, and still not the journal.
TEST_F(JournalTest, ATemporaryFileLeftByACrashBeforeTheRenameIsRemovedAtStart) {
  write_records({"snapshot"});
  std::filesystem::rename(path(), path() + ".tmp");
  write_records({"old 1", "old 2"});
  std::vector<std::string> replayed;
  ReplayStats stats;
  ASSERT_TRUE(open(replayed, &stats).is_ok());
  EXPECT_EQ(replayed, (std::vector<std::string>{"old 1", "old 2"}));
  EXPECT_FALSE(stats.torn_tail_dropped);
  EXPECT_FALSE(std::filesystem::exists(path() + ".tmp"));
}

TEST_F(JournalTest, AFailedRewriteLeavesTheOldJournalInUse) {
  write_records({"old 1", "old 2"});
  std::vector<std::string> none;
  auto j = open(none);
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  const uint64_t size = (*j)->size();
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  if (saved.rlim_cur != RLIM_INFINITY && saved.rlim_cur < 100'000) {
    GTEST_SKIP() << "the file size limit is already below what the test needs";
  }
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = saved;
  limited.rlim_cur = 50'000;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::vector<std::string> snapshot{std::string(60'000, 'z')};
  const Status failed = (*j)->rewrite(snapshot);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(failed.is_ok());
  EXPECT_TRUE((*j)->usable());
  EXPECT_EQ((*j)->size(), size);
  EXPECT_FALSE(std::filesystem::exists(path() + ".tmp"));
  const std::string more = "old 3";
  ASSERT_TRUE((*j)->append(std::as_bytes(std::span(more))).is_ok());
  j->reset();
  std::vector<std::string> replayed;
  ASSERT_TRUE(open(replayed).is_ok());
  EXPECT_EQ(replayed, (std::vector<std::string>{"old 1", "old 2", "old 3"}));
}

}  // namespace
}  // namespace stoker::coordinator
