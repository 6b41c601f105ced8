// BatchPreparer: staging copies, collation and readiness events.
#include "client/batch_preparation.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace stoker::detail {
namespace {

constexpr size_t kAlignment = 256;  // of each tensor in an output buffer
// Image tensors from this size on are copied and collated in slices.
constexpr uint64_t kSlicedImageBytes = 1 << 20;
constexpr int64_t kCopySlices = 4;

size_t align_up(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

std::string names_of(const std::vector<std::pair<std::string, TensorView>>& tensors) {
  std::string out;
  for (const auto& [name, view] : tensors)
    out += fmt::format("{}'{}'", out.empty() ? "" : ", ", name);
  return out;
}

}  // namespace

BatchPreparer::BatchPreparer(const ReaderOptions& options, MemoryKind output)
    : collation_(options.collation),
      output_(output),
      device_(options.device),
      stream_(options.stream) {}

Result<std::unique_ptr<BatchPreparer>> BatchPreparer::create(const ReaderOptions& options,
                                                             MemoryKind landed,
                                                             bool copy_to_device) {
  const MemoryKind output = copy_to_device ? MemoryKind::kDevice : landed;
  std::unique_ptr<BatchPreparer> p(new BatchPreparer(options, output));
  if (output == MemoryKind::kDevice) {
    // The trainer's stream must be on the reader's device.
    STOKER_ASSIGN_OR_RETURN(const int stream_device, stream_device(options.stream));
    if (!options.stream.is_default() && stream_device != options.device) {
      return invalid_argument(fmt::format(
          "the reader's stream belongs to CUDA device {}, but the reader delivers to device {}",
          stream_device, options.device));
    }
  }
  if (copy_to_device) {
    STOKER_ASSIGN_OR_RETURN(p->copy_stream_, CudaStream::create(options.device));
    STOKER_ASSIGN_OR_RETURN(auto device_memory,
                            make_memory_resource(MemoryKind::kDevice, options.device));
    p->staging_ = std::make_shared<BufferPool>(device_memory, options.stream);
    for (int64_t i = 0; i + 1 < kCopySlices; ++i) {
      STOKER_ASSIGN_OR_RETURN(auto event, CudaEvent::create(options.device));
      p->slice_events_.push_back(std::move(event));
    }
  }
  if (!options.collation.empty()) {
    STOKER_ASSIGN_OR_RETURN(auto memory, make_memory_resource(output, options.device));
    p->outputs_ = std::make_shared<BufferPool>(memory, options.stream);
  }
  return p;
}

void BatchPreparer::poll() {
  while (!copies_.empty()) {
    auto done = copies_.front().copied.is_complete();
    if (!done.is_ok() || !*done) return;
    spare_events_.push_back(std::move(copies_.front().copied));
    copies_.pop_front();  // returns the slot and the worker's credit
  }
}

Result<std::vector<std::pair<std::string, TensorView>>> BatchPreparer::views_of(
    const BatchDescriptor& descriptor, std::byte* base, MemoryKind memory, int device) const {
  std::vector<std::pair<std::string, TensorView>> views;
  for (size_t i = 0; i < descriptor.tensor_count; ++i) {
    const TensorDescriptor& t = descriptor.tensors[i];
    STOKER_ASSIGN_OR_RETURN(auto view, TensorView::of_descriptor(t, base, memory, device));
    views.emplace_back(std::string(t.name_view()), view);
  }
  return views;
}

Result<std::shared_ptr<BatchState>> BatchPreparer::prepare(LandedBatch landed) {
  poll();
  auto state = std::make_shared<BatchState>();
  state->descriptor = landed.descriptor();
  state->producer = landed.producer_id();
  state->memory = output_;
  state->device = output_ == MemoryKind::kDevice ? device_ : -1;
  std::byte* base = landed.payload().data();
  MemoryKind memory = landed.memory_kind();
  int device = memory == MemoryKind::kDevice ? device_ : -1;
  const size_t bytes = landed.payload().size();

  SlicedCopy sliced;
  if (staging_) {
    // Pinned -> device on the copy stream; the trainer's stream waits for it.
    STOKER_ASSIGN_OR_RETURN(state->staging, staging_->acquire(bytes, copy_stream_.ref()));
    CudaEvent copied;
    if (!spare_events_.empty()) {
      copied = std::move(spare_events_.front());
      spare_events_.pop_front();
    } else {
      STOKER_ASSIGN_OR_RETURN(copied, CudaEvent::create(device_));
    }
    // The slot returns once `copied`, recorded after the last piece, fires.
    copies_.push_back({std::move(landed), std::move(copied)});
    sliced.pieces = plan_copy(state->descriptor, bytes);
    size_t begin = 0;
    for (size_t k = 0; k < sliced.pieces.size(); ++k) {
      const size_t end = sliced.pieces[k].end;
      STOKER_RETURN_IF_ERROR(
          copy_async(state->staging.data() + begin, base + begin, end - begin, copy_stream_.ref()));
      begin = end;
      CudaEvent& done = k + 1 < sliced.pieces.size() ? slice_events_[k] : copies_.back().copied;
      STOKER_RETURN_IF_ERROR(done.record(copy_stream_.ref()));
      sliced.events.push_back(&done);
    }
    // Sliced: the image collation waits piece by piece (its last wait is for
    // the whole copy, before anything else reads the batch).
    if (sliced.pieces.size() == 1) STOKER_RETURN_IF_ERROR(sliced.events[0]->enqueue_wait(stream_));
    base = state->staging.data();
    memory = MemoryKind::kDevice;
    device = device_;
  } else {
    state->landed = std::move(landed);  // tensors point into the slot
  }
  STOKER_ASSIGN_OR_RETURN(auto inputs, views_of(state->descriptor, base, memory, device));
  if (collation_.empty()) {
    state->tensors = std::move(inputs);
  } else {
    const bool is_sliced = sliced.pieces.size() > 1;
    const Status collated = collate(*state, std::move(inputs), is_sliced ? &sliced : nullptr);
    if (!collated.is_ok() && is_sliced) {
      // The staging buffer goes back on the trainer's stream: after the copy.
      (void)sliced.events.back()->enqueue_wait(stream_);
    }
    STOKER_RETURN_IF_ERROR(collated);
  }
  if (output_ == MemoryKind::kDevice) {
    STOKER_ASSIGN_OR_RETURN(state->ready, CudaEvent::create(device_));
    STOKER_RETURN_IF_ERROR(state->ready.record(stream_));
  }
  return state;
}

std::vector<BatchPreparer::CopyPiece> BatchPreparer::plan_copy(const BatchDescriptor& descriptor,
                                                               size_t bytes) const {
  if (collation_.image) {
    for (size_t i = 0; i < descriptor.tensor_count; ++i) {
      const TensorDescriptor& t = descriptor.tensors[i];
      if (t.name_view() != "image" || t.ndim != 4 || t.bytes < kSlicedImageBytes ||
          t.shape[0] < 2 || t.offset + t.bytes > bytes || t.bytes % t.shape[0] != 0) {
        continue;
      }
      const auto images = static_cast<int64_t>(t.shape[0]);
      const uint64_t per_image = t.bytes / t.shape[0];
      const int64_t slices = std::min(kCopySlices, images);
      std::vector<CopyPiece> pieces;
      for (int64_t k = 1; k <= slices; ++k) {
        const int64_t images_end = images * k / slices;
        // The last piece takes the rest of the payload.
        const size_t end =
            k == slices
                ? bytes
                : static_cast<size_t>(t.offset + static_cast<uint64_t>(images_end) * per_image);
        pieces.push_back({end, images_end});
      }
      return pieces;
    }
  }
  return {{bytes, 0}};
}

Status BatchPreparer::collate_image_slices(const TensorView& image, const TensorView& out,
                                           const SlicedCopy& sliced) {
  int64_t first = 0;
  for (size_t k = 0; k < sliced.pieces.size(); ++k) {
    STOKER_RETURN_IF_ERROR(sliced.events[k]->enqueue_wait(stream_));
    const int64_t end = sliced.pieces[k].images_end;
    if (end == first) continue;
    STOKER_ASSIGN_OR_RETURN(auto in_rows, image.rows(first, end - first));
    STOKER_ASSIGN_OR_RETURN(auto out_rows, out.rows(first, end - first));
    ImageCollation options = *collation_.image;
    options.first_sample += static_cast<uint64_t>(first);  // flips as for the whole batch
    STOKER_RETURN_IF_ERROR(collate_image(in_rows, out_rows, options, stream_));
    first = end;
  }
  return Status::ok();
}

Status BatchPreparer::collate(BatchState& state,
                              std::vector<std::pair<std::string, TensorView>> inputs,
                              const SlicedCopy* sliced) {
  const auto take = [&](std::string_view name, std::string_view what) -> Result<TensorView> {
    auto it =
        std::find_if(inputs.begin(), inputs.end(), [&](const auto& t) { return t.first == name; });
    if (it == inputs.end()) {
      return invalid_argument(fmt::format("{} collation needs a tensor '{}'; the batch has {}",
                                          what, name, names_of(inputs)));
    }
    TensorView view = it->second;
    inputs.erase(it);
    return view;
  };
  // What goes where: the output tensors, laid out one after another.
  struct Output {
    std::string name;
    TensorSpec spec;
    size_t offset = 0;
  };
  std::vector<Output> outputs;
  std::optional<TensorView> image, tokens, offsets;
  std::vector<TensorView> features;
  std::optional<SequenceOutputSpec> sequence;
  if (collation_.image) {
    STOKER_ASSIGN_OR_RETURN(image, take("image", "image"));
    STOKER_ASSIGN_OR_RETURN(auto spec, image_output_spec(*image, *collation_.image));
    outputs.push_back({"image", spec});
  }
  if (collation_.sequence) {
    STOKER_ASSIGN_OR_RETURN(tokens, take("tokens", "sequence"));
    STOKER_ASSIGN_OR_RETURN(offsets, take("offsets", "sequence"));
    STOKER_ASSIGN_OR_RETURN(sequence,
                            sequence_output_spec(*tokens, *offsets, *collation_.sequence));
    outputs.push_back({"input_ids", sequence->ids});
    outputs.push_back({"attention_mask", sequence->mask});
    if (sequence->positions) outputs.push_back({"position_ids", *sequence->positions});
  }
  if (!collation_.dense_features.empty()) {
    for (const auto& name : collation_.dense_features) {
      STOKER_ASSIGN_OR_RETURN(auto f, take(name, "dense"));
      features.push_back(f);
    }
    STOKER_ASSIGN_OR_RETURN(auto spec, dense_output_spec(features, collation_.dense));
    outputs.push_back({"features", spec});
  }
  size_t total = 0;
  for (auto& o : outputs) {
    o.offset = total;
    total += align_up(o.spec.byte_size());
  }
  STOKER_ASSIGN_OR_RETURN(state.output, outputs_->acquire(total, stream_));
  const int device = state.device;
  std::map<std::string, TensorView, std::less<>> made;
  for (const auto& o : outputs) {
    STOKER_ASSIGN_OR_RETURN(made[o.name], TensorView::contiguous(state.output.data() + o.offset,
                                                                 o.spec, output_, device));
  }
  if (image && sliced != nullptr) {
    STOKER_RETURN_IF_ERROR(collate_image_slices(*image, made["image"], *sliced));
  } else if (image) {
    STOKER_RETURN_IF_ERROR(collate_image(*image, made["image"], *collation_.image, stream_));
  }
  if (sequence) {
    SequenceOutputs out{.ids = made["input_ids"], .mask = made["attention_mask"]};
    if (sequence->positions) out.positions = made["position_ids"];
    STOKER_RETURN_IF_ERROR(
        collate_sequences(*tokens, *offsets, out, *collation_.sequence, stream_));
  }
  if (!features.empty()) {
    STOKER_RETURN_IF_ERROR(collate_dense(features, made["features"], collation_.dense, stream_));
  }
  // Collated tensors first, then the ones no collation consumed, as they landed.
  for (const auto& o : outputs) state.tensors.emplace_back(o.name, made[o.name]);
  for (auto& [name, view] : inputs) state.tensors.emplace_back(name, view);
  return Status::ok();
}

}  // namespace stoker::detail
