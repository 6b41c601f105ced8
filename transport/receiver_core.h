// The machinery behind BatchReceiver: the landing pool, per-sender credit
// accounting and the progress thread that runs every UCX callback. Slot and
// sender state belong to the progress thread alone; the consumer reaches it
// only through the ready queue (landed batches out) and the release queue
// (slots back in).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/push_mode.h"
#include "transport/data_plane_messages.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/listener.h"
#include "transport/ucx/memory_region.h"
#include "transport/ucx/worker.h"

namespace stoker::detail {

class ReceiverCore : public std::enable_shared_from_this<ReceiverCore> {
 public:
  static Result<std::shared_ptr<ReceiverCore>> create(ReceiverOptions options);
  ReceiverCore(const ReceiverCore&) = delete;
  ReceiverCore& operator=(const ReceiverCore&) = delete;
  ~ReceiverCore();

  // Stops the progress thread after closing every endpoint. Idempotent.
  void stop();

  Result<LandedBatch> next(std::chrono::milliseconds timeout);
  void release(uint32_t slot);
  ReceiverStats stats() const;

  std::string address() const { return address_; }
  uint16_t port() const { return port_; }
  MemoryKind memory_kind() const { return pool_.kind(); }

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
    std::deque<uint32_t> granted;           // slots it may fill, oldest first
    std::vector<uint32_t> credits_to_send;  // granted but not yet told
    uint32_t deficit = 0;                   // credits owed when slots free up
  };
  explicit ReceiverCore(ReceiverOptions options) : options_(std::move(options)) {}
  Status init();
  void run();

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
  void accept(ucp_conn_request_h request);
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
  void send_credits();
  void retire(Sender& sender);
  void reap_retired();
  void emit(PeerEvent::Kind kind, const Sender& sender, Status status = Status::ok());

  ReceiverOptions options_;
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  Buffer pool_;
  std::unique_ptr<ucx::MemoryRegion> pool_region_;
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
  uint32_t next_sender_id_ = 1;

  // Consumer <-> progress thread.
  mutable std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  // Landed slots waiting for the consumer, which reads their descriptor and
  // sender from slots_: nothing writes a landed slot until it is released.
  std::deque<uint32_t> ready_;
  int waiting_consumers_ = 0;  // in next(), under ready_mu_
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
