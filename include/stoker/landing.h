// Where batches land. Device landing needs both a CUDA build of stoker and a
// UCX that can move CUDA memory; when UCX cannot, batches land in pinned
// memory and the consumer copies them to the GPU asynchronously.
#pragma once

#include <string>

#include "stoker/memory.h"
#include "stoker/result.h"

namespace stoker {

struct TransportInfo {
  std::string ucx_version;   // "UCX 1.13.1"
  bool cuda_memory = false;  // UCX reports UCS_MEMORY_TYPE_CUDA support
};

// Asks the loaded UCX what it can do (ucp_context_query). Implemented in stoker_transport.
Result<TransportInfo> query_transport();

// True when this build of stoker has the CUDA backend (STOKER_CUDA).
bool build_has_cuda();

struct LandingPlan {
  MemoryKind land_in = MemoryKind::kHost;
  bool copy_to_device = false;  // landed in pinned memory; the consumer copies to the GPU
  std::string note;             // non-empty when the plan differs from the request: log it once
};

// Decides where to land for a `requested` kind. Fails with kUnsupported,
// naming what is missing, when this build cannot provide the memory at all.
Result<LandingPlan> plan_landing(MemoryKind requested, const TransportInfo& transport);

}  // namespace stoker
