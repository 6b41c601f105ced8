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
#include "stoker/memory.h"
#include "stoker/result.h"
#include "stoker/tensor.h"

namespace stoker {

struct ClientOptions;

enum class Sharding : uint8_t {
  kOff,      // every worker produces the whole dataset
  kDynamic,  // the coordinator hands splits to workers on demand (default)
  kFile,     // static: whole files, by worker index
  kData,     // static: every n-th record, by worker index
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
  // Landing memory. Device memory needs a CUDA build and a UCX with CUDA
  // support; see plan_landing().
  MemoryKind memory = MemoryKind::kHost;
  int device = 0;
  uint32_t slots = 32;
  size_t slot_bytes = 0;  // 0: the job's largest batch (asked of the coordinator)
  uint32_t credits_per_worker = 4;
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
  std::span<std::byte> payload() const;
  MemoryKind memory() const;
  // The named tensor, as a view into the landed payload; kNotFound naming
  // the tensors the batch has.
  Result<TensorView> tensor(std::string_view name) const;
  // Returns the slot. Calling it twice is kFailedPrecondition.
  Status release();
  bool valid() const;

 private:
  friend class Reader;
  Batch(LandedBatch landed, int device);
  LandedBatch landed_;
  int device_ = -1;
  bool released_ = false;
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
