// Host memory resource and memory-kind names. Page-aligned so that buffers
// can be registered with the NIC without partial pages.
#include <fmt/format.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "stoker/memory.h"

namespace stoker {
namespace {

class HostMemoryResource final : public MemoryResource {
 public:
  MemoryKind kind() const override { return MemoryKind::kHost; }
  Result<Buffer> allocate(size_t bytes) override {
    if (bytes == 0) return invalid_argument("cannot allocate 0 bytes");
    // mmap rather than malloc: the memory is page-aligned, zero-filled lazily,
    // and goes back to the OS when the buffer is destroyed.
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return resource_exhausted(
          fmt::format("mmap of {} bytes of host memory failed: {}", bytes, std::strerror(errno)));
    }
    madvise(p, bytes, MADV_HUGEPAGE);
    return Buffer(p, bytes, MemoryKind::kHost, -1, [bytes](void* q) { munmap(q, bytes); });
  }
};

}  // namespace

std::string_view memory_kind_name(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kHost:
      return "host";
    case MemoryKind::kPinned:
      return "pinned";
    case MemoryKind::kDevice:
      return "device";
  }
  return "unknown";
}

std::optional<MemoryKind> parse_memory_kind(std::string_view name) {
  for (auto kind : {MemoryKind::kHost, MemoryKind::kPinned, MemoryKind::kDevice}) {
    if (name == memory_kind_name(kind)) return kind;
  }
  return std::nullopt;
}

std::shared_ptr<MemoryResource> host_memory_resource() {
  return std::make_shared<HostMemoryResource>();
}

}  // namespace stoker
