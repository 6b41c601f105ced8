// CUDA streams, events, the device guard and async copies (see stream.h); the
// synchronous stand-ins of a build without CUDA.
#include "gpu/stream.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "gpu/cuda_status.h"

namespace stoker {

#ifdef STOKER_HAVE_CUDA
namespace {
cudaStream_t cuda_stream(StreamRef stream) { return static_cast<cudaStream_t>(stream.handle()); }
}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: no device is an answer here, not an error
    return 0;
  }
  return count;
}

Result<ScopedDevice> ScopedDevice::enter(int device) {
  int current = 0;
  STOKER_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&current), "reading the current CUDA device"));
  if (current == device) return ScopedDevice(-1);
  STOKER_RETURN_IF_ERROR(
      cuda_status(cudaSetDevice(device), fmt::format("selecting CUDA device {}", device)));
  return ScopedDevice(current);
}

ScopedDevice::~ScopedDevice() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

Result<CudaStream> CudaStream::create(int device) {
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(device));
  cudaStream_t stream = nullptr;
  STOKER_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                     fmt::format("creating a CUDA stream on device {}", device)));
  CudaStream out;
  out.stream_ = stream;
  out.device_ = device;
  return out;
}

void CudaStream::reset() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  stream_ = nullptr;
}

Result<CudaEvent> CudaEvent::create(int device, Kind kind) {
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(device));
  cudaEvent_t event = nullptr;
  const unsigned flags = kind == Kind::kTiming ? cudaEventDefault : cudaEventDisableTiming;
  STOKER_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&event, flags),
                                     fmt::format("creating a CUDA event on device {}", device)));
  CudaEvent out;
  out.event_ = event;
  out.device_ = device;
  out.kind_ = kind;
  return out;
}

void CudaEvent::reset() {
  if (event_ != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  event_ = nullptr;
}

Status CudaEvent::record(StreamRef stream) {
  if (event_ == nullptr) return failed_precondition("recording an event that was never created");
  return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream(stream)),
                     fmt::format("recording an event of device {}", device_));
}

Status CudaEvent::enqueue_wait(StreamRef waiter) const {
  if (event_ == nullptr) return failed_precondition("waiting for an event that was never created");
  return cuda_status(cudaStreamWaitEvent(cuda_stream(waiter), static_cast<cudaEvent_t>(event_), 0),
                     "making a stream wait for an event");
}

Result<bool> CudaEvent::is_complete() const {
  if (event_ == nullptr) return failed_precondition("querying an event that was never created");
  const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (err == cudaErrorNotReady) return false;
  STOKER_RETURN_IF_ERROR(cuda_status(err, "querying an event"));
  return true;
}

Status CudaEvent::synchronize() const {
  if (event_ == nullptr) return failed_precondition("waiting for an event that was never created");
  return cuda_status(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)),
                     "waiting for an event");
}

Result<float> CudaEvent::elapsed_ms_since(const CudaEvent& start) const {
  if (kind_ != Kind::kTiming || start.kind_ != Kind::kTiming) {
    return failed_precondition("elapsed time needs two timing events");
  }
  float ms = 0;
  STOKER_RETURN_IF_ERROR(
      cuda_status(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_),
                                       static_cast<cudaEvent_t>(event_)),
                  "measuring the time between two events"));
  return ms;
}

Status copy_async(void* dst, const void* src, size_t bytes, StreamRef stream) {
  if (bytes == 0) return Status::ok();
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda_stream(stream)),
                     fmt::format("enqueueing a copy of {} bytes", bytes));
}

Status memset_async(void* dst, int value, size_t bytes, StreamRef stream) {
  if (bytes == 0) return Status::ok();
  return cuda_status(cudaMemsetAsync(dst, value, bytes, cuda_stream(stream)),
                     fmt::format("enqueueing a memset of {} bytes", bytes));
}

Status synchronize_stream(StreamRef stream) {
  return cuda_status(cudaStreamSynchronize(cuda_stream(stream)), "waiting for a stream");
}

Result<int> stream_device(StreamRef stream) {
  int device = -1;
  if (stream.is_default()) {
    STOKER_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&device), "reading the current CUDA device"));
    return device;
  }
  STOKER_RETURN_IF_ERROR(cuda_status(cudaStreamGetDevice(cuda_stream(stream), &device),
                                     "finding the device of a stream"));
  return device;
}

#else  // !STOKER_HAVE_CUDA: synchronous stand-ins

int cuda_device_count() { return 0; }

Result<ScopedDevice> ScopedDevice::enter(int /*device*/) { return ScopedDevice(-1); }
ScopedDevice::~ScopedDevice() = default;

Result<CudaStream> CudaStream::create(int device) {
  CudaStream out;
  out.device_ = device;
  return out;
}
void CudaStream::reset() {}

Result<CudaEvent> CudaEvent::create(int device, Kind kind) {
  CudaEvent out;
  out.device_ = device;
  out.kind_ = kind;
  return out;
}
void CudaEvent::reset() {}

Status CudaEvent::record(StreamRef /*stream*/) {
  recorded_at_ = std::chrono::steady_clock::now();
  return Status::ok();
}
Status CudaEvent::enqueue_wait(StreamRef /*waiter*/) const { return Status::ok(); }
Result<bool> CudaEvent::is_complete() const { return true; }
Status CudaEvent::synchronize() const { return Status::ok(); }

Result<float> CudaEvent::elapsed_ms_since(const CudaEvent& start) const {
  if (kind_ != Kind::kTiming || start.kind_ != Kind::kTiming) {
    return failed_precondition("elapsed time needs two timing events");
  }
  return std::chrono::duration<float, std::milli>(recorded_at_ - start.recorded_at_).count();
}

Status copy_async(void* dst, const void* src, size_t bytes, StreamRef /*stream*/) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
  return Status::ok();
}

Status memset_async(void* dst, int value, size_t bytes, StreamRef /*stream*/) {
  if (bytes != 0) std::memset(dst, value, bytes);
  return Status::ok();
}

Status synchronize_stream(StreamRef /*stream*/) { return Status::ok(); }

Result<int> stream_device(StreamRef /*stream*/) { return -1; }

#endif  // STOKER_HAVE_CUDA

// Moves are the same in both builds: the handle changes owner.
ScopedDevice::ScopedDevice(ScopedDevice&& other) noexcept
    : previous_(std::exchange(other.previous_, -1)) {}

CudaStream::CudaStream(CudaStream&& other) noexcept { *this = std::move(other); }
CudaStream& CudaStream::operator=(CudaStream&& other) noexcept {
  if (this != &other) {
    reset();
    stream_ = std::exchange(other.stream_, nullptr);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}
CudaStream::~CudaStream() { reset(); }

CudaEvent::CudaEvent(CudaEvent&& other) noexcept { *this = std::move(other); }
CudaEvent& CudaEvent::operator=(CudaEvent&& other) noexcept {
  if (this != &other) {
    reset();
    event_ = std::exchange(other.event_, nullptr);
    device_ = std::exchange(other.device_, -1);
    kind_ = other.kind_;
    recorded_at_ = other.recorded_at_;
  }
  return *this;
}
CudaEvent::~CudaEvent() { reset(); }

}  // namespace stoker
