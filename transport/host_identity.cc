// Host identity from the kernel's boot id and the network namespace inode;
// UCX_TLS parsed the way UCX reads it (comma list, optional leading '^').
#include "transport/host_identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string_view>

namespace stoker {

std::string host_identity() {
  std::string boot_id;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot_id;
  if (boot_id.empty()) {
    char name[256] = {};
    gethostname(name, sizeof name - 1);
    boot_id = name;
  }
  struct stat ns {};
  const auto netns = stat("/proc/self/ns/net", &ns) == 0 ? ns.st_ino : 0;
  return boot_id + "/net:" + std::to_string(netns);
}

namespace {

// Whether UCX_TLS lets UCX open any transport of `family` (names and the
// aliases that stand for them). An exclusion list ('^...') that names any of
// them counts as ruling the family out: a caller asks so that it can rely on
// the family, and that one answer is safe.
bool ucx_tls_allows(std::initializer_list<std::string_view> family) {
  const char* env = std::getenv("UCX_TLS");
  if (env == nullptr) return true;
  std::string_view tls(env);
  const bool exclude = tls.starts_with('^');
  if (exclude) tls.remove_prefix(1);
  bool listed = false;
  std::stringstream list{std::string(tls)};
  for (std::string item; std::getline(list, item, ',');) {
    if (item == "all" || std::find(family.begin(), family.end(), item) != family.end()) {
      listed = true;
    }
  }
  return exclude ? !listed || tls.empty() : listed;
}

}  // namespace

bool ucx_shared_memory_enabled() {
  return ucx_tls_allows({"sm", "shm", "mm", "posix", "sysv", "cma", "knem", "xpmem"});
}

bool ucx_mapped_shared_memory_enabled() {
  return ucx_tls_allows({"sm", "shm", "mm", "posix", "sysv", "xpmem"});
}

}  // namespace stoker
