// Softmax regression trained on the GPU, on the reader's stream: the images
// stoker collated there are read in place, no batch visits the host, and the
// host learns the loss and accuracy only when it asks (once per epoch).
// Built when the installed stoker has CUDA and a CUDA compiler is found.
#pragma once

#include <stoker/result.h>
#include <stoker/status.h>

#include <cstdint>
#include <memory>

struct GpuTotals {
  double loss = 0;       // summed cross-entropy
  uint64_t correct = 0;  // argmax == label
  uint64_t seen = 0;     // images
};

class GpuSoftmaxRegression {
 public:
  // Zero-initialised parameters on GPU `device` and a stream of its own, on
  // which the reader should make batches ready (stream()).
  static stoker::Result<std::unique_ptr<GpuSoftmaxRegression>> create(int device, int max_batch);
  ~GpuSoftmaxRegression();
  GpuSoftmaxRegression(const GpuSoftmaxRegression&) = delete;
  GpuSoftmaxRegression& operator=(const GpuSoftmaxRegression&) = delete;

  void* stream() const;  // the cudaStream_t

  // Enqueues one SGD step on `batch` images (float32 [batch, 784]) and int32
  // labels, both in device memory and ready on stream(). Labels outside
  // [0, 10) are counted as wrong and contribute no gradient.
  stoker::Status train_step(const float* images, const int32_t* labels, int batch, float lr);
  // Enqueues the forward pass only: loss and accuracy, no update.
  stoker::Status evaluate(const float* images, const int32_t* labels, int batch);
  // Waits for the stream; the totals accumulated since the last call.
  stoker::Result<GpuTotals> take_totals();

 private:
  struct State;
  explicit GpuSoftmaxRegression(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};
