// StreamRef: a non-owning handle to the CUDA stream work is ordered on, usable
// in the public API without including CUDA headers. In a build of stoker
// without CUDA the type still exists; every operation that takes one runs
// synchronously on host threads before it returns, so any StreamRef will do.
#pragma once

namespace stoker {

class StreamRef {
 public:
  // The legacy default stream of the current device (cudaStream_t 0).
  constexpr StreamRef() = default;
  // Wraps a cudaStream_t (pass it as void*: `StreamRef(static_cast<void*>(stream))`,
  // or torch's `torch.cuda.current_stream().cuda_stream` cast to a pointer).
  constexpr explicit StreamRef(void* cuda_stream) : handle_(cuda_stream) {}

  // The cudaStream_t, as void*; nullptr for the default stream.
  constexpr void* handle() const { return handle_; }
  constexpr bool is_default() const { return handle_ == nullptr; }

  friend constexpr bool operator==(StreamRef a, StreamRef b) { return a.handle_ == b.handle_; }
  friend constexpr bool operator!=(StreamRef a, StreamRef b) { return !(a == b); }

 private:
  void* handle_ = nullptr;
};

}  // namespace stoker
