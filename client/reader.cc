// Reader: joining a job, receiving its batches, and telling epochs apart.
//
// How an epoch ends: each worker reports to the coordinator, per epoch, how
// many batches it delivered to each consumer. Once every split of the epoch
// is done (or lost) and every live worker has reported, the coordinator calls
// the epoch complete and gives this reader its expected count per worker.
// The epoch ends here when that many batches from each worker have landed,
// or the worker died (what it had in flight is lost: at most once).
// Batches of the next epoch that land early wait in their slots.
#include "stoker/reader.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "client/batch_preparation.h"
#include "client/batch_state.h"
#include "client/client_internal.h"
#include "stoker/landing.h"
#include "transport/control/control_client.h"
#include "transport/control/control_frame.h"

namespace stoker {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kCallTimeout = std::chrono::seconds(5);
constexpr auto kReceivePoll = std::chrono::milliseconds(20);

control::ShardingMode to_control(Sharding s) {
  switch (s) {
    case Sharding::kOff:
      return control::SHARDING_OFF;
    case Sharding::kFile:
      return control::SHARDING_FILE;
    case Sharding::kData:
      return control::SHARDING_DATA;
    case Sharding::kDynamic:
      break;
  }
  return control::SHARDING_DYNAMIC;
}

}  // namespace

// ---------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------

detail::BatchState::~BatchState() = default;

Batch::Batch() = default;
Batch::Batch(std::shared_ptr<detail::BatchState> state) : state_(std::move(state)) {}
Batch::Batch(Batch&&) noexcept = default;
Batch& Batch::operator=(Batch&&) noexcept = default;
Batch::~Batch() = default;

namespace {
const BatchDescriptor kNoDescriptor{};
}

const BatchDescriptor& Batch::descriptor() const {
  return state_ ? state_->descriptor : kNoDescriptor;
}
uint64_t Batch::producer() const { return state_ ? state_->producer : 0; }
MemoryKind Batch::memory() const { return state_ ? state_->memory : MemoryKind::kHost; }
int Batch::device() const { return state_ ? state_->device : -1; }
bool Batch::valid() const { return state_ != nullptr; }

std::vector<std::string> Batch::tensor_names() const {
  std::vector<std::string> names;
  if (state_) {
    for (const auto& [name, view] : state_->tensors) names.push_back(name);
  }
  return names;
}

Result<TensorView> Batch::tensor(std::string_view name) const {
  if (!state_) return failed_precondition("the batch was released");
  std::string names;
  for (const auto& [n, view] : state_->tensors) {
    if (n == name) return view;
    names += fmt::format("{}'{}'", names.empty() ? "" : ", ", n);
  }
  return not_found(fmt::format("the batch has no tensor '{}' (it has {})", name, names));
}

Result<DLPackTensor> Batch::to_dlpack(std::string_view name) const {
  STOKER_ASSIGN_OR_RETURN(auto view, tensor(name));
  return stoker::to_dlpack(view, state_);
}

Result<LegacyDLPackTensor> Batch::to_legacy_dlpack(std::string_view name) const {
  STOKER_ASSIGN_OR_RETURN(auto view, tensor(name));
  return stoker::to_legacy_dlpack(view, state_);
}

Status Batch::wait_on(StreamRef stream) const {
  if (!state_) return failed_precondition("the batch was released");
  if (state_->memory != MemoryKind::kDevice) return Status::ok();  // ready when handed out
  return state_->ready.enqueue_wait(stream);
}

Status Batch::copy_to_host(std::string_view name, std::span<std::byte> out) const {
  STOKER_ASSIGN_OR_RETURN(auto view, tensor(name));
  if (!view.is_contiguous() || out.size() != view.byte_size()) {
    return invalid_argument(fmt::format("tensor '{}' has {} bytes; the buffer has {}", name,
                                        view.byte_size(), out.size()));
  }
  if (state_->memory != MemoryKind::kDevice) {
    std::memcpy(out.data(), view.data(), out.size());
    return Status::ok();
  }
  STOKER_RETURN_IF_ERROR(state_->ready.synchronize());
  STOKER_RETURN_IF_ERROR(copy_async(out.data(), view.data(), out.size(), StreamRef()));
  return synchronize_stream(StreamRef());
}

Status Batch::release() {
  if (!state_) return failed_precondition("the batch was already released");
  state_.reset();  // the slot returns once no DLPack export holds it either
  return Status::ok();
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

class Reader::Impl {
 public:
  Impl(ReaderOptions options, const ClientOptions& client)
      : options_(std::move(options)), client_(client) {}
  ~Impl() { (void)close(); }

  Status open(const detail::ClientConnection& connection);
  Result<std::optional<Batch>> next(std::chrono::milliseconds timeout);
  Status close();

  uint64_t epoch() const { return epoch_; }
  uint64_t job_id() const { return job_id_.load(); }
  uint64_t consumer_id() const { return consumer_id_.load(); }
  ReaderStats stats() const {
    std::lock_guard lock(mu_);
    ReaderStats s = stats_;
    s.workers_lost = failed_producers_.size();
    return s;
  }

 private:
  std::optional<control::Message> join_request() const;
  Status on_joined(const Result<control::Message>& answer);
  void heartbeat_loop();
  void heartbeat();
  // A live worker whose batches of the current epoch have not all landed.
  struct Shortfall {
    uint64_t worker, delivered, landed;
  };
  // nullopt until the coordinator declares the current epoch complete; then
  // the workers whose batches the reader still waits for.
  std::optional<std::vector<Shortfall>> epoch_shortfall_locked() const;
  bool epoch_complete_locked() const {
    const auto shortfall = epoch_shortfall_locked();
    return shortfall && shortfall->empty();
  }
  // What the current epoch still waits for, for a timeout's message.
  std::string epoch_waits_for_locked() const;
  void wake_heartbeat();
  Result<std::optional<Batch>> hand_out(LandedBatch landed);

  ReaderOptions options_;
  ClientOptions client_;
  std::string access_token_;
  std::string advertised_address_;
  std::unique_ptr<BatchReceiver> receiver_;
  std::unique_ptr<detail::BatchPreparer> preparer_;
  std::unique_ptr<control::ControlClient> control_;
  std::atomic<uint64_t> consumer_id_{0};
  std::atomic<uint64_t> job_id_{0};
  bool closed_ = false;

  // Reader thread.
  uint64_t epoch_ = 0;
  std::map<uint64_t, std::deque<LandedBatch>> early_;  // batches of later epochs
  Clock::time_point last_handout_{};
  double seconds_per_batch_ = 0;

  // Shared with the heartbeat thread and receiver callbacks.
  mutable std::mutex mu_;
  std::condition_variable heartbeat_cv_;
  bool heartbeat_now_ = false;
  bool stopping_ = false;
  std::atomic<uint64_t> reported_epoch_{0};
  Status job_error_;
  std::optional<control::IterationStatus> status_;  // of reported_epoch_
  std::set<uint64_t> dead_workers_;
  std::set<uint64_t> failed_producers_;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> landed_;  // (epoch, worker) -> batches
  ReaderStats stats_;
  std::thread heartbeat_thread_;
};

std::optional<control::Message> Reader::Impl::join_request() const {
  control::Message m;
  auto* join = m.mutable_join_job();
  join->set_consumer_id(consumer_id_.load());
  join->set_job_name(options_.job_name);
  join->set_pipeline_spec(options_.pipeline_spec);
  join->mutable_options()->set_sharding(to_control(options_.sharding));
  join->mutable_options()->set_redeliver(options_.redeliver);
  join->mutable_options()->set_epochs(options_.epochs);
  join->set_receiver_address(advertised_address_);
  join->set_access_token(access_token_);
  join->set_name(options_.name.empty() ? client_.name : options_.name);
  return m;
}

Status Reader::Impl::on_joined(const Result<control::Message>& answer) {
  if (answer.is_ok() && answer->has_job_joined()) {
    const auto& joined = answer->job_joined();
    if (consumer_id_.load() == 0) {
      consumer_id_ = joined.consumer_id();
      job_id_ = joined.job_id();
      epoch_ = joined.first_iteration();
      reported_epoch_ = epoch_;
    }
    wake_heartbeat();
    return Status::ok();
  }
  Status why = answer.is_ok() ? protocol_error("unexpected answer to join_job") : answer.status();
  if (consumer_id_.load() != 0 && why.code() == StatusCode::kNotFound) {
    // After a reconnection: the coordinator gave up on us. Nothing to retry.
    std::lock_guard lock(mu_);
    job_error_ = why;
    return Status::ok();
  }
  return why;
}

Status Reader::Impl::open(const detail::ClientConnection& connection) {
  if (options_.pipeline_spec.empty()) return invalid_argument("the reader needs a pipeline spec");
  if (options_.credits_per_worker == 0 || options_.slots < options_.credits_per_worker) {
    return invalid_argument(fmt::format("slots ({}) must be at least credits_per_worker ({}) > 0",
                                        options_.slots, options_.credits_per_worker));
  }
  size_t slot_bytes = options_.slot_bytes;
  if (slot_bytes == 0) {
    STOKER_ASSIGN_OR_RETURN(auto info, connection.describe_pipeline(options_.pipeline_spec));
    slot_bytes = std::max<size_t>(info.max_batch_bytes(), 4096);
  }
  // Where batches land, given this build and the loaded UCX.
  STOKER_ASSIGN_OR_RETURN(const auto transport, query_transport());
  STOKER_ASSIGN_OR_RETURN(const auto plan, plan_landing(options_.memory, transport));
  if (!plan.note.empty()) spdlog::warn("reader: {}", plan.note);
  std::shared_ptr<MemoryResource> landing;
  if (plan.land_in != MemoryKind::kHost) {
    STOKER_ASSIGN_OR_RETURN(landing, make_memory_resource(plan.land_in, options_.device));
  }
  STOKER_ASSIGN_OR_RETURN(
      preparer_, detail::BatchPreparer::create(options_, plan.land_in, plan.copy_to_device));
  access_token_ = detail::random_token();
  STOKER_ASSIGN_OR_RETURN(receiver_,
                          BatchReceiver::start({.listen_address = options_.listen_address,
                                                .slot_bytes = slot_bytes,
                                                .slot_count = options_.slots,
                                                .credits_per_sender = options_.credits_per_worker,
                                                .max_bytes_in_flight = options_.max_bytes_in_flight,
                                                .progress_threads = options_.receiver_threads,
                                                .busy_poll = options_.busy_poll,
                                                .access_token = access_token_,
                                                .landing_memory = landing,
                                                .on_peer_event =
                                                    [this](const PeerEvent& e) {
                                                      if (e.kind != PeerEvent::Kind::kFailed) {
                                                        return;
                                                      }
                                                      std::lock_guard lock(mu_);
                                                      failed_producers_.insert(e.producer_id);
                                                    },
                                                .context = connection.transport()}));
  const std::string host = options_.advertise_host.empty()
                               ? connection.local_host_toward_coordinator()
                               : options_.advertise_host;
  advertised_address_ = fmt::format("{}:{}", host, receiver_->port());
  STOKER_ASSIGN_OR_RETURN(
      control_,
      control::ControlClient::connect(
          {.server_address = client_.coordinator,
           .role = control::ROLE_CONSUMER,
           .name = options_.name.empty() ? client_.name : options_.name,
           .secret = connection.secret(),
           .connect_timeout = client_.connect_timeout,
           .retry_for = client_.connect_timeout,
           .session_request = [this] { return join_request(); },
           .on_session = [this](const Result<control::Message>& a) { return on_joined(a); },
           .on_notice = [this](const control::Message&) { wake_heartbeat(); },
           .context = connection.transport()}));
  heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
  spdlog::info("reader: consumer {} of job {} ('{}'), receiving at {} ({} slots of {} bytes, {})",
               consumer_id_.load(), job_id_.load(), options_.job_name, advertised_address_,
               options_.slots, slot_bytes, memory_kind_name(receiver_->memory_kind()));
  return Status::ok();
}

void Reader::Impl::wake_heartbeat() {
  {
    std::lock_guard lock(mu_);
    heartbeat_now_ = true;
  }
  heartbeat_cv_.notify_all();
}

void Reader::Impl::heartbeat_loop() {
  while (true) {
    heartbeat();
    std::unique_lock lock(mu_);
    heartbeat_cv_.wait_for(lock, std::chrono::milliseconds(control_->heartbeat_interval_ms()),
                           [&] { return heartbeat_now_ || stopping_; });
    heartbeat_now_ = false;
    if (stopping_) return;
  }
}

void Reader::Impl::heartbeat() {
  control::Message m;
  auto* hb = m.mutable_consumer_heartbeat();
  const uint64_t epoch = reported_epoch_.load();
  hb->set_consumer_id(consumer_id_.load());
  hb->set_iteration(epoch);
  {
    std::lock_guard lock(mu_);
    hb->set_seconds_per_batch(seconds_per_batch_);
  }
  auto answer = control_->call(m, kCallTimeout);
  if (!answer.is_ok()) {
    spdlog::debug("reader: heartbeat: {}", answer.status().to_string());
    if (answer.status().code() == StatusCode::kNotFound) {
      std::lock_guard lock(mu_);
      job_error_ = answer.status();
    }
    return;
  }
  if (!answer->has_consumer_heartbeat_response()) return;
  const auto& r = answer->consumer_heartbeat_response();
  std::lock_guard lock(mu_);
  if (r.state() == control::JOB_FAILED) {
    job_error_ = control::status_from_error(r.error()).with_context(
        fmt::format("job {} ('{}') failed", job_id_.load(), options_.job_name));
  }
  dead_workers_.insert(r.dead_workers().begin(), r.dead_workers().end());
  if (r.status().iteration() == epoch) {
    status_ = r.status();
    stats_.splits_lost = std::max<uint64_t>(stats_.splits_lost, r.status().splits_lost());
  }
}

std::optional<std::vector<Reader::Impl::Shortfall>> Reader::Impl::epoch_shortfall_locked() const {
  if (!status_ || status_->iteration() != epoch_ || !status_->complete()) return std::nullopt;
  std::vector<Shortfall> shortfall;
  for (const auto& expected : status_->expected()) {
    const uint64_t w = expected.worker_id();
    if (dead_workers_.contains(w) || failed_producers_.contains(w)) continue;
    auto landed = landed_.find({epoch_, w});
    const uint64_t have = landed == landed_.end() ? 0 : landed->second;
    if (have < expected.batches()) shortfall.push_back({w, expected.batches(), have});
  }
  return shortfall;
}

std::string Reader::Impl::epoch_waits_for_locked() const {
  const auto shortfall = epoch_shortfall_locked();
  if (!shortfall) return fmt::format("the coordinator has not declared epoch {} complete", epoch_);
  std::string missing;
  for (const Shortfall& s : *shortfall) {
    missing += fmt::format("{}worker {} delivered {} batches, {} landed here",
                           missing.empty() ? "" : "; ", s.worker, s.delivered, s.landed);
  }
  return missing;
}

Result<std::optional<Batch>> Reader::Impl::hand_out(LandedBatch landed) {
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    ++stats_.batches;
    stats_.bytes += landed.descriptor().payload_bytes;
    if (last_handout_ != Clock::time_point{}) {
      // How fast the trainer consumes: the coordinator's worker estimate uses it.
      const double gap = std::chrono::duration<double>(now - last_handout_).count();
      seconds_per_batch_ = seconds_per_batch_ == 0 ? gap : 0.9 * seconds_per_batch_ + 0.1 * gap;
    }
  }
  last_handout_ = now;
  STOKER_ASSIGN_OR_RETURN(auto state, preparer_->prepare(std::move(landed)));
  return std::optional<Batch>(Batch(std::move(state)));
}

Result<std::optional<Batch>> Reader::Impl::next(std::chrono::milliseconds timeout) {
  if (closed_) return failed_precondition("the reader is closed");
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (options_.epochs != 0 && epoch_ >= options_.epochs) {
      return out_of_range(
          fmt::format("all {} epochs of job {} have been read", options_.epochs, job_id_.load()));
    }
    if (auto early = early_.find(epoch_); early != early_.end() && !early->second.empty()) {
      LandedBatch landed = std::move(early->second.front());
      early->second.pop_front();
      return hand_out(std::move(landed));
    }
    {
      std::lock_guard lock(mu_);
      if (!job_error_.is_ok()) return job_error_;
      if (epoch_complete_locked()) {
        early_.erase(epoch_);
        ++epoch_;
        ++stats_.epochs_completed;
        reported_epoch_ = epoch_;
        status_.reset();
        heartbeat_now_ = true;
        heartbeat_cv_.notify_all();
        return std::optional<Batch>();
      }
    }
    preparer_->poll();
    const auto now = Clock::now();
    if (now >= deadline) {
      std::lock_guard lock(mu_);
      return timed_out(fmt::format("no batch of epoch {} within {} ms ({})", epoch_,
                                   timeout.count(), epoch_waits_for_locked()));
    }
    auto landed = receiver_->next(std::min(
        kReceivePoll, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)));
    if (!landed.is_ok()) {
      if (landed.status().code() == StatusCode::kTimedOut) continue;
      return landed.status();
    }
    const uint64_t epoch = landed->descriptor().iteration;
    {
      std::lock_guard lock(mu_);
      ++landed_[{epoch, landed->producer_id()}];
    }
    if (epoch == epoch_) return hand_out(std::move(landed).value());
    if (epoch > epoch_) {
      early_[epoch].push_back(std::move(landed).value());
      continue;
    }
    spdlog::warn("reader: a batch of epoch {} landed after that epoch ended (worker {}); dropped",
                 epoch, landed->producer_id());
  }
}

Status Reader::Impl::close() {
  if (closed_) return Status::ok();
  closed_ = true;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  heartbeat_cv_.notify_all();
  Status st;
  if (control_ && consumer_id_.load() != 0 && control_->connected()) {
    control::Message leave;
    leave.mutable_leave_job()->set_consumer_id(consumer_id_.load());
    auto answer = control_->call(leave, std::chrono::seconds(2));
    if (!answer.is_ok()) st = answer.status().with_context("leaving the job");
  }
  // A heartbeat waiting on a coordinator that is gone returns at once.
  if (control_) control_->shutdown();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  control_.reset();
  early_.clear();
  preparer_.reset();
  receiver_.reset();
  return st;
}

Reader::Reader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Reader::~Reader() = default;

Result<std::optional<Batch>> Reader::next(std::chrono::milliseconds timeout) {
  return impl_->next(timeout);
}
uint64_t Reader::epoch() const { return impl_->epoch(); }
uint64_t Reader::job_id() const { return impl_->job_id(); }
uint64_t Reader::consumer_id() const { return impl_->consumer_id(); }
ReaderStats Reader::stats() const { return impl_->stats(); }
Status Reader::close() { return impl_->close(); }

Result<std::unique_ptr<Reader>> Reader::create(ReaderOptions options, const ClientOptions& client,
                                               const detail::ClientConnection& connection) {
  auto impl = std::make_unique<Reader::Impl>(std::move(options), client);
  STOKER_RETURN_IF_ERROR(impl->open(connection));
  return std::unique_ptr<Reader>(new Reader(std::move(impl)));
}

}  // namespace stoker
