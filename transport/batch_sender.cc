// BatchSender: handshake, credits, and the two push modes (active message
// with rendezvous; put + flush + ready).
#include "stoker/batch_sender.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "common/byte_codec.h"
#include "stoker/memory.h"
#include "transport/data_plane_messages.h"
#include "transport/host_identity.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/memory_region.h"
#include "transport/ucx/ucx_status.h"
#include "transport/ucx/worker.h"

namespace stoker {
namespace {

constexpr size_t kMaxHeaderBytes = 4 + kDescriptorHeaderBytes + kMaxTensors * kTensorEntryBytes;
constexpr auto kMaxSleep = std::chrono::milliseconds(100);

std::span<const std::byte> bytes_of(const void* p, size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

}  // namespace

class BatchSender::Impl {
 public:
  // One posted batch, from post() to its completion.
  struct Op {
    Impl* impl = nullptr;
    Completion done;
    std::array<std::byte, kMaxHeaderBytes> header{};
    size_t header_bytes = 0;
    size_t payload_bytes = 0;
  };

  static Result<std::unique_ptr<Impl>> connect(SenderOptions options);
  ~Impl() {
    (void)close(std::chrono::milliseconds(1000));
    // Destroying the worker purges requests still in flight (a dead receiver
    // leaves some), and their callbacks touch this object: destroy it while
    // every member is alive. Their completions are dropped, not run: the
    // caller's state may be gone.
    worker_.reset();
    due_.clear();
  }

  Status register_buffer(void* data, size_t bytes);
  Status post(const BatchDescriptor& d, std::span<const std::byte> payload, Completion done,
              std::chrono::milliseconds timeout);
  void poll();
  Status wait_for_credit(std::chrono::milliseconds timeout);
  Status wait_for_completion(std::chrono::milliseconds timeout);
  Status flush(std::chrono::milliseconds timeout);
  Status close(std::chrono::milliseconds timeout);

  uint32_t credits() const { return static_cast<uint32_t>(welcomed_ ? credits_.size() : 0); }
  bool can_post() const {
    const size_t window = window_bytes();
    return credits() != 0 && (window == 0 || bytes_in_flight_ < window);
  }
  // The smaller of our own window and the receiver's share; 0: no limit.
  size_t window_bytes() const {
    const size_t ours = options_.max_bytes_in_flight;
    const size_t theirs = receiver_window_;
    if (ours == 0 || theirs == 0) return std::max(ours, theirs);
    return std::min(ours, theirs);
  }
  size_t in_flight() const { return in_flight_; }
  uint32_t sender_id() const { return welcome_.sender_id; }
  uint64_t slot_bytes() const { return welcome_.slot_bytes; }
  PushMode mode() const { return options_.mode; }
  const Status& health() const { return health_; }

 private:
  // Progresses until `done()` or the deadline; sleeps on the wakeup fd.
  template <typename Done>
  Status progress_until(Done done, std::chrono::steady_clock::time_point deadline,
                        std::string_view what);
  void fail(Status why);
  Op* acquire_op(Completion done, size_t payload_bytes);
  void complete(Op* op, ucs_status_t status, std::string_view what);
  void run_completions();
  ucp_mem_h memh_for(std::span<const std::byte> payload) const;

  static ucs_status_t on_welcome(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_refuse(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static ucs_status_t on_credit(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);
  static void on_sent(void* request, ucs_status_t status, void* user_data);
  static void on_flushed(void* request, ucs_status_t status, void* user_data);
  void queue_ready_notice(Op* op);
  void send_ready_notices();
  // Whether queued notices go now or wait for more (mapped slots only).
  bool notices_due() const;
  // Where ready notices and the goodbye travel (see slots_mapped_).
  ucp_ep_h notice_ep() const { return slots_mapped_ ? ep_->get() : data_ep(); }
  // Where batches travel: the data endpoint, or the control endpoint when
  // there is none (data_on_control_).
  ucp_ep_h data_ep() const { return (data_on_control_ ? ep_ : data_ep_)->get(); }

  SenderOptions options_;
  std::string receiver_;
  // Declared first, destroyed last: UCX may still hold Op pointers until the
  // worker is gone.
  std::vector<std::unique_ptr<Op>> ops_;  // every Op ever made; reused
  std::vector<Op*> free_ops_;
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  std::vector<std::unique_ptr<ucx::MemoryRegion>> regions_;
  std::unique_ptr<ucx::Endpoint> ep_;       // control: handshake and credits (sockaddr)
  std::unique_ptr<ucx::Endpoint> data_ep_;  // batches: by worker address, so shared memory works
  // No data endpoint: UCX could not share memory with a receiver on this
  // host, and batches travel on the control endpoint.
  bool data_on_control_ = false;
  std::unique_ptr<ucx::RemoteKey> pool_rkey_;

  bool welcomed_ = false;
  bool attached_ = false;
  // Put mode into a pool mapped here (SlotReach::kMapped): each put is a copy
  // that is complete when ucp_put_nbx returns, and its ready notice goes on
  // the control endpoint, so that nothing of ours passes through the
  // receiver's shared-memory FIFO, which a sender killed mid-write blocks for
  // every sender on this host (docs/protocol.md §12).
  bool slots_mapped_ = false;
  bool closed_ = false;
  wire::Welcome welcome_;
  Status health_;
  std::deque<uint32_t> credits_;
  std::vector<std::byte> ready_notices_;  // put mode: u16 count, then BatchReady entries
  std::vector<Op*> noticed_;              // the batches of those entries, still in flight
  size_t in_flight_ = 0;
  size_t bytes_in_flight_ = 0;
  size_t receiver_window_ = 0;  // our share of the receiver's window, from its credits
  uint64_t completed_ = 0;      // ops ever completed
  std::vector<std::pair<Completion, Status>> due_;
  bool running_completions_ = false;
};

Result<std::unique_ptr<BatchSender::Impl>> BatchSender::Impl::connect(SenderOptions options) {
  STOKER_RETURN_IF_ERROR(ucx::check_busy_poll(options.busy_poll));
  auto impl = std::make_unique<Impl>();
  impl->options_ = std::move(options);
  STOKER_ASSIGN_OR_RETURN(auto address, SocketAddress::parse(impl->options_.receiver_address));
  impl->receiver_ = address.to_string();
  if (impl->options_.context) {
    impl->context_ = impl->options_.context.ucx();
  } else {
    STOKER_ASSIGN_OR_RETURN(impl->context_, ucx::Context::create(ucx::Traffic::kSendOnly));
  }
  STOKER_ASSIGN_OR_RETURN(impl->worker_, ucx::Worker::create(impl->context_));
  using wire::AmId;
  for (auto [id, cb] :
       {std::pair{AmId::kWelcome, &Impl::on_welcome}, std::pair{AmId::kRefuse, &Impl::on_refuse},
        std::pair{AmId::kCredit, &Impl::on_credit}}) {
    STOKER_RETURN_IF_ERROR(
        impl->worker_->set_am_handler(static_cast<uint16_t>(id), cb, impl.get()));
  }
  Impl* raw = impl.get();
  STOKER_ASSIGN_OR_RETURN(impl->ep_,
                          ucx::Endpoint::connect(*impl->worker_, address, [raw](ucs_status_t st) {
                            raw->fail(ucx::from_ucs(st, "connection lost"));
                          }));
  wire::Hello hello{.version = wire::kDataPlaneVersion,
                    .producer_id = impl->options_.producer_id,
                    .name = impl->options_.name,
                    .access_token = impl->options_.access_token};
  STOKER_RETURN_IF_ERROR(
      ucx::send_control_am(impl->ep_->get(), static_cast<uint16_t>(AmId::kHello), hello.encode()));
  const auto deadline = std::chrono::steady_clock::now() + impl->options_.connect_timeout;
  STOKER_RETURN_IF_ERROR(impl->progress_until([raw] { return raw->welcomed_; }, deadline,
                                              "waiting for the receiver's welcome"));
  // A sockaddr endpoint may only use the transports UCX's connection manager
  // allows (TCP in UCX 1.13); a second endpoint by worker address can use all
  // of them, shared memory and RDMA included, and several rails at once.
  // Batches travel on that one. It has no peer-failure handling: in UCX 1.13
  // asking for it rules out shared memory and multi-rail TCP (a single rail
  // cost 30% at 1 MiB on loopback, docs/perf.md). The control endpoint, which
  // has it, tells both sides when the other dies.
  bool shared_memory = !impl->welcome_.host_identity.empty() &&
                       impl->welcome_.host_identity == host_identity() &&
                       ucx_shared_memory_enabled();
  auto direct = ucx::Endpoint::connect_to_worker(*impl->worker_, impl->welcome_.worker_address,
                                                 impl->receiver_);
  if (direct.is_ok()) {
    impl->data_ep_ = std::move(direct).value();
  } else if (shared_memory && direct.status().code() == StatusCode::kUnsupported) {
    // UCX could not attach the receiver's shared memory: in UCX 1.13 its
    // segments are open to its own user and group only, so a receiver run by
    // another user on this host is out of reach (docs/protocol.md §12). The
    // control endpoint is TCP: batches go there, slower but delivered, as to
    // a receiver on another host.
    spdlog::warn(
        "sender: cannot share memory with the receiver at {} on this host (is it run by another "
        "user?): {}; sending batches over the control connection (TCP) instead",
        impl->receiver_, direct.status().message());
    impl->data_on_control_ = true;
    shared_memory = false;
    if (impl->options_.mode == PushMode::kPut) {
      // A put needs the pool's key, and unpacking the key of a shared-memory
      // pool we may not attach crashes inside UCX 1.13 (ucp_rkey_destroy on
      // its error path).
      return unsupported(
          fmt::format("put mode to the receiver at {} needs its shared memory, which this "
                      "process may not attach; use am or auto",
                      impl->receiver_));
    }
  } else {
    return direct.status();
  }
  if (impl->options_.mode == PushMode::kPut) {
    STOKER_ASSIGN_OR_RETURN(impl->pool_rkey_,
                            ucx::RemoteKey::unpack(impl->data_ep(), impl->welcome_.pool_rkey));
  } else if (shared_memory) {
    // Only to see whether the pool is mapped: a key that does not unpack
    // leaves auto with the other modes.
    auto key = ucx::RemoteKey::unpack(impl->data_ep(), impl->welcome_.pool_rkey);
    if (key.is_ok()) {
      impl->pool_rkey_ = std::move(key).value();
    } else {
      spdlog::debug("sender: {}", key.status().to_string());
    }
  }
  // A host pool that UCX mapped into this process through its key is a
  // shared-memory segment of the receiver's (its default pool): a put there
  // is one copy by this sender, straight into the slot.
  const bool mapped = impl->pool_rkey_ &&
                      impl->welcome_.memory_kind == static_cast<uint8_t>(MemoryKind::kHost) &&
                      impl->pool_rkey_->maps_locally(impl->welcome_.pool_address);
  if (impl->options_.mode == PushMode::kAuto) {
    const SlotReach reach = mapped          ? SlotReach::kMapped
                            : shared_memory ? SlotReach::kSharedMemory
                                            : SlotReach::kNetwork;
    impl->options_.mode = auto_push_mode(reach, impl->welcome_.slot_bytes);
    // Without a key (none unpacked) only active messages can go.
    if (!impl->pool_rkey_) impl->options_.mode = PushMode::kActiveMessage;
  }
  if (impl->options_.mode != PushMode::kPut) impl->pool_rkey_.reset();
  impl->slots_mapped_ = mapped && impl->options_.mode == PushMode::kPut;
  spdlog::debug("sender: pushing to {} by {}{}", impl->receiver_,
                push_mode_name(impl->options_.mode), mapped ? " (its slots are mapped here)" : "");
  STOKER_RETURN_IF_ERROR(ucx::send_control_am(impl->data_ep(), static_cast<uint16_t>(AmId::kAttach),
                                              wire::Attach{.sender_id = impl->welcome_.sender_id,
                                                           .token = impl->welcome_.attach_token,
                                                           .mode = impl->options_.mode}
                                                  .encode()));
  // The first credit message (possibly empty, when every slot is taken)
  // means the receiver has bound the data endpoint: the handshake is done.
  STOKER_RETURN_IF_ERROR(impl->progress_until([raw] { return raw->attached_; }, deadline,
                                              "waiting for the receiver to confirm"));
  return impl;
}

template <typename Done>
Status BatchSender::Impl::progress_until(Done done, std::chrono::steady_clock::time_point deadline,
                                         std::string_view what) {
  auto last_event = std::chrono::steady_clock::now();
  // Already done (a credit in hand, say): return without a progress call,
  // each of which costs UCX's TCP transport an epoll_wait.
  if (health_.is_ok() && done()) return Status::ok();
  while (true) {
    const unsigned events = worker_->progress();
    send_ready_notices();
    run_completions();
    if (!health_.is_ok()) return health_;
    if (done()) return Status::ok();
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return timed_out(fmt::format("{} from {}: nothing within the timeout", what, receiver_));
    }
    if (events != 0) last_event = now;
    if (now - last_event < options_.busy_poll) continue;  // a busy stream: keep polling
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    STOKER_RETURN_IF_ERROR(
        worker_->wait(std::clamp(left, std::chrono::milliseconds(0), kMaxSleep)));
  }
}

void BatchSender::Impl::fail(Status why) {
  if (!health_.is_ok()) return;
  health_ = Status(why.code(), fmt::format("receiver at {}: {}", receiver_, why.message()));
  spdlog::warn("sender: {}", health_.message());
}

ucs_status_t BatchSender::Impl::on_welcome(void* arg, const void* header, size_t header_length,
                                           void*, size_t, const ucp_am_recv_param_t*) {
  auto* self = static_cast<Impl*>(arg);
  auto welcome = wire::Welcome::decode(bytes_of(header, header_length));
  if (!welcome.is_ok()) {
    self->fail(welcome.status().with_context("bad welcome"));
    return UCS_OK;
  }
  self->welcome_ = std::move(welcome).value();
  self->welcomed_ = true;
  return UCS_OK;
}

ucs_status_t BatchSender::Impl::on_refuse(void* arg, const void* header, size_t header_length,
                                          void*, size_t, const ucp_am_recv_param_t*) {
  auto* self = static_cast<Impl*>(arg);
  auto refusal = wire::Refusal::decode(bytes_of(header, header_length));
  const std::string reason = refusal.is_ok() ? refusal->reason : refusal.status().message();
  const StatusCode code = refusal.is_ok() && refusal->version != wire::kDataPlaneVersion
                              ? StatusCode::kVersionMismatch
                              : StatusCode::kProtocolError;
  self->health_ =
      Status(code, fmt::format("receiver at {} refused this sender: {}", self->receiver_, reason));
  return UCS_OK;
}

ucs_status_t BatchSender::Impl::on_credit(void* arg, const void* header, size_t header_length,
                                          void*, size_t, const ucp_am_recv_param_t*) {
  auto* self = static_cast<Impl*>(arg);
  if (!self->welcomed_) {
    self->fail(protocol_error("credit before welcome"));
    return UCS_OK;
  }
  auto credit = wire::Credit::decode(bytes_of(header, header_length), self->welcome_.slot_count);
  if (!credit.is_ok()) {
    self->fail(credit.status().with_context("bad credit"));
    return UCS_OK;
  }
  self->credits_.insert(self->credits_.end(), credit->slots.begin(), credit->slots.end());
  self->receiver_window_ = credit->window_bytes;
  self->attached_ = true;
  return UCS_OK;
}

Status BatchSender::Impl::register_buffer(void* data, size_t bytes) {
  STOKER_ASSIGN_OR_RETURN(auto region,
                          ucx::MemoryRegion::map(context_, data, bytes, MemoryKind::kHost));
  regions_.push_back(std::move(region));
  return Status::ok();
}

ucp_mem_h BatchSender::Impl::memh_for(std::span<const std::byte> payload) const {
  for (const auto& r : regions_) {
    if (r->contains(payload.data(), payload.size())) return r->get();
  }
  return nullptr;
}

BatchSender::Impl::Op* BatchSender::Impl::acquire_op(Completion done, size_t payload_bytes) {
  if (free_ops_.empty()) {
    ops_.push_back(std::make_unique<Op>());
    ops_.back()->impl = this;
    free_ops_.push_back(ops_.back().get());
  }
  Op* op = free_ops_.back();
  free_ops_.pop_back();
  op->done = std::move(done);
  op->payload_bytes = payload_bytes;
  ++in_flight_;
  bytes_in_flight_ += payload_bytes;
  return op;
}

void BatchSender::Impl::complete(Op* op, ucs_status_t status, std::string_view what) {
  Status st = status == UCS_OK ? Status::ok() : ucx::from_ucs(status, what);
  if (status == UCS_ERR_REJECTED) {
    st = protocol_error(fmt::format("receiver at {} rejected the batch (see its log)", receiver_));
  }
  ++completed_;
  if (op->done) due_.emplace_back(std::move(op->done), std::move(st));
  op->done = nullptr;
  free_ops_.push_back(op);
  --in_flight_;
  bytes_in_flight_ -= op->payload_bytes;
}

void BatchSender::Impl::run_completions() {
  if (running_completions_) return;
  running_completions_ = true;
  // Completions may be added while running (never by the callbacks themselves,
  // which may not call the sender), so index rather than iterate.
  for (size_t i = 0; i < due_.size(); ++i) due_[i].first(due_[i].second);
  due_.clear();
  running_completions_ = false;
}

void BatchSender::Impl::on_sent(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->impl->complete(op, status, "sending a batch");
  ucp_request_free(request);
}

void BatchSender::Impl::on_flushed(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  if (request != nullptr) ucp_request_free(request);
  Impl* self = op->impl;
  if (status != UCS_OK) {
    self->complete(op, status, "putting a batch");
    return;
  }
  // The payload is in the slot. The receiver learns of it from a ready
  // notice, sent with others (send_ready_notices), and the batch completes
  // once that notice is sent: a sender that dies before it has not delivered
  // the batch, and its caller must not count it as delivered.
  self->queue_ready_notice(op);
}

void BatchSender::Impl::queue_ready_notice(Op* op) {
  const size_t limit = std::min(worker_->max_am_header(), wire::kMaxReadyNoticeBytes);
  if (ready_notices_.size() + op->header_bytes > limit) send_ready_notices();
  if (ready_notices_.empty()) ready_notices_.resize(2);  // the count, filled in when sent
  ready_notices_.insert(ready_notices_.end(), op->header.begin(),
                        op->header.begin() + static_cast<std::ptrdiff_t>(op->header_bytes));
  noticed_.push_back(op);
}

void BatchSender::Impl::send_ready_notices() {
  if (noticed_.empty()) return;
  wire::ByteWriter(std::span(ready_notices_).first(2)).put(static_cast<uint16_t>(noticed_.size()));
  // After the puts they announce. Over shared memory into a private pool,
  // UCX 1.13 carries the puts themselves through the receiver's FIFO (it
  // emulates them with active messages), so the notices go on the data
  // endpoint behind them and cost no TCP round of system calls per turn:
  // 64 KiB batches went from 7.7-8.6 to 11.4-13.2 GB/s (docs/perf.md). Into
  // mapped slots they go on the control endpoint (slots_mapped_).
  if (Status st = ucx::send_control_am(notice_ep(), static_cast<uint16_t>(wire::AmId::kBatchReady),
                                       std::exchange(ready_notices_, {}), {},
                                       [this, ops = std::exchange(noticed_, {})](ucs_status_t s) {
                                         for (Op* op : ops)
                                           complete(op, s, "sending a ready notice");
                                       });
      !st.is_ok()) {
    fail(st.with_context("sending ready notices"));
  }
}

bool BatchSender::Impl::notices_due() const {
  if (!slots_mapped_) return true;
  // A notice on the control endpoint is a TCP message: one per batch would
  // cost a system call on each side per batch, more than the copy of a small
  // one. They go in groups of a quarter of what the receiver granted us, so
  // it never waits on more than that many landed batches, and at once when
  // we cannot post again (64 KiB batches: an eighth moved 5.5-7.5 GB/s, a
  // quarter 6.9-9.6, a half hurt 1 MiB batches; docs/perf.md).
  const size_t granted = credits_.size() + in_flight_;  // in flight: noticed_ too
  return noticed_.size() >= std::max<size_t>(1, granted / 4) || !can_post();
}

Status BatchSender::Impl::post(const BatchDescriptor& d, std::span<const std::byte> payload,
                               Completion done, std::chrono::milliseconds timeout) {
  if (closed_) return invalid_argument("post() on a closed sender");
  if (!health_.is_ok()) return health_;
  if (payload.size() != d.payload_bytes) {
    return invalid_argument(fmt::format("payload of {} bytes, but the descriptor declares {}",
                                        payload.size(), d.payload_bytes));
  }
  if (payload.size() > welcome_.slot_bytes) {
    return invalid_argument(fmt::format("batch of {} bytes exceeds the receiver's {}-byte slots",
                                        payload.size(), welcome_.slot_bytes));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  STOKER_RETURN_IF_ERROR(progress_until([this] { return can_post(); }, deadline,
                                        "waiting for a credit and room in the window"));
  // The newest credit names the slot the receiver freed last, whose memory is
  // the likeliest to still be in cache (put mode writes into it directly).
  const uint32_t slot = credits_.back();
  Op* op = acquire_op(std::move(done), payload.size());
  const bool put = options_.mode == PushMode::kPut;
  Result<size_t> encoded = put ? wire::BatchReady{.slot = slot, .descriptor = d}.encode(op->header)
                               : d.encode(op->header);
  if (!encoded.is_ok()) {
    op->done = nullptr;
    complete(op, UCS_OK, "");
    return encoded.status();
  }
  op->header_bytes = *encoded;
  if (op->header_bytes > worker_->max_am_header()) {
    op->done = nullptr;
    complete(op, UCS_OK, "");
    return invalid_argument(fmt::format(
        "descriptor of {} bytes exceeds UCX's {}-byte active-message header limit; send fewer "
        "tensors per batch",
        *encoded, worker_->max_am_header()));
  }
  credits_.pop_back();

  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  param.user_data = op;
  if (ucp_mem_h memh = memh_for(payload)) {
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    param.memh = memh;
  }
  ucs_status_ptr_t request;
  if (!put) {
    param.cb.send = &Impl::on_sent;
    param.flags = UCP_AM_SEND_FLAG_REPLY;
    // A device pool cannot take the receiver's CPU copy of an eager message.
    if (welcome_.memory_kind == static_cast<uint8_t>(MemoryKind::kDevice)) {
      param.flags |= UCP_AM_SEND_FLAG_RNDV;
    }
    request =
        ucp_am_send_nbx(data_ep(), static_cast<uint16_t>(wire::AmId::kBatch), op->header.data(),
                        op->header_bytes, payload.data(), payload.size(), &param);
    if (request == nullptr || UCS_PTR_IS_ERR(request)) {
      complete(op, UCS_PTR_STATUS(request), "sending a batch");
    }
  } else {
    // Put, then flush; the flush callback sends the ready notice.
    param.op_attr_mask &= ~uint32_t{UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA};
    param.flags = 0;
    const uint64_t remote = welcome_.pool_address + uint64_t{slot} * welcome_.slot_bytes;
    request =
        ucp_put_nbx(data_ep(), payload.data(), payload.size(), remote, pool_rkey_->get(), &param);
    if (UCS_PTR_IS_ERR(request)) {
      complete(op, UCS_PTR_STATUS(request), "putting a batch");
    } else {
      if (request != nullptr) ucp_request_free(request);  // the flush reports completion
      ucp_request_param_t fp{};
      fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      fp.cb.send = &Impl::on_flushed;
      fp.user_data = op;
      ucs_status_ptr_t flush = ucp_ep_flush_nbx(data_ep(), &fp);
      if (flush == nullptr) {
        on_flushed(nullptr, UCS_OK, op);  // flushed at once (always, into mapped slots)
        if (notices_due()) send_ready_notices();
      } else if (UCS_PTR_IS_ERR(flush)) {
        complete(op, UCS_PTR_STATUS(flush), "flushing a put");
      }
    }
  }
  run_completions();
  return Status::ok();
}

void BatchSender::Impl::poll() {
  worker_->progress();
  send_ready_notices();
  run_completions();
}

Status BatchSender::Impl::wait_for_credit(std::chrono::milliseconds timeout) {
  return progress_until([this] { return can_post(); }, std::chrono::steady_clock::now() + timeout,
                        "waiting for a credit and room in the window");
}

Status BatchSender::Impl::wait_for_completion(std::chrono::milliseconds timeout) {
  if (in_flight_ == 0) return invalid_argument("nothing is in flight");
  const uint64_t before = completed_;
  return progress_until([&] { return completed_ != before; },
                        std::chrono::steady_clock::now() + timeout, "waiting for a completion");
}

Status BatchSender::Impl::flush(std::chrono::milliseconds timeout) {
  send_ready_notices();  // those held back for a fuller message
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  return progress_until([this] { return in_flight_ == 0; }, deadline,
                        "waiting for sends to complete");
}

Status BatchSender::Impl::close(std::chrono::milliseconds timeout) {
  if (closed_) return Status::ok();
  closed_ = true;
  // A sender that failed cannot end its stream cleanly: say why.
  Status st = health_.is_ok() ? Status::ok() : health_.with_context("closing");
  if (health_.is_ok() && (data_ep_ || data_on_control_)) {
    // The goodbye travels after a flush, on the endpoint that carried the
    // batches (or their ready notices: notice_ep()), so the receiver sees it
    // only once every batch has arrived.
    st = flush(timeout);
    if (st.is_ok()) {
      ucp_request_param_t param{};
      st = worker_->wait_for(ucp_ep_flush_nbx(data_ep(), &param), timeout,
                             "flushing the data endpoint");
    }
    if (st.is_ok()) {
      st = ucx::send_control_am(notice_ep(), static_cast<uint16_t>(wire::AmId::kGoodbye), {});
    }
  }
  pool_rkey_.reset();
  if (!attached_) {  // the handshake never finished: nothing to flush
    if (data_ep_) data_ep_->abandon();
    if (ep_) ep_->abandon();
  }
  data_ep_.reset();  // flushes the goodbye (bounded) and closes
  ep_.reset();
  run_completions();
  return st;
}

BatchSender::BatchSender(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BatchSender::~BatchSender() = default;

Result<std::unique_ptr<BatchSender>> BatchSender::connect(SenderOptions options) {
  STOKER_ASSIGN_OR_RETURN(auto impl, Impl::connect(std::move(options)));
  return std::unique_ptr<BatchSender>(new BatchSender(std::move(impl)));
}

Status BatchSender::register_buffer(void* data, size_t bytes) {
  return impl_->register_buffer(data, bytes);
}
Status BatchSender::post(const BatchDescriptor& d, std::span<const std::byte> payload,
                         Completion on_complete, std::chrono::milliseconds timeout) {
  return impl_->post(d, payload, std::move(on_complete), timeout);
}
void BatchSender::poll() { impl_->poll(); }
Status BatchSender::wait_for_credit(std::chrono::milliseconds timeout) {
  return impl_->wait_for_credit(timeout);
}
Status BatchSender::wait_for_completion(std::chrono::milliseconds timeout) {
  return impl_->wait_for_completion(timeout);
}
Status BatchSender::flush(std::chrono::milliseconds timeout) { return impl_->flush(timeout); }
Status BatchSender::close(std::chrono::milliseconds timeout) { return impl_->close(timeout); }
uint32_t BatchSender::credits() const { return impl_->credits(); }
bool BatchSender::can_post() const { return impl_->can_post(); }
size_t BatchSender::window_bytes() const { return impl_->window_bytes(); }
size_t BatchSender::in_flight() const { return impl_->in_flight(); }
uint32_t BatchSender::sender_id() const { return impl_->sender_id(); }
uint64_t BatchSender::slot_bytes() const { return impl_->slot_bytes(); }
PushMode BatchSender::mode() const { return impl_->mode(); }
const Status& BatchSender::health() const { return impl_->health(); }

}  // namespace stoker
