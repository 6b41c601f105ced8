// The landing decision: requested memory kind x build x UCX capabilities.
#include <fmt/format.h>

#include "stoker/landing.h"

namespace stoker {

bool build_has_cuda() {
#ifdef STOKER_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

Result<LandingPlan> plan_landing(MemoryKind requested, const TransportInfo& transport) {
  if (requested == MemoryKind::kHost) return LandingPlan{};
  if (!build_has_cuda()) {
    return unsupported(fmt::format(
        "{} landing needs CUDA, and this build of stoker has none (configured with "
        "STOKER_CUDA=OFF or without nvcc); land in host memory or rebuild with -DSTOKER_CUDA=ON",
        memory_kind_name(requested)));
  }
  if (requested == MemoryKind::kPinned || transport.cuda_memory) {
    return LandingPlan{.land_in = requested, .copy_to_device = false, .note = {}};
  }
  return LandingPlan{
      .land_in = MemoryKind::kPinned,
      .copy_to_device = true,
      .note = fmt::format("{} was built without CUDA support, so batches cannot land in GPU "
                          "memory directly: they land in pinned host memory and are copied to "
                          "the GPU asynchronously (load a CUDA-enabled UCX >= 1.16 for direct "
                          "landing)",
                          transport.ucx_version)};
}

}  // namespace stoker
