// BatchSender: the pushing side of the data plane. It connects to one
// BatchReceiver, holds the credits the receiver grants, and sends a batch
// only with a credit in hand, so the receiver's memory is bounded and
// backpressure reaches whoever produces batches.
//
// Threading: a BatchSender is driven by one thread; it makes progress inside
// its own calls (post, poll, flush, close). When it waits, it polls for
// SenderOptions::busy_poll after the last event, then sleeps on UCX's wakeup
// fd. Completions run on that thread, from within those calls; they may not
// call back into the sender.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "stoker/batch_descriptor.h"
#include "stoker/push_mode.h"
#include "stoker/result.h"
#include "stoker/transport_context.h"

namespace stoker {

struct SenderOptions {
  std::string receiver_address;  // "host:port" of a BatchReceiver
  PushMode mode = PushMode::kAuto;
  std::string name;          // shown in the receiver's logs and events
  uint64_t producer_id = 0;  // told to the receiver; LandedBatch::producer_id() returns it
  std::string access_token;  // the receiver's ReceiverOptions::access_token, if it has one
  std::chrono::milliseconds connect_timeout{10'000};
  // post() starts a batch only while fewer bytes than this are in flight
  // (so at least one always goes), nor more than the receiver's share for
  // this sender of its own ReceiverOptions::max_bytes_in_flight, whichever
  // is smaller. 0: the receiver's share alone limits it (and where the
  // receiver sets none either, credits alone do).
  size_t max_bytes_in_flight = 0;
  // How long a wait keeps polling UCX after the last event before it sleeps
  // on the worker's wakeup fd (ReceiverOptions::busy_poll says more). Short
  // by default: a worker's cores belong to its pipeline. Must not be
  // negative.
  std::chrono::microseconds busy_poll{50};
  // The process's shared UCX context; empty: the sender creates its own.
  TransportContext context;
};

class BatchSender {
 public:
  // Runs once the payload may be reused: OK when the batch has left for the
  // receiver, or the error that stopped it (e.g. the receiver died).
  using Completion = std::function<void(const Status&)>;

  // Connects and completes the handshake. Fails with kVersionMismatch when the
  // receiver speaks another protocol version, naming both.
  static Result<std::unique_ptr<BatchSender>> connect(SenderOptions options);
  // close() with a short timeout, if it was not called.
  ~BatchSender();
  BatchSender(const BatchSender&) = delete;
  BatchSender& operator=(const BatchSender&) = delete;

  // Registers host memory that payloads will come from, so large sends go
  // zero-copy from it. Optional; the memory must outlive the sender.
  Status register_buffer(void* data, size_t bytes);

  // Waits up to `timeout` for a credit, then starts sending `payload`, which
  // must hold descriptor.payload_bytes bytes and stay unchanged until
  // `on_complete` runs. That runs once the batch is delivered as far as this
  // sender can tell (am: sent, or pulled by the receiver when large; put:
  // its ready notice sent), or with the error that stopped it. Fails fast
  // once the receiver has failed.
  Status post(const BatchDescriptor& descriptor, std::span<const std::byte> payload,
              Completion on_complete, std::chrono::milliseconds timeout);

  // Makes progress without blocking: sends ready notices held back for a
  // fuller message, and runs due completions. Call it while there is
  // nothing to post, or batches may wait unannounced.
  void poll();
  // Waits until can_post() (kTimedOut if that does not come), running
  // completions meanwhile; fails fast once the receiver has failed.
  Status wait_for_credit(std::chrono::milliseconds timeout);
  // Waits until at least one posted batch completes (kTimedOut if none does).
  Status wait_for_completion(std::chrono::milliseconds timeout);
  // Waits until every posted batch has completed.
  Status flush(std::chrono::milliseconds timeout);
  // Flushes, tells the receiver this stream ended cleanly and disconnects.
  // A sender whose connection failed disconnects and returns that failure:
  // its receiver counts it as failed, not finished.
  Status close(std::chrono::milliseconds timeout);

  uint32_t credits() const;  // credits in hand
  // A credit in hand and room in the window: post() will not wait.
  bool can_post() const;
  // Payload bytes it lets in flight now: the smaller of max_bytes_in_flight
  // and the receiver's latest share for it, ignoring a 0; 0: no limit.
  size_t window_bytes() const;
  size_t in_flight() const;      // posted, not yet completed
  uint32_t sender_id() const;    // as the receiver numbered us
  uint64_t slot_bytes() const;   // the receiver's landing slot size
  PushMode mode() const;         // as chosen at connect (never kAuto)
  const Status& health() const;  // OK, or why the connection is dead

 private:
  class Impl;
  explicit BatchSender(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stoker
