// parallel_for: the one way the collation kernels run. Under nvcc, on the
// device executor, it launches a grid-stride CUDA kernel on the caller's
// stream; everywhere else it is an OpenMP loop on host threads. Kernels are
// functors with a templated `operator()(Index item)`, called once per work
// item; Index is uint32_t when the item count allows (cheaper division on the
// GPU) and uint64_t otherwise.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "gpu/collate/kernels.h"
#include "gpu/collate/numeric.h"
#include "stoker/status.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include "gpu/cuda_status.h"
#include "gpu/stream.h"
#endif

namespace stoker::collate_detail {

// Host loops below this many items stay on the calling thread: waking the
// OpenMP team costs more than they do.
inline constexpr uint64_t kSerialItems = 2048;

template <typename Index, typename Functor>
void run_on_host(uint64_t items, const Functor& functor) {
  const auto n = static_cast<int64_t>(items);
#pragma omp parallel for schedule(static) if (items >= kSerialItems)
  for (int64_t i = 0; i < n; ++i) functor(static_cast<Index>(i));
}

#if defined(__CUDACC__)
inline constexpr int kThreadsPerBlock = 256;

template <typename Index, typename Functor>
__global__ void __launch_bounds__(kThreadsPerBlock)
    grid_stride_kernel(Index items, const __grid_constant__ Functor functor) {
  const Index stride = static_cast<Index>(gridDim.x) * kThreadsPerBlock;
  for (Index i = static_cast<Index>(blockIdx.x) * kThreadsPerBlock + threadIdx.x; i < items;
       i += stride) {
    functor(i);
  }
}

template <typename Index, typename Functor>
Status run_on_device(uint64_t items, const Functor& functor, const Executor& executor,
                     const char* what) {
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(executor.device));
  int sms = 0;
  STOKER_RETURN_IF_ERROR(cuda_status(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, executor.device), what));
  int resident = 0;
  STOKER_RETURN_IF_ERROR(
      cuda_status(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                      &resident, grid_stride_kernel<Index, Functor>, kThreadsPerBlock, 0),
                  what));
  // One full wave of resident blocks; the grid-stride loop covers the rest,
  // so no block waits for a slot and none idles at the tail.
  const uint64_t needed = (items + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const uint64_t wave =
      static_cast<uint64_t>(sms) * static_cast<uint64_t>(resident > 0 ? resident : 1);
  const auto blocks = static_cast<unsigned>(needed < wave ? needed : wave);
  grid_stride_kernel<Index, Functor>
      <<<blocks, kThreadsPerBlock, 0, static_cast<cudaStream_t>(executor.stream)>>>(
          static_cast<Index>(items), functor);
  return cuda_status(cudaGetLastError(), what);
}
#endif

// Runs functor(i) for every i in [0, items) where `executor` says.
template <typename Functor>
Status parallel_for(const Executor& executor, uint64_t items, const Functor& functor,
                    const char* what) {
  if (items == 0) return Status::ok();
  // uint32_t indices while i + the grid stride cannot wrap.
  const bool narrow = items < (uint64_t{1} << 31);
  if (executor.on_device) {
#if defined(__CUDACC__)
    return narrow ? run_on_device<uint32_t>(items, functor, executor, what)
                  : run_on_device<uint64_t>(items, functor, executor, what);
#else
    return internal_error(std::string(what) + ": device execution in code built without CUDA");
#endif
  }
  if (narrow) {
    run_on_host<uint32_t>(items, functor);
  } else {
    run_on_host<uint64_t>(items, functor);
  }
  return Status::ok();
}

}  // namespace stoker::collate_detail
