// Reader: reads one job's batches. It joins the job at the coordinator
// (creating it when it is new; sharing it when the name exists with the same
// pipeline), receives batches from the job's workers into its landing slots,
// and hands them out epoch by epoch: every batch of epoch e, then an end of
// epoch, then epoch e+1. Which batches an epoch holds follows from the
// job's sharding and its guarantee (exactly once; at most or at least once
// when a worker dies); see docs/architecture.md.
//
// Threading: next() and close() from one thread at a time; a Batch may be
// released from any thread, and may outlive its Reader.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "stoker/batch_descriptor.h"
#include "stoker/batch_receiver.h"
#include "stoker/collate.h"
#include "stoker/dlpack.h"
#include "stoker/memory.h"
#include "stoker/result.h"
#include "stoker/stream.h"
#include "stoker/tensor.h"

namespace stoker {

struct ClientOptions;
namespace detail {
struct BatchState;
}

enum class Sharding : uint8_t {
  kOff,      // every worker produces the whole dataset
  kDynamic,  // the coordinator hands splits to workers on demand (default)
  kFile,     // static: whole files, by worker index
  kData,     // static: every n-th record, by worker index
};

// What a reader makes of each landed batch before handing it out (on the GPU
// in a CUDA build when the output is device memory; on host threads
// otherwise). Tensors a collation does not consume are handed out as they
// landed (e.g. `label`).
struct Collation {
  // uint8 `image` [B, H, W, C] -> `image`, normalized, in the dtype and layout asked.
  std::optional<ImageCollation> image;
  // int32 `tokens` + `offsets` [B+1] -> `input_ids` [B, L], `attention_mask`
  // [B, L] and, when asked, `position_ids` [B, L].
  std::optional<SequenceCollation> sequence;
  // These [B, d_k] tensors, concatenated -> `features` [B, sum d_k].
  std::vector<std::string> dense_features;
  DenseCollation dense;

  bool empty() const { return !image && !sequence && dense_features.empty(); }
};

struct ReaderOptions {
  // Readers that give the same name share one job: each batch goes to one of
  // them. Empty: an anonymous job of this reader's own.
  std::string job_name;
  std::string pipeline_spec;  // JSON; docs/pipelines.md
  Sharding sharding = Sharding::kDynamic;
  // When a worker dies, hand its undelivered splits to others: at least once
  // (duplicates possible) instead of at most once.
  bool redeliver = false;
  uint32_t epochs = 1;  // 0: until the reader closes
  // Where handed-out tensors live. kDevice needs a CUDA build and a GPU;
  // batches land there directly when UCX can reach GPU memory, otherwise in
  // pinned memory followed by an asynchronous copy (plan_landing(); logged
  // once). kPinned and kHost land where they are handed out.
  MemoryKind memory = MemoryKind::kHost;
  int device = 0;
  // The trainer's CUDA stream: every batch is ready on it, in stream order
  // (Batch::wait_on() orders another stream after it). Ignored for host output.
  StreamRef stream;
  Collation collation;
  uint32_t slots = 32;
  size_t slot_bytes = 0;  // 0: the job's largest batch (asked of the coordinator)
  uint32_t credits_per_worker = 4;
  // Batch bytes in flight to this reader, shared by the workers streaming to
  // it (ReceiverOptions::max_bytes_in_flight); 0: credits alone limit them.
  size_t max_bytes_in_flight = ReceiverOptions{}.max_bytes_in_flight;
  // Threads landing batches, each serving some of the workers (see
  // ReceiverOptions::progress_threads): more for a reader fed by many workers
  // on a host with cores to spare. Each gets slots / receiver_threads slots.
  uint32_t receiver_threads = 1;
  // How long those threads poll after their last event before they sleep
  // (ReceiverOptions::busy_poll): longer holds a core while batches flow, and
  // spares a reader on a shared VM the hypervisor's delay at each wake-up.
  std::chrono::microseconds busy_poll = ReceiverOptions{}.busy_poll;
  // Where this reader's receiver listens, and the host workers should reach
  // it at (default: this host's address on the route to the coordinator).
  std::string listen_address = "0.0.0.0:0";
  std::string advertise_host;
  std::string name;  // shown by stoker-ctl
};

// One landed batch of the job. Move-only; destroying or release()-ing it
// returns its landing slot (and the credit) to the worker that filled it.
class Batch {
 public:
  Batch();
  Batch(Batch&&) noexcept;
  Batch& operator=(Batch&&) noexcept;
  ~Batch();

  const BatchDescriptor& descriptor() const;
  uint64_t epoch() const { return descriptor().iteration; }
  uint64_t producer() const;  // the worker that made it
  MemoryKind memory() const;  // where its tensors are
  int device() const;         // their GPU ordinal; -1 for host and pinned memory
  // The named tensor (collated, or as it landed); kNotFound naming the
  // tensors the batch has. Valid while the batch (or an export of it) lives.
  Result<TensorView> tensor(std::string_view name) const;
  std::vector<std::string> tensor_names() const;
  // DLPack exports of a tensor (kDLCUDA for device memory, kDLCUDAHost for
  // pinned, kDLCPU for host). Each export keeps the batch's memory alive on
  // its own: the slot returns when the batch is released and the last
  // export's deleter has run. The legacy form is what torch 1.x takes.
  Result<DLPackTensor> to_dlpack(std::string_view name) const;
  Result<LegacyDLPackTensor> to_legacy_dlpack(std::string_view name) const;
  // Makes work enqueued on `stream` from now on wait until the batch is
  // ready (needed only for a stream other than the reader's).
  Status wait_on(StreamRef stream) const;
  // Copies a tensor into host memory (`out` must hold its bytes), waiting
  // for the batch to be ready: for inspection, tests and CPU-side code.
  Status copy_to_host(std::string_view name, std::span<std::byte> out) const;
  // Gives the batch up. Calling it twice is kFailedPrecondition.
  Status release();
  bool valid() const;

 private:
  friend class Reader;
  explicit Batch(std::shared_ptr<detail::BatchState> state);
  std::shared_ptr<detail::BatchState> state_;
};

struct ReaderStats {
  uint64_t batches = 0;  // handed out by next()
  uint64_t bytes = 0;
  uint64_t epochs_completed = 0;
  uint64_t splits_lost = 0;   // at most once: splits of workers that died, so far
  uint64_t workers_lost = 0;  // producers whose connection failed
};

namespace detail {
class ClientConnection;
}

class Reader {
 public:
  ~Reader();  // close()
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // The next batch of the current epoch; nullopt at the end of an epoch (the
  // next call starts the next one); kOutOfRange once every epoch has been
  // read; kTimedOut when nothing happened within `timeout`; the job's error
  // when it failed (a bad record under policy fail names file and offset).
  Result<std::optional<Batch>> next(std::chrono::milliseconds timeout = std::chrono::hours(24));

  uint64_t epoch() const;  // the epoch next() reads
  uint64_t job_id() const;
  uint64_t consumer_id() const;
  ReaderStats stats() const;
  // Leaves the job (its workers stop sending here). Idempotent.
  Status close();

 private:
  friend class Client;
  class Impl;
  explicit Reader(std::unique_ptr<Impl> impl);
  static Result<std::unique_ptr<Reader>> create(ReaderOptions options, const ClientOptions& client,
                                                const detail::ClientConnection& connection);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stoker
