// stoker-collate-bench: how close the collation kernels come to the memory
// bandwidth of the machine they run on, and how long a landed batch takes to
// become ready. For each kernel it prints
//
//   RESULT kernel=<name> GBps=<x> copy_GBps=<y> ratio=<x/y> ...
//
// where GBps counts the bytes the kernel reads plus the bytes it writes per
// second, and copy_GBps is the same for a plain copy moving the same number of
// bytes in the same run (cudaMemcpyAsync device to device on a GPU; memcpy on
// the same OpenMP threads on the host), so ratio is the fraction of the
// achievable bandwidth the kernel reaches. Then
//
//   RESULT kernel=landed_to_ready transfer_ms=<t> ready_ms=<r> ready_vs_transfer=<r/t> ...
//
// for a raw uint8 image batch in pinned memory: transfer_ms is its copy to
// the GPU on a copy stream (the host: a memcpy), "landed" is the event after
// its last byte, and ready_ms is the time from that event to the end of the
// collation enqueued on the consumer's stream behind the copy's events. Two
// lines: slices=1 copies the batch whole and collates it after; slices=4 is
// what the reader does with large image tensors, copying 4 slices of whole
// images and collating each as soon as it has arrived. enqueue_us is the
// host time the consumer spends enqueueing the copies, waits, collations and
// the ready event.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gpu/stream.h"
#include "stoker/collate.h"
#include "stoker/landing.h"
#include "stoker/memory.h"

namespace {

using stoker::DType;
using stoker::MemoryKind;
using stoker::Result;
using stoker::Status;
using stoker::StreamRef;
using stoker::TensorSpec;
using stoker::TensorView;

struct Options {
  std::string kernel = "all";
  std::string memory = "auto";
  int device = 0;
  int iterations = 10;
  int warmup = 2;
  int64_t images = 256;
  int64_t image_side = 224;
  int64_t sequences = 256;
  int64_t max_length = 2048;
  int64_t dense_rows = 8192;
};

// A point on a stream: a CUDA timing event on a GPU; on the host, where work
// is synchronous, the time it was recorded (no CUDA call at all, so a CUDA
// build also runs on a machine without a GPU).
class Marker {
 public:
  static Result<Marker> create(bool on_device, int device) {
    Marker marker;
    if (on_device) {
      STOKER_ASSIGN_OR_RETURN(auto event,
                              stoker::CudaEvent::create(device, stoker::CudaEvent::Kind::kTiming));
      marker.event_ = std::make_unique<stoker::CudaEvent>(std::move(event));
    }
    return marker;
  }
  Status record(StreamRef stream) {
    if (event_) return event_->record(stream);
    at_ = std::chrono::steady_clock::now();
    return Status::ok();
  }
  Status enqueue_wait(StreamRef stream) const {
    return event_ ? event_->enqueue_wait(stream) : Status::ok();
  }
  Status synchronize() const { return event_ ? event_->synchronize() : Status::ok(); }
  Result<double> ms_since(const Marker& start) const {
    if (!event_) return std::chrono::duration<double, std::milli>(at_ - start.at_).count();
    STOKER_ASSIGN_OR_RETURN(const float ms, event_->elapsed_ms_since(*start.event_));
    return static_cast<double>(ms);
  }

 private:
  std::unique_ptr<stoker::CudaEvent> event_;
  std::chrono::steady_clock::time_point at_{};
};

// Where the benchmark's tensors live and its work runs.
class Bench {
 public:
  static Result<std::unique_ptr<Bench>> create(const Options& options) {
    auto bench = std::unique_ptr<Bench>(new Bench());
    bench->options_ = options;
    bool device = options.memory == "device";
    if (options.memory == "auto") {
      device = stoker::build_has_cuda() && stoker::cuda_device_count() > 0;
    }
    bench->kind_ = device ? MemoryKind::kDevice : MemoryKind::kHost;
    bench->device_ = device ? options.device : -1;
    STOKER_ASSIGN_OR_RETURN(bench->memory_,
                            stoker::make_memory_resource(bench->kind_, options.device));
    STOKER_ASSIGN_OR_RETURN(bench->staging_,
                            stoker::make_memory_resource(
                                device ? MemoryKind::kPinned : MemoryKind::kHost, options.device));
    if (device) {
      STOKER_ASSIGN_OR_RETURN(bench->stream_, stoker::CudaStream::create(options.device));
      STOKER_ASSIGN_OR_RETURN(bench->copy_stream_, stoker::CudaStream::create(options.device));
    }
    return bench;
  }

  bool on_device() const { return kind_ == MemoryKind::kDevice; }
  StreamRef stream() const { return stream_.ref(); }
  StreamRef copy_stream() const { return copy_stream_.ref(); }
  int device() const { return options_.device; }
  const Options& options() const { return options_; }
  std::string executor() const { return on_device() ? "device" : "host"; }

  // A tensor of `spec` in the benchmark's memory, filled from `bytes` if given.
  Result<TensorView> tensor(const TensorSpec& spec, const std::vector<std::byte>* bytes = nullptr) {
    STOKER_ASSIGN_OR_RETURN(auto buffer, memory_->allocate(std::max<size_t>(spec.byte_size(), 1)));
    if (bytes != nullptr) STOKER_RETURN_IF_ERROR(copy(buffer.data(), bytes->data(), bytes->size()));
    buffers_.push_back(std::move(buffer));
    return TensorView::contiguous(buffers_.back().data(), spec, kind_, device_);
  }
  Result<stoker::Buffer> staging(size_t bytes) { return staging_->allocate(bytes); }
  Result<Marker> marker() const { return Marker::create(on_device(), device()); }

  // A synchronous copy into or out of the benchmark's memory.
  Status copy(void* dst, const void* src, size_t bytes) {
    if (!on_device()) {
      std::memcpy(dst, src, bytes);
      return Status::ok();
    }
    STOKER_RETURN_IF_ERROR(stoker::copy_async(dst, src, bytes, stream()));
    return stoker::synchronize_stream(stream());
  }

  // Milliseconds per call of `enqueue`, on the stream, after warm-up calls.
  Result<double> time_ms(const std::function<Status()>& enqueue) {
    for (int i = 0; i < options_.warmup; ++i) STOKER_RETURN_IF_ERROR(enqueue());
    STOKER_ASSIGN_OR_RETURN(auto start, marker());
    STOKER_ASSIGN_OR_RETURN(auto end, marker());
    STOKER_RETURN_IF_ERROR(start.record(stream()));
    for (int i = 0; i < options_.iterations; ++i) STOKER_RETURN_IF_ERROR(enqueue());
    STOKER_RETURN_IF_ERROR(end.record(stream()));
    STOKER_RETURN_IF_ERROR(end.synchronize());
    STOKER_ASSIGN_OR_RETURN(const double ms, end.ms_since(start));
    return ms / options_.iterations;
  }

  // GB/s of a plain copy that reads and writes `traffic_bytes` in total.
  Result<double> copy_gbps(size_t traffic_bytes) {
    const size_t bytes = traffic_bytes / 2;
    STOKER_ASSIGN_OR_RETURN(auto src, memory_->allocate(bytes));
    STOKER_ASSIGN_OR_RETURN(auto dst, memory_->allocate(bytes));
    std::byte* d = dst.data();
    const std::byte* s = src.data();
    if (!on_device()) std::memset(src.data(), 1, bytes);  // fault the pages in
    STOKER_ASSIGN_OR_RETURN(const double ms, time_ms([&]() -> Status {
                              if (on_device()) return stoker::copy_async(d, s, bytes, stream());
                              parallel_memcpy(d, s, bytes);
                              return Status::ok();
                            }));
    return 2.0 * static_cast<double>(bytes) / (ms * 1e6);
  }

  // memcpy split over the OpenMP threads that run host collation.
  static void parallel_memcpy(std::byte* dst, const std::byte* src, size_t bytes) {
    constexpr size_t kChunk = 1 << 20;
    const auto chunks = static_cast<int64_t>((bytes + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t at = static_cast<size_t>(c) * kChunk;
      std::memcpy(dst + at, src + at, std::min(kChunk, bytes - at));
    }
  }

 private:
  Bench() = default;
  Options options_;
  MemoryKind kind_ = MemoryKind::kHost;
  int device_ = -1;
  std::shared_ptr<stoker::MemoryResource> memory_;
  std::shared_ptr<stoker::MemoryResource> staging_;
  stoker::CudaStream stream_;
  stoker::CudaStream copy_stream_;
  std::vector<stoker::Buffer> buffers_;
};

std::vector<std::byte> random_bytes(size_t n) {
  std::mt19937_64 rng(42);
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = rng();
    std::memcpy(out.data() + i, &r, std::min<size_t>(8, n - i));
  }
  return out;
}

Status report(Bench& bench, std::string_view name, size_t traffic, double ms,
              std::string_view extra) {
  STOKER_ASSIGN_OR_RETURN(const double copy, bench.copy_gbps(traffic));
  const double gbps = static_cast<double>(traffic) / (ms * 1e6);
  fmt::print(
      "RESULT kernel={} GBps={:.1f} copy_GBps={:.1f} ratio={:.3f} executor={} ms={:.4f} "
      "bytes={} {}\n",
      name, gbps, copy, gbps / copy, bench.executor(), ms, traffic, extra);
  std::fflush(stdout);
  return Status::ok();
}

Status bench_image(Bench& bench, DType dtype, std::string_view name) {
  const Options& o = bench.options();
  const int64_t side = o.image_side;
  const auto raw = random_bytes(static_cast<size_t>(o.images * side * side * 3));
  STOKER_ASSIGN_OR_RETURN(auto in, bench.tensor({DType::kUInt8, {o.images, side, side, 3}}, &raw));
  stoker::ImageCollation options{.output_dtype = dtype, .random_flip = true, .seed = 7};
  STOKER_ASSIGN_OR_RETURN(auto spec, stoker::image_output_spec(in, options));
  STOKER_ASSIGN_OR_RETURN(auto out, bench.tensor(spec));
  STOKER_ASSIGN_OR_RETURN(const double ms, bench.time_ms([&] {
    return collate_image(in, out, options, bench.stream());
  }));
  return report(bench, name, in.byte_size() + out.byte_size(), ms,
                fmt::format("images={} side={}", o.images, side));
}

Status bench_sequences(Bench& bench) {
  const Options& o = bench.options();
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> length(1, static_cast<int32_t>(o.max_length));
  std::vector<int32_t> offsets = {0};
  for (int64_t b = 0; b < o.sequences; ++b) offsets.push_back(offsets.back() + length(rng));
  const auto tokens_raw = random_bytes(static_cast<size_t>(offsets.back()) * 4);
  std::vector<std::byte> offsets_raw(offsets.size() * 4);
  std::memcpy(offsets_raw.data(), offsets.data(), offsets_raw.size());
  STOKER_ASSIGN_OR_RETURN(auto tokens,
                          bench.tensor({DType::kInt32, {offsets.back()}}, &tokens_raw));
  STOKER_ASSIGN_OR_RETURN(
      auto offsets_view,
      bench.tensor({DType::kInt32, {static_cast<int64_t>(offsets.size())}}, &offsets_raw));
  stoker::SequenceCollation options{.max_length = o.max_length,
                                    .pad_to_max_length = true,
                                    .ids_dtype = DType::kInt32,
                                    .mask_dtype = DType::kUInt8,
                                    .position_ids = true};
  STOKER_ASSIGN_OR_RETURN(auto spec, stoker::sequence_output_spec(tokens, offsets_view, options));
  stoker::SequenceOutputs out;
  STOKER_ASSIGN_OR_RETURN(out.ids, bench.tensor(spec.ids));
  STOKER_ASSIGN_OR_RETURN(out.mask, bench.tensor(spec.mask));
  STOKER_ASSIGN_OR_RETURN(out.positions, bench.tensor(*spec.positions));
  STOKER_ASSIGN_OR_RETURN(const double ms, bench.time_ms([&] {
    return collate_sequences(tokens, offsets_view, out, options, bench.stream());
  }));
  const size_t traffic = tokens.byte_size() + offsets_view.byte_size() + out.ids.byte_size() +
                         out.mask.byte_size() + out.positions->byte_size();
  return report(bench, "sequence_pad_mask", traffic, ms,
                fmt::format("sequences={} max_length={} tokens={}", o.sequences, o.max_length,
                            offsets.back()));
}

Status bench_dense(Bench& bench) {
  const int64_t rows = bench.options().dense_rows;
  const std::vector<std::pair<DType, int64_t>> layout = {
      {DType::kFloat32, 64}, {DType::kFloat32, 128}, {DType::kUInt8, 256}, {DType::kBFloat16, 64}};
  std::vector<TensorView> features;
  size_t traffic = 0;
  for (const auto& [dtype, width] : layout) {
    const TensorSpec spec{dtype, {rows, width}};
    const auto raw = random_bytes(spec.byte_size());
    STOKER_ASSIGN_OR_RETURN(auto view, bench.tensor(spec, &raw));
    features.push_back(view);
    traffic += view.byte_size();
  }
  const stoker::DenseCollation options{.output_dtype = DType::kFloat32, .uint8_scale = 1.0f / 255};
  STOKER_ASSIGN_OR_RETURN(auto spec, stoker::dense_output_spec(features, options));
  STOKER_ASSIGN_OR_RETURN(auto out, bench.tensor(spec));
  traffic += out.byte_size();
  STOKER_ASSIGN_OR_RETURN(const double ms, bench.time_ms([&] {
    return collate_dense(features, out, options, bench.stream());
  }));
  return report(bench, "dense_concat", traffic, ms,
                fmt::format("rows={} features={} width={}", rows, features.size(), spec.shape[1]));
}

// A raw image batch lands in pinned memory, is copied to the GPU on the copy
// stream and collated on the consumer's stream behind the copy's events, as
// the reader does it (client/batch_preparation.cc): in `slices` pieces of
// whole images, each collated as soon as its piece has arrived, so only the
// last slice's collation remains once the last byte has landed.
Status bench_landed_to_ready(Bench& bench, int64_t slices) {
  const Options& o = bench.options();
  const int64_t side = o.image_side;
  const TensorSpec raw_spec{DType::kUInt8, {o.images, side, side, 3}};
  const size_t raw_bytes = raw_spec.byte_size();
  const size_t image_bytes = raw_bytes / static_cast<size_t>(o.images);
  slices = std::min(slices, o.images);
  STOKER_ASSIGN_OR_RETURN(auto landing, bench.staging(raw_bytes));
  const auto raw = random_bytes(raw_bytes);
  std::memcpy(landing.data(), raw.data(), raw_bytes);
  STOKER_ASSIGN_OR_RETURN(auto in, bench.tensor(raw_spec));
  stoker::ImageCollation options{.output_dtype = DType::kBFloat16, .random_flip = true};
  STOKER_ASSIGN_OR_RETURN(auto spec, stoker::image_output_spec(in, options));
  STOKER_ASSIGN_OR_RETURN(auto out, bench.tensor(spec));
  STOKER_ASSIGN_OR_RETURN(auto start, bench.marker());
  std::vector<Marker> arrived;  // one per slice; the last is "landed"
  for (int64_t k = 0; k < slices; ++k) {
    STOKER_ASSIGN_OR_RETURN(auto m, bench.marker());
    arrived.push_back(std::move(m));
  }
  Marker& landed = arrived.back();
  STOKER_ASSIGN_OR_RETURN(auto ready, bench.marker());

  double transfer_ms = 0, ready_ms = 0, enqueue_us = 0;
  const int rounds = o.warmup + o.iterations;
  for (int i = 0; i < rounds; ++i) {
    STOKER_RETURN_IF_ERROR(start.record(bench.copy_stream()));
    const auto enqueue_start = std::chrono::steady_clock::now();
    int64_t first = 0;
    for (int64_t k = 0; k < slices; ++k) {
      const int64_t end = o.images * (k + 1) / slices;
      const size_t offset = image_bytes * static_cast<size_t>(first);
      const size_t bytes = image_bytes * static_cast<size_t>(end - first);
      auto* dst = static_cast<std::byte*>(in.data()) + offset;
      if (bench.on_device()) {
        STOKER_RETURN_IF_ERROR(
            stoker::copy_async(dst, landing.data() + offset, bytes, bench.copy_stream()));
      } else {
        Bench::parallel_memcpy(dst, landing.data() + offset, bytes);
      }
      STOKER_RETURN_IF_ERROR(arrived[static_cast<size_t>(k)].record(bench.copy_stream()));
      STOKER_RETURN_IF_ERROR(arrived[static_cast<size_t>(k)].enqueue_wait(bench.stream()));
      STOKER_ASSIGN_OR_RETURN(auto in_rows, in.rows(first, end - first));
      STOKER_ASSIGN_OR_RETURN(auto out_rows, out.rows(first, end - first));
      stoker::ImageCollation slice_options = options;
      slice_options.first_sample = static_cast<uint64_t>(first);
      STOKER_RETURN_IF_ERROR(
          stoker::collate_image(in_rows, out_rows, slice_options, bench.stream()));
      first = end;
    }
    STOKER_RETURN_IF_ERROR(ready.record(bench.stream()));
    const auto enqueue_end = std::chrono::steady_clock::now();
    STOKER_RETURN_IF_ERROR(ready.synchronize());
    if (i < o.warmup) continue;
    STOKER_ASSIGN_OR_RETURN(const double copy, landed.ms_since(start));
    STOKER_ASSIGN_OR_RETURN(const double collate, ready.ms_since(landed));
    transfer_ms += copy;
    ready_ms += collate;
    enqueue_us += std::chrono::duration<double, std::micro>(enqueue_end - enqueue_start).count();
  }
  transfer_ms /= o.iterations;
  ready_ms /= o.iterations;
  enqueue_us /= o.iterations;
  fmt::print(
      "RESULT kernel=landed_to_ready transfer_ms={:.4f} ready_ms={:.4f} "
      "ready_vs_transfer={:.3f} enqueue_us={:.1f} transfer_GBps={:.1f} executor={} "
      "images={} side={} output=bfloat16 slices={}\n",
      transfer_ms, ready_ms, ready_ms / transfer_ms, enqueue_us,
      static_cast<double>(raw_bytes) / (transfer_ms * 1e6), bench.executor(), o.images, side,
      slices);
  std::fflush(stdout);
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"stoker-collate-bench: collation kernels against the machine's copy bandwidth"};
  app.add_option("--kernel", o.kernel,
                 "all, image_f32_nchw, image_bf16_nchw, sequence_pad_mask, dense_concat or "
                 "landed_to_ready");
  app.add_option("--memory", o.memory, "auto (device when a GPU is there), device or host");
  app.add_option("--device", o.device, "CUDA device");
  app.add_option("--iterations", o.iterations, "measured calls per kernel")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "unmeasured calls per kernel");
  app.add_option("--images", o.images, "images per batch")->check(CLI::PositiveNumber);
  app.add_option("--image-side", o.image_side, "image height and width")
      ->check(CLI::PositiveNumber);
  app.add_option("--sequences", o.sequences, "sequences per batch")->check(CLI::PositiveNumber);
  app.add_option("--max-length", o.max_length, "padded sequence length")
      ->check(CLI::PositiveNumber);
  app.add_option("--dense-rows", o.dense_rows, "rows of the dense features")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  auto bench = Bench::create(o);
  if (!bench.is_ok()) {
    spdlog::error("{}", bench.status().to_string());
    return 1;
  }
  const std::vector<std::pair<std::string, std::function<Status()>>> kernels = {
      {"image_f32_nchw", [&] { return bench_image(**bench, DType::kFloat32, "image_f32_nchw"); }},
      {"image_bf16_nchw",
       [&] { return bench_image(**bench, DType::kBFloat16, "image_bf16_nchw"); }},
      {"sequence_pad_mask", [&] { return bench_sequences(**bench); }},
      {"dense_concat", [&] { return bench_dense(**bench); }},
      {"landed_to_ready",
       [&] {
         // One piece (the whole batch), then the reader's 4 slices.
         STOKER_RETURN_IF_ERROR(bench_landed_to_ready(**bench, 1));
         return bench_landed_to_ready(**bench, 4);
       }},
  };
  bool ran = false;
  for (const auto& [name, run] : kernels) {
    if (o.kernel != "all" && o.kernel != name) continue;
    ran = true;
    if (Status st = run(); !st.is_ok()) {
      spdlog::error("{}: {}", name, st.to_string());
      return 1;
    }
  }
  if (!ran) {
    spdlog::error("unknown kernel '{}'", o.kernel);
    return 2;
  }
  return 0;
}
