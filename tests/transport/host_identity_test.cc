// Host identity, and which shared-memory transports UCX_TLS leaves UCX.
#include "transport/host_identity.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace stoker {
namespace {

// Sets UCX_TLS (or unsets it) for one scope, restoring what was there.
class ScopedTls {
 public:
  explicit ScopedTls(const char* value) {
    if (const char* old = std::getenv("UCX_TLS")) saved_ = old;
    if (value == nullptr) {
      unsetenv("UCX_TLS");
    } else {
      setenv("UCX_TLS", value, 1);
    }
  }
  ScopedTls(const ScopedTls&) = delete;
  ScopedTls& operator=(const ScopedTls&) = delete;
  ~ScopedTls() {
    if (saved_) {
      setenv("UCX_TLS", saved_->c_str(), 1);
    } else {
      unsetenv("UCX_TLS");
    }
  }

 private:
  std::optional<std::string> saved_;
};

TEST(HostIdentity, IsStableWithinAProcess) {
  const std::string id = host_identity();
  EXPECT_FALSE(id.empty());
  EXPECT_NE(id.find("/net:"), std::string::npos) << id;
  EXPECT_EQ(host_identity(), id);
}

struct TlsCase {
  const char* tls;  // nullptr: unset
  bool shared_memory;
  bool mapped_shared_memory;
};

TEST(UcxTls, SaysWhichSharedMemoryTransportsUcxMayOpen) {
  // UCX's aliases: sm and shm are posix, sysv, xpmem, knem and cma; mm is
  // posix, sysv and xpmem, the transports whose receive pools peers map.
  const TlsCase cases[] = {
      {nullptr, true, true},      // unset: every transport
      {"all", true, true},        // every transport
      {"sm,tcp", true, true},     // the usual choice on one host
      {"shm", true, true},        // sm's other name
      {"mm,tcp", true, true},     // the mapped family alone
      {"posix,tcp", true, true},  // one of the mapped family
      {"sysv", true, true},       // another
      {"cma,tcp", true, false},   // one copy between processes, no mapped pool
      {"tcp", false, false},      // no shared memory at all
      {"^sysv", false, false},    // an exclusion that names one rules the family out
      {"^tcp", true, true},       // an exclusion of something else
      {"^", true, true},          // excludes nothing
  };

  for (const TlsCase& c : cases) {
    ScopedTls tls(c.tls);
    const std::string name = c.tls == nullptr ? "(unset)" : c.tls;
    EXPECT_EQ(ucx_shared_memory_enabled(), c.shared_memory) << name;
    EXPECT_EQ(ucx_mapped_shared_memory_enabled(), c.mapped_shared_memory) << name;
  }
}

}  // namespace
}  // namespace stoker
