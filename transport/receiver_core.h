// The machinery behind BatchReceiver: one progress thread (a shard) with its
// UCX worker, its part of the landing pool, the credit accounting of the
// senders it serves, and every UCX callback of those senders. A receiver has
// one shard or several; shard 0 owns the listener and hands each new sender
// to the shard serving the fewest. Slot and sender state belong to their
// shard's thread alone; the consumer reaches it only through the landed
// queue (batches out) and the shard's release queue (slots back in).
#pragma once

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/push_mode.h"
#include "transport/data_plane_messages.h"
#include "transport/landed_queue.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/listener.h"
#include "transport/ucx/memory_region.h"
#include "transport/ucx/worker.h"

namespace stoker::detail {

class ReceiverCore : public std::enable_shared_from_this<ReceiverCore> {
 public:
  // Where a shard sits in its receiver. Shard 0 listens and hands senders to
  // `siblings` (indexed by shard; its own entry unused), which it must not
  // outlive as a running shard: stop shard 0 first.
  struct Placement {
    uint32_t shard = 0;
    uint32_t shard_count = 1;
    std::shared_ptr<LandedQueue> landed;
    std::vector<ReceiverCore*> siblings;
    // Senders streaming to the whole receiver (every shard): they share its
    // max_bytes_in_flight. Null: this shard counts its own.
    std::shared_ptr<std::atomic<uint32_t>> streaming;
  };
  // `options.slot_count` is this shard's part of the pool.
  static Result<std::shared_ptr<ReceiverCore>> create(ReceiverOptions options, Placement placement);
  ReceiverCore(const ReceiverCore&) = delete;
  ReceiverCore& operator=(const ReceiverCore&) = delete;
  ~ReceiverCore();

  // Stops the progress thread after closing every endpoint. Idempotent.
  void stop();

  // The batch in `slot`, which the landed queue named for this shard.
  LandedBatch take(uint32_t slot);
  void release(uint32_t slot);
  // This shard's counters; senders_by_thread is the receiver's to fill.
  ReceiverStats stats() const;
  // Senders this shard serves, or will once it accepts those handed to it.
  uint32_t senders_served() const { return load_.load(std::memory_order_relaxed); }

  // Shard 0 only: where senders connect.
  std::string address() const { return address_; }
  uint16_t port() const { return port_; }
  MemoryKind memory_kind() const { return pool_kind_; }

 private:
  struct Slot {
    enum class State : uint8_t { kFree, kGranted, kLanding, kLanded };
    State state = State::kFree;
    uint32_t sender = 0;
    uint64_t producer = 0;  // the sender's producer id, kept for the consumer
    BatchDescriptor descriptor;
    ReceiverCore* core = nullptr;  // user_data of the landing request
    uint32_t index = 0;
    void* request = nullptr;  // the rendezvous receive in flight, while kLanding
  };
  struct Sender {
    uint32_t id = 0;
    uint64_t producer_id = 0;
    std::unique_ptr<ucx::Endpoint> ep;
    std::string label;
    PushMode mode = PushMode::kActiveMessage;
    bool welcomed = false;
    bool attached = false;        // its data endpoint has been bound
    bool confirm_attach = false;  // the next credit message must go out, even empty
    uint64_t attach_token = 0;
    ucp_ep_h data_ep = nullptr;  // UCX's endpoint for its data endpoint (not ours to close)
    bool finished = false;
    bool failed = false;
    bool streaming = false;  // counted in Placement::streaming: attached, not yet gone
    // Slots it may fill, oldest first. An active-message batch lands in the
    // newest; a put names its own.
    std::deque<uint32_t> granted;
    std::vector<uint32_t> credits_to_send;  // granted but not yet told
    uint32_t deficit = 0;                   // credits owed when slots free up
  };
  ReceiverCore(ReceiverOptions options, Placement placement)
      : options_(std::move(options)), placement_(std::move(placement)) {}
  Status init();
  // The pool of slot_count slots (see pool_storage_).
  Status allocate_pool(size_t bytes);
  std::byte* slot_data(uint32_t slot) const;
  void run();

  // Connection requests shard 0 hands to this shard, from its thread. False
  // once this shard no longer takes them (the caller rejects the request).
  bool adopt(ucp_conn_request_h request);
  void accept_adopted();
  // Shard 0, before its listener goes: this shard takes no more requests,
  // and those it has not accepted yet come back (they refer to the listener).
  // Waits for an accept in progress here, which uses the listener too.
  std::vector<ucp_conn_request_h> close_adoption();
  void hand_out(ucp_conn_request_h request);  // shard 0: to the least busy shard

  // UCX callbacks (progress thread).
  static ucs_status_t on_hello(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_attach(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_batch(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_ready(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_goodbye(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param);
  static void on_landed(void* request, ucs_status_t status, size_t length, void* user_data);
  void accept(ucp_conn_request_h request);  // on this shard's worker
  void on_sender_error(uint32_t sender_id, ucs_status_t status);
  // Settles disconnects once the worker is drained (`idle`) or they are old
  // enough that anything sent before them has been delivered.
  void settle_disconnects(bool idle);
  void reclaim_landing_slots(uint32_t sender_id);

  // Slot and credit bookkeeping (progress thread).
  Sender* find_sender(const ucp_am_recv_param_t* param);  // by the reply endpoint
  Sender* find_sender(uint32_t id);
  void grant(Sender& sender, uint32_t count);
  void return_slot(uint32_t slot);  // to its sender as a new credit, or to the free list
  void free_slot(uint32_t slot);    // to a sender owed credit, or to the free list
  void reject(Sender* sender, RejectReason reason, const Status& why);
  void land(uint32_t slot);
  void accept_ready(Sender& sender, const wire::BatchReady& ready);
  bool drain_releases();
  // Credits go out in messages of credit_batch_ or more while the sender has
  // enough in hand; all of them when `all` (a turn with nothing else to do).
  bool credits_due(const Sender& sender) const;
  void send_credits(bool all);
  // Counts a sender in or out of the receiver's streaming senders.
  void set_streaming(Sender& sender, bool streaming);
  // Each streaming sender's share of options_.max_bytes_in_flight; 0: none.
  uint64_t window_share() const;
  void retire(Sender& sender);
  void reap_retired();
  void emit(PeerEvent::Kind kind, const Sender& sender, Status status = Status::ok());

  ReceiverOptions options_;
  Placement placement_;
  // An eighth of a sender's credits: one control message per that many
  // released batches instead of one per batch (docs/protocol.md §7).
  size_t credit_batch_ = std::max<size_t>(1, options_.credits_per_sender / 8);
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  // The landing pool: memory from options_.landing_memory (pool_storage_),
  // or, by default, host memory UCX allocated and pool_region_ owns.
  Buffer pool_storage_;
  std::unique_ptr<ucx::MemoryRegion> pool_region_;  // registered; data() is slot 0
  MemoryKind pool_kind_ = MemoryKind::kHost;
  std::vector<std::byte> pool_rkey_;
  std::vector<std::byte> worker_address_;
  std::mt19937_64 token_source_{std::random_device{}()};
  std::unique_ptr<ucx::Listener> listener_;
  std::string address_;
  uint16_t port_ = 0;

  // Progress-thread state.
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<std::unique_ptr<Sender>> senders_;
  std::vector<std::unique_ptr<Sender>> retired_;  // endpoints to close
  struct Disconnect {
    uint32_t sender_id;
    ucs_status_t status;
    std::chrono::steady_clock::time_point when;
  };
  std::vector<Disconnect> disconnects_;  // to settle
  bool landed_this_turn_ = false;        // the consumer is owed a wake-up
  uint64_t announced_window_ = 0;        // the window share our senders were last told
  uint32_t next_sender_id_ = 0;          // ids are unique across shards: shard + k * shard_count
  // Senders welcomed whose data endpoint has not attached, gone ones
  // included: while any is, a data-endpoint handshake may be in flight.
  uint32_t welcomed_not_attached_ = 0;

  // Shard 0 -> this shard: connection requests to accept here. Held while
  // they are accepted: shard 0 must not destroy its listener meanwhile.
  std::mutex adopt_mu_;
  std::vector<ucp_conn_request_h> adopted_;
  bool adoption_closed_ = false;  // under adopt_mu_
  std::atomic<bool> has_adopted_{false};
  // Senders served or about to be (adopted), which shard 0 balances.
  std::atomic<uint32_t> load_{0};

  // Consumer <-> progress thread. The consumer reads a landed slot's
  // descriptor and sender from slots_: nothing writes a landed slot until it
  // is released.
  std::mutex release_mu_;
  std::vector<uint32_t> releases_;
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;

  // Counters, written by the progress thread.
  std::atomic<uint64_t> batches_landed_{0};
  std::atomic<uint64_t> bytes_landed_{0};
  std::array<std::atomic<uint64_t>, kRejectReasonCount> rejected_{};
  std::atomic<uint64_t> senders_connected_{0};
  std::atomic<uint64_t> senders_finished_{0};
  std::atomic<uint64_t> senders_failed_{0};
  std::atomic<uint32_t> slots_free_{0};
};

}  // namespace stoker::detail
