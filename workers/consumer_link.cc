// ConsumerLink: connect, push with credits, give back what was not delivered.
#include "workers/consumer_link.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "workers/task.h"

namespace stoker::workers {
namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kCloseTimeout = std::chrono::seconds(2);
// Waits while polling the sender: short while batches are in flight (their
// completions free memory), longer when idle.
constexpr auto kBusyWait = std::chrono::milliseconds(1);
constexpr auto kIdleWait = std::chrono::milliseconds(20);

bool permanent(const Status& st) {
  return st.code() == StatusCode::kVersionMismatch || st.code() == StatusCode::kUnauthorized ||
         st.code() == StatusCode::kProtocolError || st.code() == StatusCode::kInvalidArgument;
}

}  // namespace

ConsumerLink::ConsumerLink(Task& task, const TaskEnvironment& env,
                           control::ConsumerEndpoint consumer)
    : task_(task), env_(env), consumer_(std::move(consumer)) {
  thread_ = std::thread([this] { run(); });
}

ConsumerLink::~ConsumerLink() {
  request_stop();
  if (thread_.joinable()) thread_.join();
}

void ConsumerLink::die(const Status& why) {
  if (dead_.load()) return;  // only the push thread writes dead_ and died_at_
  // When first, then that it died: whoever sees dead() also sees when.
  died_at_.store(std::chrono::steady_clock::now());
  dead_.store(true);
  spdlog::warn("worker: consumer {} ({}) of job {}: {}", consumer_.consumer_id(),
               consumer_.address(), task_.job_id(), why.to_string());
}

Result<std::unique_ptr<BatchSender>> ConsumerLink::connect() {
  auto sender = BatchSender::connect({.receiver_address = consumer_.address(),
                                      .mode = env_.push_mode,
                                      .name = env_.worker_name,
                                      .producer_id = env_.worker_id(),
                                      .access_token = consumer_.access_token(),
                                      .connect_timeout = kConnectTimeout,
                                      .busy_poll = env_.busy_poll,
                                      .context = env_.transport});
  if (!sender.is_ok()) return sender.status();
  const auto arena = env_.arena->memory();
  STOKER_RETURN_IF_ERROR((*sender)->register_buffer(arena.data(), arena.size()));
  return sender;
}

void ConsumerLink::run() {
  auto sender = connect();
  if (!sender.is_ok()) {
    die(sender.status().with_context("connecting"));
    return;
  }
  spdlog::info("worker: pushing job {} to consumer {} at {} ({} mode)", task_.job_id(),
               consumer_.consumer_id(), consumer_.address(), push_mode_name((*sender)->mode()));
  push(**sender);
  if (!dead_.load()) {
    // Stopping with a healthy connection: let what is in flight land.
    if (Status st = (*sender)->flush(kCloseTimeout); !st.is_ok()) die(st);
    (void)(*sender)->close(kCloseTimeout);
  }
  sender->reset();  // completions of what is still in flight are dropped...
  for (auto& [key, batch] : in_flight_) task_.requeue(std::move(batch));  // ...and requeued
  in_flight_.clear();
}

void ConsumerLink::push(BatchSender& sender) {
  const uint64_t consumer_id = consumer_.consumer_id();
  while (!stopping_.load()) {
    sender.poll();
    if (!sender.health().is_ok()) return die(sender.health());
    const auto wait = in_flight_.empty() ? kIdleWait : kBusyWait;
    if (!sender.can_post()) {
      if (Status st = sender.wait_for_credit(wait);
          !st.is_ok() && st.code() != StatusCode::kTimedOut) {
        return die(st);
      }
      continue;
    }
    auto batch = task_.next_batch(wait);
    if (!batch) continue;
    const uint64_t key = next_key_++;
    in_flight_[key] = *batch;
    const auto& ready = **batch;
    Status posted = sender.post(
        ready.descriptor, ready.buffer.bytes().first(ready.descriptor.payload_bytes),
        [this, key, consumer_id](const Status& outcome) {
          auto it = in_flight_.find(key);
          if (it == in_flight_.end()) return;
          auto done = std::move(it->second);
          in_flight_.erase(it);
          if (outcome.is_ok()) {
            task_.delivered(*done, consumer_id);
          } else {
            task_.requeue(std::move(done));
          }
        },
        std::chrono::milliseconds(0));
    if (!posted.is_ok()) {
      if (auto it = in_flight_.find(key); it != in_flight_.end()) {
        task_.requeue(std::move(it->second));
        in_flight_.erase(it);
      }
      if (posted.code() == StatusCode::kInvalidArgument) {
        // The batch cannot fit this consumer's landing slots: no consumer of
        // the job sized for it will do better, so the job cannot go on.
        task_.fail(posted.with_context(fmt::format("consumer {}", consumer_id)));
        return die(posted);
      }
      if (permanent(posted) || !sender.health().is_ok()) return die(posted);
    }
  }
}

}  // namespace stoker::workers
