// Faulting memory in: MADV_POPULATE_WRITE, or a write per page before 5.14.
#include "common/fault_in.h"

#include <sys/mman.h>
#include <unistd.h>

namespace stoker {

void fault_in(std::byte* p, size_t bytes) {
  if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0) return;
  // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch each page instead.
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (size_t offset = 0; offset < bytes; offset += page) {
    static_cast<volatile std::byte*>(p)[offset] = std::byte{0};
  }
}

}  // namespace stoker
