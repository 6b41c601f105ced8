// RAII owners of UCX memory registrations (ucp_mem_map: existing memory, or
// memory UCX allocates) and of remote keys unpacked from a peer (ucp_rkey),
// used by put mode and zero-copy receives.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "stoker/memory.h"
#include "stoker/result.h"
#include "transport/ucx/context.h"

namespace stoker::ucx {

ucs_memory_type_t to_ucs_memory_type(MemoryKind kind);

class MemoryRegion {
 public:
  // Registers existing memory. Device memory is refused with a precise error
  // when the loaded UCX cannot handle CUDA memory.
  static Result<std::unique_ptr<MemoryRegion>> map(std::shared_ptr<Context> context, void* address,
                                                   size_t length, MemoryKind kind);
  // Host memory that UCX allocates and the region owns (ucp_mem_map with
  // UCP_MEM_MAP_ALLOCATE). UCX takes it from its first allocator that works
  // (UCX_ALLOC_PRIO): a System V or POSIX shared-memory segment when the
  // context has a shared-memory transport, which a peer on this host can then
  // map through the region's remote key (RemoteKey::maps_locally). Faulted in
  // before it is returned.
  static Result<std::unique_ptr<MemoryRegion>> allocate(std::shared_ptr<Context> context,
                                                        size_t length);
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  ~MemoryRegion();

  ucp_mem_h get() const { return memh_; }
  std::byte* data() const { return base_; }
  size_t size() const { return length_; }
  ucs_memory_type_t memory_type() const { return type_; }
  bool contains(const void* p, size_t n) const;
  // The remote key a peer needs to put into this region.
  Result<std::vector<std::byte>> pack_rkey() const;

 private:
  MemoryRegion() = default;
  std::shared_ptr<Context> context_;
  ucp_mem_h memh_ = nullptr;
  std::byte* base_ = nullptr;
  size_t length_ = 0;
  ucs_memory_type_t type_ = UCS_MEMORY_TYPE_HOST;
};

class RemoteKey {
 public:
  static Result<std::unique_ptr<RemoteKey>> unpack(ucp_ep_h ep, std::span<const std::byte> packed);
  RemoteKey(const RemoteKey&) = delete;
  RemoteKey& operator=(const RemoteKey&) = delete;
  ~RemoteKey();
  ucp_rkey_h get() const { return rkey_; }
  // True when the remote memory at `remote_address` is mapped into this
  // process (ucp_rkey_ptr): a shared-memory segment of a peer on this host.
  // A put there is then one CPU copy into the peer's memory.
  bool maps_locally(uint64_t remote_address) const;

 private:
  RemoteKey() = default;
  ucp_rkey_h rkey_ = nullptr;
};

}  // namespace stoker::ucx
