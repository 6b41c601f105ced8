// fashion-mnist-trainer: a small classifier trained on Fashion-MNIST that
// stoker delivers. Two readers: the training set (shuffled, several epochs,
// DYNAMIC sharding over the cluster's workers) and the test set (one epoch),
// both straight from the IDX files the dataset-fashion-mnist package ships.
// Batches arrive as uint8 images and are collated into float32 [B, 1, 28, 28]
// in [0, 1]. The model is softmax regression, or a one-hidden-layer MLP with
// --hidden N, trained by SGD on the CPU; with --device the batches are
// delivered to the GPU and collated there, and softmax regression trains
// there too, on the reader's stream (gpu_model.h), when this example was
// built with CUDA. It prints the test accuracy after each epoch and a final
//   RESULT example=fashion_mnist epochs=<n> test_accuracy=<x> train_images_per_s=<x>
// The accuracy is the proof that the data arrived intact and in the right
// shape: scrambled pixels or mismatched labels would not reach 80%.
#include <stoker/client.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifdef TRAINER_GPU_MODEL
#include "gpu_model.h"
#endif

namespace {

constexpr int kPixels = 28 * 28;
constexpr int kClasses = 10;

struct Options {
  std::string coordinator = "127.0.0.1:7000";
  std::string dataset = "/usr/share/datasets/fashion-mnist";
  int epochs = 3;
  int batch = 100;
  int hidden = 0;  // 0: softmax regression
  float learning_rate = 0.1f;
  bool device = false;
  std::string secret_file;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--coordinator") {
      o.coordinator = value();
    } else if (arg == "--dataset") {
      o.dataset = value();
    } else if (arg == "--epochs") {
      o.epochs = std::stoi(value());
    } else if (arg == "--batch") {
      o.batch = std::stoi(value());
    } else if (arg == "--hidden") {
      o.hidden = std::stoi(value());
    } else if (arg == "--learning-rate") {
      o.learning_rate = std::stof(value());
    } else if (arg == "--device") {
      o.device = true;
    } else if (arg == "--secret-file") {
      o.secret_file = value();
    } else {
      std::fprintf(stderr,
                   "usage: fashion-mnist-trainer [--coordinator HOST:PORT] [--dataset DIR] "
                   "[--epochs N] [--batch N] [--hidden N] [--learning-rate X] [--device] "
                   "[--secret-file F]\n");
      std::exit(2);
    }
  }
  return o;
}

std::string idx_spec(const Options& o, const std::string& set, uint64_t seed) {
  return "{\"seed\": " + std::to_string(seed) + ", \"source\": {\"type\": \"idx\", \"images\": \"" +
         o.dataset + "/" + set + "-images-idx3-ubyte.gz\", \"labels\": \"" + o.dataset + "/" + set +
         "-labels-idx1-ubyte.gz\", \"split_size\": 2000, \"num_classes\": 10}, " +
         (seed != 0 ? "\"ops\": [{\"op\": \"shuffle\", \"buffer_size\": 2000}], " : "") +
         "\"batch\": {\"size\": " + std::to_string(o.batch) + "}}";
}

// Softmax regression (hidden == 0) or x -> relu(W1 x + b1) -> W2 h + b2.
class Model {
 public:
  Model(int hidden, uint64_t seed) : hidden_(hidden) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    const int in = kPixels, mid = hidden > 0 ? hidden : kPixels;
    if (hidden_ > 0) {
      std::normal_distribution<float> init(0.0f, std::sqrt(2.0f / static_cast<float>(in)));
      w1_.resize(static_cast<size_t>(in * hidden));
      for (float& w : w1_) w = init(rng);
      b1_.assign(static_cast<size_t>(hidden), 0.0f);
    }
    std::normal_distribution<float> init(0.0f, 0.01f);
    w2_.resize(static_cast<size_t>(mid * kClasses));
    for (float& w : w2_) w = hidden_ > 0 ? init(rng) * 10 : 0.0f;
    b2_.assign(kClasses, 0.0f);
  }

  // Logits of one image into `logits`; the hidden activations into `h`.
  void forward(const float* x, float* h, float* logits) const {
    const float* features = x;
    int width = kPixels;
    if (hidden_ > 0) {
      for (int j = 0; j < hidden_; ++j) h[j] = b1_[static_cast<size_t>(j)];
      for (int i = 0; i < kPixels; ++i) {
        if (x[i] == 0.0f) continue;
        const float* row = &w1_[static_cast<size_t>(i * hidden_)];
        for (int j = 0; j < hidden_; ++j) h[j] += x[i] * row[j];
      }
      for (int j = 0; j < hidden_; ++j) h[j] = std::max(h[j], 0.0f);
      features = h;
      width = hidden_;
    }
    for (int c = 0; c < kClasses; ++c) logits[c] = b2_[static_cast<size_t>(c)];
    for (int i = 0; i < width; ++i) {
      if (features[i] == 0.0f) continue;
      const float* row = &w2_[static_cast<size_t>(i * kClasses)];
      for (int c = 0; c < kClasses; ++c) logits[c] += features[i] * row[c];
    }
  }

  // One SGD step on a batch; returns the mean cross-entropy.
  float step(const float* images, const int32_t* labels, int batch, float lr) {
    const int mid = hidden_ > 0 ? hidden_ : kPixels;
    std::vector<float> gw2(w2_.size(), 0.0f), gb2(kClasses, 0.0f);
    std::vector<float> gw1(w1_.size(), 0.0f), gb1(b1_.size(), 0.0f);
    std::vector<float> h(static_cast<size_t>(std::max(hidden_, 1))), logits(kClasses),
        dh(static_cast<size_t>(std::max(hidden_, 1)));
    float loss = 0;
    for (int n = 0; n < batch; ++n) {
      const float* x = images + static_cast<size_t>(n) * kPixels;
      forward(x, h.data(), logits.data());
      const float top = *std::max_element(logits.begin(), logits.end());
      float sum = 0;
      for (float& l : logits) sum += (l = std::exp(l - top));
      for (float& l : logits) l /= sum;  // probabilities
      const int y = labels[n];
      loss -= std::log(std::max(logits[static_cast<size_t>(y)], 1e-12f));
      logits[static_cast<size_t>(y)] -= 1.0f;  // d loss / d logits
      const float* features = hidden_ > 0 ? h.data() : x;
      std::fill(dh.begin(), dh.end(), 0.0f);
      for (int i = 0; i < mid; ++i) {
        if (features[i] == 0.0f) continue;
        float* g = &gw2[static_cast<size_t>(i * kClasses)];
        const float* w = &w2_[static_cast<size_t>(i * kClasses)];
        for (int c = 0; c < kClasses; ++c) {
          g[c] += features[i] * logits[static_cast<size_t>(c)];
          if (hidden_ > 0) dh[static_cast<size_t>(i)] += w[c] * logits[static_cast<size_t>(c)];
        }
      }
      for (int c = 0; c < kClasses; ++c)
        gb2[static_cast<size_t>(c)] += logits[static_cast<size_t>(c)];
      if (hidden_ > 0) {
        for (int j = 0; j < hidden_; ++j) {
          if (h[static_cast<size_t>(j)] <= 0.0f) dh[static_cast<size_t>(j)] = 0.0f;
          gb1[static_cast<size_t>(j)] += dh[static_cast<size_t>(j)];
        }
        for (int i = 0; i < kPixels; ++i) {
          if (x[i] == 0.0f) continue;
          float* g = &gw1[static_cast<size_t>(i * hidden_)];
          for (int j = 0; j < hidden_; ++j) g[j] += x[i] * dh[static_cast<size_t>(j)];
        }
      }
    }
    const float scale = lr / static_cast<float>(batch);
    for (size_t i = 0; i < w2_.size(); ++i) w2_[i] -= scale * gw2[i];
    for (size_t i = 0; i < b2_.size(); ++i) b2_[i] -= scale * gb2[i];
    for (size_t i = 0; i < w1_.size(); ++i) w1_[i] -= scale * gw1[i];
    for (size_t i = 0; i < b1_.size(); ++i) b1_[i] -= scale * gb1[i];
    return loss / static_cast<float>(batch);
  }

  int predict(const float* x) const {
    std::vector<float> h(static_cast<size_t>(std::max(hidden_, 1))), logits(kClasses);
    forward(x, h.data(), logits.data());
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

 private:
  int hidden_;
  std::vector<float> w1_, b1_, w2_, b2_;
};

// The images and labels of a batch, on the host (copied there when the
// reader delivered to the GPU: the math of this small example runs on the CPU).
struct HostBatch {
  std::vector<float> images;
  std::vector<int32_t> labels;
};

stoker::Result<HostBatch> to_host(const stoker::Batch& batch) {
  auto images = batch.tensor("image");
  if (!images.is_ok()) return images.status();
  auto labels = batch.tensor("label");
  if (!labels.is_ok()) return labels.status();
  if (images->dtype() != stoker::DType::kFloat32 || images->ndim() != 4 ||
      images->element_count() != labels->element_count() * kPixels) {
    return stoker::invalid_argument("unexpected image tensor shape or dtype");
  }
  HostBatch out;
  out.images.resize(static_cast<size_t>(images->element_count()));
  out.labels.resize(static_cast<size_t>(labels->element_count()));
  if (auto st = batch.copy_to_host("image", std::as_writable_bytes(std::span(out.images)));
      !st.is_ok()) {
    return st;
  }
  if (auto st = batch.copy_to_host("label", std::as_writable_bytes(std::span(out.labels)));
      !st.is_ok()) {
    return st;
  }
  return out;
}

#ifdef TRAINER_GPU_MODEL
// The device pointers of a batch's images and labels, checked.
struct DeviceBatch {
  const float* images = nullptr;
  const int32_t* labels = nullptr;
  int size = 0;
};

stoker::Result<DeviceBatch> on_device(const stoker::Batch& batch) {
  auto images = batch.tensor("image");
  if (!images.is_ok()) return images.status();
  auto labels = batch.tensor("label");
  if (!labels.is_ok()) return labels.status();
  if (images->memory() != stoker::MemoryKind::kDevice ||
      images->dtype() != stoker::DType::kFloat32 || labels->dtype() != stoker::DType::kInt32 ||
      images->element_count() != labels->element_count() * kPixels) {
    return stoker::invalid_argument("unexpected image or label tensor: " + images->to_string() +
                                    ", " + labels->to_string());
  }
  return DeviceBatch{images->data_as<const float>(), labels->data_as<const int32_t>(),
                     static_cast<int>(labels->element_count())};
}
#endif

stoker::ReaderOptions reader_options(const Options& o, std::string spec, int epochs,
                                     stoker::StreamRef stream) {
  stoker::ReaderOptions r{
      .pipeline_spec = std::move(spec),
      .epochs = static_cast<uint32_t>(epochs),
      .memory = o.device ? stoker::MemoryKind::kDevice : stoker::MemoryKind::kHost,
      .stream = stream};
  stoker::ImageCollation image;
  image.output_dtype = stoker::DType::kFloat32;
  image.layout = stoker::ImageLayout::kNCHW;
  image.mean = {0.0f};
  image.stddev = {1.0f};
  r.collation.image = image;
  return r;
}

// What the epoch loops need of a model: a step per training batch, a
// forward pass per test batch, and the totals since the last ask.
struct Totals {
  double loss = 0;       // summed over training images
  uint64_t correct = 0;  // test images classified right
  uint64_t seen = 0;     // images
};

class Learner {
 public:
  virtual ~Learner() = default;
  virtual stoker::Status train(const stoker::Batch& batch, float learning_rate) = 0;
  virtual stoker::Status evaluate(const stoker::Batch& batch) = 0;
  virtual stoker::Result<Totals> take_totals() = 0;
  // The stream the readers should make batches ready on.
  virtual stoker::StreamRef stream() const { return {}; }
  virtual const char* where() const = 0;
};

// The model on the CPU; batches are copied to the host first when they were
// delivered to the GPU.
class CpuLearner final : public Learner {
 public:
  explicit CpuLearner(int hidden) : model_(hidden, 7) {}
  stoker::Status train(const stoker::Batch& batch, float learning_rate) override {
    auto host = to_host(batch);
    if (!host.is_ok()) return host.status();
    const int n = static_cast<int>(host->labels.size());
    totals_.loss += model_.step(host->images.data(), host->labels.data(), n, learning_rate) * n;
    totals_.seen += static_cast<uint64_t>(n);
    return stoker::Status::ok();
  }
  stoker::Status evaluate(const stoker::Batch& batch) override {
    auto host = to_host(batch);
    if (!host.is_ok()) return host.status();
    for (size_t i = 0; i < host->labels.size(); ++i) {
      totals_.correct += model_.predict(host->images.data() + i * kPixels) == host->labels[i];
      ++totals_.seen;
    }
    return stoker::Status::ok();
  }
  stoker::Result<Totals> take_totals() override { return std::exchange(totals_, Totals{}); }
  const char* where() const override { return "cpu"; }

 private:
  Model model_;
  Totals totals_;
};

#ifdef TRAINER_GPU_MODEL
// Softmax regression on the GPU, on the readers' stream: batches are used
// where they were collated, and the host waits only in take_totals().
class GpuLearner final : public Learner {
 public:
  explicit GpuLearner(std::unique_ptr<GpuSoftmaxRegression> model) : model_(std::move(model)) {}
  stoker::Status train(const stoker::Batch& batch, float learning_rate) override {
    auto b = on_device(batch);
    if (!b.is_ok()) return b.status();
    // Enqueued behind the collation on the same stream; releasing the batch
    // afterwards is ordered after these kernels too.
    return model_->train_step(b->images, b->labels, b->size, learning_rate);
  }
  stoker::Status evaluate(const stoker::Batch& batch) override {
    auto b = on_device(batch);
    if (!b.is_ok()) return b.status();
    return model_->evaluate(b->images, b->labels, b->size);
  }
  stoker::Result<Totals> take_totals() override {
    auto totals = model_->take_totals();
    if (!totals.is_ok()) return totals.status();
    return Totals{totals->loss, totals->correct, totals->seen};
  }
  stoker::StreamRef stream() const override { return stoker::StreamRef(model_->stream()); }
  const char* where() const override { return "gpu"; }

 private:
  std::unique_ptr<GpuSoftmaxRegression> model_;
};
#endif

// The GPU model when asked for (--device), available in this build and able
// to take the model (softmax regression); the CPU model otherwise.
stoker::Result<std::unique_ptr<Learner>> make_learner(const Options& o) {
#ifdef TRAINER_GPU_MODEL
  if (o.device && o.hidden == 0) {
    auto model = GpuSoftmaxRegression::create(0, o.batch);
    if (!model.is_ok()) return model.status();
    return std::unique_ptr<Learner>(std::make_unique<GpuLearner>(std::move(*model)));
  }
#endif
  return std::unique_ptr<Learner>(std::make_unique<CpuLearner>(o.hidden));
}

int fail(const stoker::Status& st) {
  std::fprintf(stderr, "trainer: %s\n", st.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  auto learner = make_learner(o);
  if (!learner.is_ok()) return fail(learner.status());
  Learner& model = **learner;
  if (o.device) {
    std::printf("batches collated on the GPU; the model trains on the %s\n",
                std::string_view(model.where()) == "gpu"
                    ? "GPU"
                    : "CPU (--hidden, or an example built without CUDA)");
  }
  auto client = stoker::Client::connect({.coordinator = o.coordinator,
                                         .secret_file = o.secret_file,
                                         .name = "fashion-mnist-trainer"});
  if (!client.is_ok()) return fail(client.status());
  auto train =
      (*client)->open_reader(reader_options(o, idx_spec(o, "train", 42), o.epochs, model.stream()));
  if (!train.is_ok()) return fail(train.status());
  double accuracy = 0;
  uint64_t images_seen = 0;
  double train_seconds = 0;
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    const auto started = std::chrono::steady_clock::now();
    uint64_t batches = 0;
    while (true) {
      auto next = (*train)->next(std::chrono::seconds(60));
      if (!next.is_ok()) return fail(next.status());
      if (!next->has_value()) break;  // end of the epoch
      if (auto st = model.train(**next, o.learning_rate); !st.is_ok()) return fail(st);
      ++batches;
    }
    const auto trained = model.take_totals();  // waits for the epoch's last step
    if (!trained.is_ok()) return fail(trained.status());
    images_seen += trained->seen;
    train_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    // Evaluate on the test set, read through stoker too.
    auto test =
        (*client)->open_reader(reader_options(o, idx_spec(o, "t10k", 0), 1, model.stream()));
    if (!test.is_ok()) return fail(test.status());
    while (true) {
      auto next = (*test)->next(std::chrono::seconds(60));
      if (!next.is_ok()) return fail(next.status());
      if (!next->has_value()) break;
      if (auto st = model.evaluate(**next); !st.is_ok()) return fail(st);
    }
    const auto tested = model.take_totals();
    if (!tested.is_ok()) return fail(tested.status());
    accuracy = tested->seen == 0
                   ? 0
                   : static_cast<double>(tested->correct) / static_cast<double>(tested->seen);
    std::printf("epoch %d: %llu batches, mean loss %.4f, test accuracy %.4f (%llu images)\n",
                epoch + 1, static_cast<unsigned long long>(batches),
                trained->seen ? trained->loss / static_cast<double>(trained->seen) : 0.0, accuracy,
                static_cast<unsigned long long>(tested->seen));
    std::fflush(stdout);
  }
  std::printf(
      "RESULT example=fashion_mnist epochs=%d test_accuracy=%.4f train_images_per_s=%.0f "
      "model_on=%s\n",
      o.epochs, accuracy, static_cast<double>(images_seen) / std::max(train_seconds, 1e-9),
      model.where());
  return accuracy >= 0.8 ? 0 : 3;
}
