// CUDA runtime errors as Status values (see cuda_status.h).
#include "gpu/cuda_status.h"

#ifdef STOKER_HAVE_CUDA
#include <fmt/format.h>

namespace stoker {

Status cuda_status(cudaError_t err, std::string_view what) {
  if (err == cudaSuccess) return Status::ok();
  const StatusCode code = err == cudaErrorMemoryAllocation ? StatusCode::kResourceExhausted
                          : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver)
                              ? StatusCode::kUnsupported
                              : StatusCode::kIoError;
  return {code, fmt::format("{}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err))};
}

}  // namespace stoker
#endif
