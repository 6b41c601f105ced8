// Memory registration, memory UCX allocates, and remote keys.
#include "transport/ucx/memory_region.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include "common/fault_in.h"
#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {

ucs_memory_type_t to_ucs_memory_type(MemoryKind kind) {
  // Pinned memory is host memory to UCX; only device memory is CUDA.
  return kind == MemoryKind::kDevice ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::map(std::shared_ptr<Context> context,
                                                        void* address, size_t length,
                                                        MemoryKind kind) {
  const ucs_memory_type_t type = to_ucs_memory_type(kind);
  if (!context->supports_memory_type(type)) {
    return unsupported(fmt::format(
        "{} cannot register {} memory: it was built without CUDA support (it reports host "
        "memory only). Land in pinned memory instead, or load a CUDA-enabled UCX (>= 1.16)",
        Context::version_string(), memory_kind_name(kind)));
  }
  std::unique_ptr<MemoryRegion> region(new MemoryRegion());
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = address;
  params.length = length;
  params.memory_type = type;
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_mem_map(context->get(), &params, &region->memh_),
               fmt::format("registering {} bytes of {} memory", length, memory_kind_name(kind))));
  region->context_ = std::move(context);
  region->base_ = static_cast<std::byte*>(address);
  region->length_ = length;
  region->type_ = type;
  return region;
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::allocate(std::shared_ptr<Context> context,
                                                             size_t length) {
  if (length == 0) return invalid_argument("cannot allocate 0 bytes");
  std::unique_ptr<MemoryRegion> region(new MemoryRegion());
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = nullptr;
  params.length = length;
  params.flags = UCP_MEM_MAP_ALLOCATE;
  params.memory_type = UCS_MEMORY_TYPE_HOST;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_mem_map(context->get(), &params, &region->memh_),
                                  fmt::format("allocating {} bytes of host memory", length)));
  region->context_ = std::move(context);  // from here on, the destructor unmaps
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_mem_query(region->memh_, &attr), "ucp_mem_query"));
  if (attr.address == nullptr || attr.length < length) {
    return internal_error(fmt::format("UCX allocated {} bytes at {} for a request of {}",
                                      attr.length, attr.address, length));
  }
  region->base_ = static_cast<std::byte*>(attr.address);
  region->length_ = length;
  // Huge pages where the segment can have them (shared memory gets them only
  // when the host allows it: shmem_enabled, or UCX's SHM_HUGETLB).
  madvise(region->base_, attr.length, MADV_HUGEPAGE);
  fault_in(region->base_, attr.length);
  return region;
}

bool MemoryRegion::contains(const void* p, size_t n) const {
  const auto* b = static_cast<const std::byte*>(p);
  return b >= base_ && n <= length_ && static_cast<size_t>(b - base_) <= length_ - n;
}

Result<std::vector<std::byte>> MemoryRegion::pack_rkey() const {
  void* buffer = nullptr;
  size_t size = 0;
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_rkey_pack(context_->get(), memh_, &buffer, &size), "ucp_rkey_pack"));
  std::vector<std::byte> out(static_cast<std::byte*>(buffer),
                             static_cast<std::byte*>(buffer) + size);
  ucp_rkey_buffer_release(buffer);
  return out;
}

MemoryRegion::~MemoryRegion() {
  if (memh_ != nullptr) ucp_mem_unmap(context_->get(), memh_);
}

Result<std::unique_ptr<RemoteKey>> RemoteKey::unpack(ucp_ep_h ep,
                                                     std::span<const std::byte> packed) {
  std::unique_ptr<RemoteKey> key(new RemoteKey());
  STOKER_RETURN_IF_ERROR(
      from_ucs(ucp_ep_rkey_unpack(ep, packed.data(), &key->rkey_), "unpacking a remote key"));
  return key;
}

bool RemoteKey::maps_locally(uint64_t remote_address) const {
  void* local = nullptr;
  return ucp_rkey_ptr(rkey_, remote_address, &local) == UCS_OK && local != nullptr;
}

RemoteKey::~RemoteKey() {
  if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
}

}  // namespace stoker::ucx
