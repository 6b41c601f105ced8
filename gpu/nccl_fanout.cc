// NCCL fan-out of batches within a tensor-parallel group (nccl_fanout.h): the
// communicator's RAII, the header broadcast that tells receivers what to
// allocate, and the one flat payload broadcast.
#include "gpu/nccl_fanout.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "gpu/cuda_status.h"

namespace stoker {
namespace {

Status nccl_status(ncclResult_t result, std::string_view what) {
  if (result == ncclSuccess) return Status::ok();
  StatusCode code = StatusCode::kInternal;
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      code = StatusCode::kInvalidArgument;
      break;
    case ncclSystemError:
    case ncclRemoteError:
      code = StatusCode::kUnavailable;
      break;
    case ncclUnhandledCudaError:
      code = StatusCode::kIoError;
      break;
    default:
      break;
  }
  return {code, fmt::format("{}: {} (NCCL error {})", what, ncclGetErrorString(result),
                            static_cast<int>(result))};
}

cudaStream_t cuda_stream(StreamRef stream) { return static_cast<cudaStream_t>(stream.handle()); }

// The header describing `source`, after checking every tensor lies in the payload.
Result<FanoutHeader> header_of(const FanoutSource& source, int device) {
  FanoutHeader header;
  if (source.tensors.size() > kMaxTensors) {
    return invalid_argument(fmt::format("fan-out: {} tensors, at most {} fit the header",
                                        source.tensors.size(), kMaxTensors));
  }
  if (source.payload == nullptr && source.payload_bytes != 0) {
    return invalid_argument("fan-out: null payload");
  }
  header.tensor_count = static_cast<uint16_t>(source.tensors.size());
  header.payload_bytes = source.payload_bytes;
  const auto base = reinterpret_cast<uintptr_t>(source.payload);
  for (size_t i = 0; i < source.tensors.size(); ++i) {
    const NamedTensor& t = source.tensors[i];
    const TensorView& v = t.view;
    if (t.name.empty() || t.name.size() > kMaxTensorName) {
      return invalid_argument(fmt::format("fan-out: tensor {} name '{}' must have 1 to {} bytes", i,
                                          t.name, kMaxTensorName));
    }
    if (v.memory() != MemoryKind::kDevice || v.device() != device || !v.is_contiguous()) {
      return invalid_argument(
          fmt::format("fan-out: tensor '{}' ({}) must be contiguous, in device memory of GPU {}",
                      t.name, v.to_string(), device));
    }
    const auto at = reinterpret_cast<uintptr_t>(v.data());
    if (at < base || at - base > source.payload_bytes ||
        v.byte_size() > source.payload_bytes - (at - base)) {
      return invalid_argument(fmt::format("fan-out: tensor '{}' lies outside the {}-byte payload",
                                          t.name, source.payload_bytes));
    }
    FanoutTensor& out = header.tensors[i];
    std::memcpy(out.name.data(), t.name.data(), t.name.size());
    out.dtype = static_cast<uint8_t>(v.dtype());
    out.ndim = static_cast<uint8_t>(v.ndim());
    for (int d = 0; d < v.ndim(); ++d) out.shape[static_cast<size_t>(d)] = v.dim(d);
    out.offset = at - base;
    out.bytes = v.byte_size();
  }
  return header;
}

// The views a received header describes inside `payload`, checking each first.
Result<std::vector<TensorView>> views_of(const FanoutHeader& header, std::byte* payload,
                                         int device) {
  if (header.magic != FanoutHeader::kMagic || header.version != FanoutHeader::kVersion ||
      header.tensor_count > kMaxTensors) {
    return protocol_error(fmt::format(
        "fan-out: header magic {:#x}, version {}, {} tensors is not a header this build reads",
        header.magic, header.version, header.tensor_count));
  }
  std::vector<TensorView> views;
  for (size_t i = 0; i < header.tensor_count; ++i) {
    const FanoutTensor& t = header.tensors[i];
    const auto dtype = dtype_from_code(t.dtype);
    if (!dtype || t.ndim > kMaxTensorDims || t.name.back() != '\0') {
      return protocol_error(fmt::format("fan-out: header entry {} is malformed", i));
    }
    auto view = TensorView::contiguous(
        payload + t.offset, *dtype, std::span(t.shape.data(), t.ndim), MemoryKind::kDevice, device);
    if (!view.is_ok()) return view.status().with_context(fmt::format("fan-out tensor {}", i));
    if (view->byte_size() != t.bytes || t.offset > header.payload_bytes ||
        t.bytes > header.payload_bytes - t.offset) {
      return protocol_error(fmt::format("fan-out: tensor {} does not fit the {}-byte payload", i,
                                        header.payload_bytes));
    }
    views.push_back(*view);
  }
  return views;
}

}  // namespace

// ---------------------------------------------------------------------------
// NcclCommunicator

Result<NcclCommunicator> NcclCommunicator::adopt(ncclComm_t comm) {
  NcclCommunicator out;
  out.comm_ = comm;  // destroyed by `out` whatever happens next
  STOKER_RETURN_IF_ERROR(nccl_status(ncclCommCount(comm, &out.size_), "ncclCommCount"));
  STOKER_RETURN_IF_ERROR(nccl_status(ncclCommUserRank(comm, &out.rank_), "ncclCommUserRank"));
  STOKER_RETURN_IF_ERROR(nccl_status(ncclCommCuDevice(comm, &out.device_), "ncclCommCuDevice"));
  return out;
}

Result<std::vector<NcclCommunicator>> NcclCommunicator::create_local_group(
    std::span<const int> devices) {
  if (devices.empty()) return invalid_argument("an NCCL group needs at least one device");
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  STOKER_RETURN_IF_ERROR(
      nccl_status(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
                  fmt::format("creating an NCCL group of {} devices", devices.size())));
  std::vector<NcclCommunicator> out;
  Status failed;
  for (ncclComm_t comm : comms) {
    auto adopted = adopt(comm);  // every comm gets an owner, even after a failure
    if (adopted.is_ok()) {
      out.push_back(std::move(*adopted));
    } else if (failed.is_ok()) {
      failed = adopted.status();
    }
  }
  if (!failed.is_ok()) return failed;
  return out;
}

Result<ncclUniqueId> NcclCommunicator::new_unique_id() {
  ncclUniqueId id;
  STOKER_RETURN_IF_ERROR(nccl_status(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  return id;
}

Result<NcclCommunicator> NcclCommunicator::join(const ncclUniqueId& id, int size, int rank,
                                                int device) {
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(device));
  ncclComm_t comm = nullptr;
  STOKER_RETURN_IF_ERROR(nccl_status(
      ncclCommInitRank(&comm, size, id, rank),
      fmt::format("joining an NCCL group of {} as rank {} on GPU {}", size, rank, device)));
  return adopt(comm);
}

NcclCommunicator::NcclCommunicator(NcclCommunicator&& other) noexcept { *this = std::move(other); }

NcclCommunicator& NcclCommunicator::operator=(NcclCommunicator&& other) noexcept {
  if (this != &other) {
    reset();
    comm_ = std::exchange(other.comm_, nullptr);
    rank_ = std::exchange(other.rank_, -1);
    size_ = std::exchange(other.size_, 0);
    device_ = std::exchange(other.device_, -1);
  }
  return *this;
}

NcclCommunicator::~NcclCommunicator() { reset(); }

void NcclCommunicator::reset() {
  if (comm_ != nullptr) (void)ncclCommDestroy(comm_);
  comm_ = nullptr;
}

// ---------------------------------------------------------------------------
// BatchFanout

Result<BatchFanout> BatchFanout::create(const NcclCommunicator& comm) {
  if (comm.get() == nullptr) return invalid_argument("fan-out over an empty communicator");
  BatchFanout out;
  out.comm_ = &comm;
  STOKER_ASSIGN_OR_RETURN(auto device_memory,
                          make_memory_resource(MemoryKind::kDevice, comm.device()));
  STOKER_ASSIGN_OR_RETURN(auto pinned_memory,
                          make_memory_resource(MemoryKind::kPinned, comm.device()));
  STOKER_ASSIGN_OR_RETURN(out.device_header_, device_memory->allocate(sizeof(FanoutHeader)));
  STOKER_ASSIGN_OR_RETURN(out.pinned_header_, pinned_memory->allocate(sizeof(FanoutHeader)));
  STOKER_ASSIGN_OR_RETURN(out.header_copied_, CudaEvent::create(comm.device()));
  return out;
}

Status BatchFanout::enqueue_header(const FanoutSource* source, StreamRef stream) {
  const bool root = comm_->rank() == 0;
  if (root != (source != nullptr)) {
    return invalid_argument(fmt::format(
        "fan-out: rank 0 passes the batch and the other ranks pass none (this is rank {}, {})",
        comm_->rank(), source != nullptr ? "with a batch" : "without"));
  }
  if (header_pending_) return failed_precondition("fan-out: the previous header is still pending");
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(comm_->device()));
  // The staging buffer is reused: the previous copy through it must be done
  // (it ended a batch ago, so this does not wait in the steady state).
  STOKER_RETURN_IF_ERROR(header_copied_.synchronize());
  if (root) {
    STOKER_ASSIGN_OR_RETURN(header_, header_of(*source, comm_->device()));
    root_payload_ = source->payload;
    std::memcpy(pinned_header_.data(), &header_, sizeof header_);
    STOKER_RETURN_IF_ERROR(
        copy_async(device_header_.data(), pinned_header_.data(), sizeof header_, stream));
    STOKER_RETURN_IF_ERROR(header_copied_.record(stream));
  }
  STOKER_RETURN_IF_ERROR(
      nccl_status(ncclBroadcast(device_header_.data(), device_header_.data(), sizeof(FanoutHeader),
                                ncclUint8, 0, comm_->get(), cuda_stream(stream)),
                  "broadcasting a fan-out header"));
  if (!root) {
    STOKER_RETURN_IF_ERROR(
        copy_async(pinned_header_.data(), device_header_.data(), sizeof header_, stream));
    STOKER_RETURN_IF_ERROR(header_copied_.record(stream));
  }
  header_pending_ = true;
  return Status::ok();
}

Result<FanoutBatch> BatchFanout::enqueue_payload(StreamRef stream) {
  if (!header_pending_) return failed_precondition("fan-out: enqueue_header first");
  header_pending_ = false;
  STOKER_ASSIGN_OR_RETURN(auto guard, ScopedDevice::enter(comm_->device()));
  FanoutBatch batch;
  std::byte* payload = nullptr;
  if (comm_->rank() == 0) {
    payload = static_cast<std::byte*>(const_cast<void*>(root_payload_));
  } else {
    // Blocks until the header has arrived: receivers allocate from it.
    STOKER_RETURN_IF_ERROR(header_copied_.synchronize());
    std::memcpy(&header_, pinned_header_.data(), sizeof header_);
    if (header_.payload_bytes != 0) {
      void* p = nullptr;
      STOKER_RETURN_IF_ERROR(
          cuda_status(cudaMallocAsync(&p, header_.payload_bytes, cuda_stream(stream)),
                      fmt::format("allocating a {}-byte fan-out payload", header_.payload_bytes)));
      cudaStream_t owner = cuda_stream(stream);
      batch.storage = Buffer(p, header_.payload_bytes, MemoryKind::kDevice, comm_->device(),
                             [owner](void* q) { (void)cudaFreeAsync(q, owner); });
      payload = batch.storage.data();
    }
  }
  batch.header = header_;
  STOKER_ASSIGN_OR_RETURN(batch.tensors, views_of(header_, payload, comm_->device()));
  if (header_.payload_bytes != 0) {
    STOKER_RETURN_IF_ERROR(
        nccl_status(ncclBroadcast(payload, payload, header_.payload_bytes, ncclUint8, 0,
                                  comm_->get(), cuda_stream(stream)),
                    fmt::format("broadcasting a {}-byte fan-out payload", header_.payload_bytes)));
  }
  return batch;
}

Result<FanoutBatch> BatchFanout::broadcast(const FanoutSource* source, StreamRef stream) {
  STOKER_RETURN_IF_ERROR(enqueue_header(source, stream));
  return enqueue_payload(stream);
}

}  // namespace stoker
