// The device execution context of gpu/: RAII over CUDA streams and events, the
// current-device guard, and asynchronous copies, all returning Status.
//
// In a build without CUDA these types exist so that callers are written once:
// work is synchronous there, so a stream is an empty handle, an event is
// complete as soon as it is recorded (it keeps the host time of that moment,
// for benchmarks), waits are no-ops and copies are memcpy.
#pragma once

#include <chrono>
#include <cstddef>

#include "stoker/result.h"
#include "stoker/status.h"
#include "stoker/stream.h"

namespace stoker {

// CUDA devices this process can use: 0 in a build without CUDA, or when CUDA
// finds no device or no driver (not an error: the caller skips GPU work).
int cuda_device_count();

// Makes `device` the calling thread's current CUDA device for the guard's
// lifetime, then restores the previous one. No-op without CUDA.
class ScopedDevice {
 public:
  static Result<ScopedDevice> enter(int device);
  ScopedDevice(ScopedDevice&& other) noexcept;
  ScopedDevice& operator=(ScopedDevice&&) = delete;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice();

 private:
  explicit ScopedDevice(int previous) : previous_(previous) {}
  int previous_ = -1;  // -1: nothing to restore
};

// An owned, non-blocking CUDA stream (it does not synchronise with the legacy
// default stream). Destroying it does not wait: work already enqueued still
// completes, as cudaStreamDestroy specifies.
class CudaStream {
 public:
  CudaStream() = default;
  static Result<CudaStream> create(int device);
  CudaStream(CudaStream&& other) noexcept;
  CudaStream& operator=(CudaStream&& other) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream();

  StreamRef ref() const { return StreamRef(stream_); }
  int device() const { return device_; }

 private:
  void reset();
  void* stream_ = nullptr;  // cudaStream_t
  int device_ = -1;
};

// An owned CUDA event. Ordering events (the default) are created with
// cudaEventDisableTiming, the cheapest kind; timing events are for benchmarks.
class CudaEvent {
 public:
  enum class Kind { kOrdering, kTiming };

  CudaEvent() = default;
  static Result<CudaEvent> create(int device, Kind kind = Kind::kOrdering);
  CudaEvent(CudaEvent&& other) noexcept;
  CudaEvent& operator=(CudaEvent&& other) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent();

  // Captures the work enqueued on `stream` so far.
  Status record(StreamRef stream);
  // Makes work enqueued on `waiter` from now on wait for the recorded work,
  // without blocking the host (cudaStreamWaitEvent).
  Status enqueue_wait(StreamRef waiter) const;
  // Whether the recorded work has completed (cudaEventQuery); never blocks.
  Result<bool> is_complete() const;
  // Blocks the calling thread until the recorded work has completed: for
  // shutdown, tests and benchmarks, not for the steady state.
  Status synchronize() const;
  // Milliseconds from `start`'s recording to this one's; both timing events.
  Result<float> elapsed_ms_since(const CudaEvent& start) const;

 private:
  void reset();
  void* event_ = nullptr;  // cudaEvent_t
  int device_ = -1;
  Kind kind_ = Kind::kOrdering;
  std::chrono::steady_clock::time_point recorded_at_{};  // builds without CUDA
};

// cudaMemcpyAsync(cudaMemcpyDefault) on `stream`: any pair of host, pinned and
// device memory. Pageable host memory makes CUDA stage the copy and return
// only when the source has been read; pinned memory is truly asynchronous.
Status copy_async(void* dst, const void* src, size_t bytes, StreamRef stream);
// cudaMemsetAsync on `stream`.
Status memset_async(void* dst, int value, size_t bytes, StreamRef stream);
// Blocks until the work enqueued on `stream` has completed (tests, benchmarks).
Status synchronize_stream(StreamRef stream);
// The device `stream` belongs to; the current device for the default stream;
// -1 in a build without CUDA.
Result<int> stream_device(StreamRef stream);

}  // namespace stoker
