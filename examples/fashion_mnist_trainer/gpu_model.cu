// The CUDA side of gpu_model.h: one block per image for the forward pass
// (logits, softmax, cross-entropy and d loss / d logits), one thread per
// parameter for the update (its gradient summed over the batch).
#include "gpu_model.h"

#include <cuda_runtime.h>

#include <string>

namespace {

constexpr int kPixels = 28 * 28;
constexpr int kClasses = 10;
constexpr int kParameters = (kPixels + 1) * kClasses;  // weights [784, 10], then biases
constexpr int kForwardThreads = 128;
constexpr int kUpdateThreads = 256;

struct DeviceTotals {
  float loss;
  unsigned int correct;
  unsigned int seen;
};

// Block n: image n. Threads share the pixels, then a tree reduction per class.
__global__ void forward_kernel(const float* images, const int32_t* labels, const float* parameters,
                               float* dlogits, DeviceTotals* totals) {
  const int n = static_cast<int>(blockIdx.x);
  const int t = static_cast<int>(threadIdx.x);
  const float* x = images + static_cast<size_t>(n) * kPixels;
  float partial[kClasses] = {};
  for (int i = t; i < kPixels; i += kForwardThreads) {
    const float v = x[i];
    for (int c = 0; c < kClasses; ++c) partial[c] += v * parameters[i * kClasses + c];
  }
  __shared__ float sums[kClasses][kForwardThreads];
  for (int c = 0; c < kClasses; ++c) sums[c][t] = partial[c];
  __syncthreads();
  for (int stride = kForwardThreads / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      for (int c = 0; c < kClasses; ++c) sums[c][t] += sums[c][t + stride];
    }
    __syncthreads();
  }
  if (t != 0) return;
  const float* bias = parameters + kPixels * kClasses;
  float p[kClasses];
  int best = 0;
  for (int c = 0; c < kClasses; ++c) {
    p[c] = sums[c][0] + bias[c];
    if (p[c] > p[best]) best = c;
  }
  const float top = p[best];
  float sum = 0;
  for (int c = 0; c < kClasses; ++c) sum += (p[c] = expf(p[c] - top));
  for (int c = 0; c < kClasses; ++c) p[c] /= sum;
  const int y = labels[n];
  const bool valid = y >= 0 && y < kClasses;
  atomicAdd(&totals->loss, valid ? -logf(fmaxf(p[y], 1e-12f)) : 0.0f);
  atomicAdd(&totals->correct, valid && best == y ? 1u : 0u);
  atomicAdd(&totals->seen, 1u);
  if (dlogits != nullptr) {
    for (int c = 0; c < kClasses; ++c) {
      dlogits[n * kClasses + c] = valid ? p[c] - (c == y ? 1.0f : 0.0f) : 0.0f;
    }
  }
}

// Thread p: parameter p. Its gradient is the batch sum of input * dlogit.
__global__ void update_kernel(const float* images, const float* dlogits, int batch, float scale,
                              float* parameters) {
  const int p = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (p >= kParameters) return;
  const int i = p / kClasses, c = p % kClasses;
  float g = 0;
  for (int n = 0; n < batch; ++n) {
    const float input = i < kPixels ? images[static_cast<size_t>(n) * kPixels + i] : 1.0f;
    g += input * dlogits[n * kClasses + c];
  }
  parameters[p] -= scale * g;
}

stoker::Status cuda_check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return stoker::Status::ok();
  return stoker::internal_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

struct GpuSoftmaxRegression::State {
  int device = 0;
  int max_batch = 0;
  cudaStream_t stream = nullptr;
  float* parameters = nullptr;
  float* dlogits = nullptr;
  DeviceTotals* totals = nullptr;       // device
  DeviceTotals* host_totals = nullptr;  // pinned, for take_totals()

  ~State() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    cudaFree(parameters);
    cudaFree(dlogits);
    cudaFree(totals);
    cudaFreeHost(host_totals);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

GpuSoftmaxRegression::GpuSoftmaxRegression(std::unique_ptr<State> state)
    : state_(std::move(state)) {}
GpuSoftmaxRegression::~GpuSoftmaxRegression() = default;

stoker::Result<std::unique_ptr<GpuSoftmaxRegression>> GpuSoftmaxRegression::create(int device,
                                                                                   int max_batch) {
  auto s = std::make_unique<State>();
  s->device = device;
  s->max_batch = max_batch;
  const size_t gradient_bytes = static_cast<size_t>(max_batch) * kClasses * sizeof(float);
  if (auto st = cuda_check(cudaSetDevice(device), "selecting the GPU"); !st.is_ok()) return st;
  if (auto st = cuda_check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking),
                           "creating a stream");
      !st.is_ok()) {
    return st;
  }
  if (auto st = cuda_check(cudaMalloc(&s->parameters, kParameters * sizeof(float)), "parameters");
      !st.is_ok()) {
    return st;
  }
  if (auto st = cuda_check(cudaMalloc(&s->dlogits, gradient_bytes), "gradients"); !st.is_ok()) {
    return st;
  }
  if (auto st = cuda_check(cudaMalloc(&s->totals, sizeof(DeviceTotals)), "totals"); !st.is_ok()) {
    return st;
  }
  if (auto st = cuda_check(cudaMallocHost(&s->host_totals, sizeof(DeviceTotals)), "totals");
      !st.is_ok()) {
    return st;
  }
  cudaError_t e = cudaMemsetAsync(s->parameters, 0, kParameters * sizeof(float), s->stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(s->totals, 0, sizeof(DeviceTotals), s->stream);
  if (auto st = cuda_check(e, "zeroing the parameters"); !st.is_ok()) return st;
  return std::unique_ptr<GpuSoftmaxRegression>(new GpuSoftmaxRegression(std::move(s)));
}

void* GpuSoftmaxRegression::stream() const { return state_->stream; }

stoker::Status GpuSoftmaxRegression::train_step(const float* images, const int32_t* labels,
                                                int batch, float lr) {
  if (batch <= 0 || batch > state_->max_batch) {
    return stoker::invalid_argument("a batch of " + std::to_string(batch) +
                                    " images; the model takes 1 to " +
                                    std::to_string(state_->max_batch));
  }
  forward_kernel<<<batch, kForwardThreads, 0, state_->stream>>>(images, labels, state_->parameters,
                                                                state_->dlogits, state_->totals);
  update_kernel<<<(kParameters + kUpdateThreads - 1) / kUpdateThreads, kUpdateThreads, 0,
                  state_->stream>>>(images, state_->dlogits, batch, lr / static_cast<float>(batch),
                                    state_->parameters);
  return cuda_check(cudaGetLastError(), "launching the training step");
}

stoker::Status GpuSoftmaxRegression::evaluate(const float* images, const int32_t* labels,
                                              int batch) {
  if (batch <= 0) return stoker::invalid_argument("an empty batch");
  forward_kernel<<<batch, kForwardThreads, 0, state_->stream>>>(images, labels, state_->parameters,
                                                                nullptr, state_->totals);
  return cuda_check(cudaGetLastError(), "launching the evaluation");
}

stoker::Result<GpuTotals> GpuSoftmaxRegression::take_totals() {
  cudaError_t e = cudaMemcpyAsync(state_->host_totals, state_->totals, sizeof(DeviceTotals),
                                  cudaMemcpyDeviceToHost, state_->stream);
  if (e == cudaSuccess)
    e = cudaMemsetAsync(state_->totals, 0, sizeof(DeviceTotals), state_->stream);
  // The synchronisation also reports errors of the kernels enqueued before.
  if (e == cudaSuccess) e = cudaStreamSynchronize(state_->stream);
  if (auto st = cuda_check(e, "the GPU work of the model"); !st.is_ok()) return st;
  return GpuTotals{state_->host_totals->loss, state_->host_totals->correct,
                   state_->host_totals->seen};
}
