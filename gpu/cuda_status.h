// cuda_status(): every CUDA runtime error becomes a stoker Status, with CUDA's
// own name and description of the error and what was being done. CUDA builds
// only.
#pragma once

#ifdef STOKER_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <string_view>

#include "stoker/status.h"

namespace stoker {

// OK for cudaSuccess; otherwise kResourceExhausted for out-of-memory,
// kUnsupported for a missing device or driver, kIoError for the rest.
Status cuda_status(cudaError_t err, std::string_view what);

}  // namespace stoker
#endif
