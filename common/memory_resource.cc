// Host memory resource and memory-kind names. Page-aligned so that buffers
// can be registered with the NIC without partial pages.
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/fault_in.h"
#include "stoker/memory.h"

namespace stoker {
namespace {

class HostMemoryResource final : public MemoryResource {
 public:
  MemoryKind kind() const override { return MemoryKind::kHost; }
  Result<Buffer> allocate(size_t bytes) override {
    if (bytes == 0) return invalid_argument("cannot allocate 0 bytes");
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t length = (bytes + page - 1) / page * page;
    // A huge page or more starts on a huge-page boundary, so that all of it
    // can be huge pages: fewer TLB misses, and a peer reading it through
    // process_vm_readv (UCX's cma) pins one page per 2 MiB instead of 512.
    // (Transparent huge pages back only whole aligned 2 MiB extents.)
    const size_t align = length >= kHugePageBytes ? kHugePageBytes : page;
    // mmap rather than malloc: the memory goes back to the OS when the
    // buffer is destroyed. Map `align` more and trim both ends.
    const size_t mapped = length + align - page;
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      return resource_exhausted(
          fmt::format("mmap of {} bytes of host memory failed: {}", bytes, std::strerror(errno)));
    }
    auto* start = static_cast<std::byte*>(raw);
    const size_t head = (align - reinterpret_cast<uintptr_t>(raw) % align) % align;
    std::byte* p = start + head;
    if (head != 0) munmap(start, head);
    if (const size_t tail = mapped - head - length; tail != 0) munmap(p + length, tail);
    madvise(p, length, MADV_HUGEPAGE);
    fault_in(p, length);
    return Buffer(p, bytes, MemoryKind::kHost, -1, [length](void* q) { munmap(q, length); });
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
