// stoker-coordinator-load: how the coordinator holds up under a large
// cluster. It simulates W workers and C consumers, multiplexed over a few
// connections (each a UCX worker of its own), against a running coordinator:
// every worker heartbeats and asks for a split (and reports it done) once per
// interval, every consumer heartbeats once per interval, spread evenly. It
// measures each control round trip from send to answer and prints
//
//   RESULT workers=<n> consumers=<n> rps=<x> p50_us=<x> p99_us=<x> ...
//
// Usage: stoker-coordinator-load --coordinator HOST:PORT --workers 1000
//        --consumers 1000 --connections 8 --seconds 20
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "transport/control/control_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using stoker::control::ControlClient;
using stoker::control::Message;

// Round-trip samples in microseconds, from every connection's progress thread.
class Latencies {
 public:
  // Calls sent before `from` (the warm-up) are not counted.
  void measure_from(Clock::time_point from) { from_ = from; }
  void add(Clock::time_point sent) {
    if (sent < from_) return;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent);
    std::lock_guard lock(mu_);
    samples_.push_back(static_cast<uint32_t>(std::min<int64_t>(us.count(), UINT32_MAX)));
  }
  void error() { errors_.fetch_add(1); }
  std::vector<uint32_t> take() {
    std::lock_guard lock(mu_);
    return std::exchange(samples_, {});
  }
  uint64_t errors() const { return errors_.load(); }

 private:
  std::mutex mu_;
  Clock::time_point from_{};
  std::vector<uint32_t> samples_;
  std::atomic<uint64_t> errors_{0};
};

struct Session {
  enum class Kind { kWorker, kConsumer } kind;
  uint64_t id = 0;  // worker or consumer id the coordinator gave
  uint64_t job = 0;
  uint64_t iteration = 0;
  uint64_t request = 0;  // GetSplit attempts
  uint64_t assignment_version = 0;
  ControlClient* connection = nullptr;
  Clock::duration offset{};  // where in each interval it acts
};

std::string range_spec(uint64_t splits) {
  return fmt::format(
      R"({{"source": {{"type": "range", "count": {}, "split_size": 1000}}, "batch": {{"size": 100}}}})",
      splits * 1000);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stoker-coordinator-load: control-plane load against a running coordinator"};
  std::string coordinator;
  uint32_t workers = 1000, consumers = 1000, connections = 8, jobs = 10;
  double seconds = 20, interval_ms = 1000, warmup_seconds = 2;
  uint64_t splits_per_job = 10'000;
  app.add_option("--coordinator", coordinator, "HOST:PORT")->required();
  app.add_option("--workers", workers, "simulated workers");
  app.add_option("--consumers", consumers, "simulated consumers");
  app.add_option("--jobs", jobs, "jobs the consumers join (shared, named)");
  app.add_option("--connections", connections, "connections to multiplex them over");
  app.add_option("--seconds", seconds, "measured duration");
  app.add_option("--interval-ms", interval_ms, "each peer's heartbeat (and split) interval");
  app.add_option("--warmup-seconds", warmup_seconds,
                 "load before measuring (the jobs' first iterations start in it)");
  app.add_option("--splits-per-job", splits_per_job, "splits of each job's dataset");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  std::vector<std::unique_ptr<ControlClient>> clients;
  for (uint32_t i = 0; i < connections; ++i) {
    auto c = ControlClient::connect({.server_address = coordinator,
                                     .role = stoker::control::ROLE_ADMIN,
                                     .name = fmt::format("load-{}", i),
                                     // The generator shares the cores with the
                                     // coordinator: it must not spin.
                                     .spin = std::chrono::microseconds(0)});
    if (!c.is_ok()) {
      fmt::print(stderr, "coordinator-load: {}\n", c.status().to_string());
      return 1;
    }
    clients.push_back(std::move(c).value());
  }
  const auto call = [](ControlClient& c, const Message& m) {
    auto answer = c.call(m, std::chrono::seconds(30));
    if (!answer.is_ok()) {
      fmt::print(stderr, "coordinator-load: setup: {}\n", answer.status().to_string());
      std::exit(1);
    }
    return std::move(answer).value();
  };

  // Set-up (not measured): register the workers, create the jobs, join the
  // consumers. Concurrently, so that the first sessions do not outlive the
  // coordinator's liveness timeout before the last one is set up.
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double, std::milli>(interval_ms));
  std::vector<Message> requests;
  for (uint32_t i = 0; i < workers; ++i) {
    Message m;
    m.mutable_register_worker()->set_name(fmt::format("sim-worker-{}", i));
    m.mutable_register_worker()->set_threads(1);
    requests.push_back(std::move(m));
  }
  for (uint32_t i = 0; i < consumers; ++i) {
    Message m;
    auto* join = m.mutable_join_job();
    join->set_job_name(fmt::format("load-job-{}", i % jobs));
    join->set_pipeline_spec(range_spec(splits_per_job));
    join->mutable_options()->set_sharding(stoker::control::SHARDING_DYNAMIC);
    join->mutable_options()->set_epochs(0);
    join->set_receiver_address("127.0.0.1:9");  // never dialled: no worker runs here
    join->set_access_token("load");
    join->set_name(fmt::format("sim-consumer-{}", i));
    requests.push_back(std::move(m));
  }
  // The first consumer of each job creates it: those go first, one by one.
  for (uint32_t j = 0; j < std::min(jobs, consumers); ++j) {
    call(*clients[(workers + j) % connections], requests[workers + j]);
  }
  std::vector<stoker::Result<Message>> answers(requests.size(), stoker::cancelled("no answer"));
  std::mutex setup_mu;
  std::condition_variable setup_cv;
  size_t answered = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients[i % connections]->call_async(requests[i], [&, i](stoker::Result<Message> r) {
      std::lock_guard lock(setup_mu);
      answers[i] = std::move(r);
      ++answered;
      setup_cv.notify_all();
    });
  }
  {
    std::unique_lock lock(setup_mu);
    setup_cv.wait(lock, [&] { return answered == requests.size(); });
  }
  std::vector<Session> sessions;
  std::vector<uint64_t> job_ids;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!answers[i].is_ok()) {
      fmt::print(stderr, "coordinator-load: setup: {}\n", answers[i].status().to_string());
      return 1;
    }
    ControlClient* c = clients[i % connections].get();
    if (i < workers) {
      sessions.push_back(
          {Session::Kind::kWorker, answers[i]->worker_registered().worker_id(), 0, 0, 0, 0, c, {}});
      continue;
    }
    const auto& joined = answers[i]->job_joined();
    sessions.push_back(
        {Session::Kind::kConsumer, joined.consumer_id(), joined.job_id(), 0, 0, 0, c, {}});
    if (std::find(job_ids.begin(), job_ids.end(), joined.job_id()) == job_ids.end()) {
      job_ids.push_back(joined.job_id());
    }
  }
  for (size_t i = 0; i < sessions.size(); ++i) {
    sessions[i].offset = interval * static_cast<int64_t>(i) / static_cast<int64_t>(sessions.size());
    if (sessions[i].kind == Session::Kind::kWorker) sessions[i].job = job_ids[i % job_ids.size()];
  }

  // One scheduler thread sends each session's calls when due: a warm-up,
  // then the measured phase (samples from the warm-up are discarded).
  Latencies latencies;
  std::atomic<uint64_t> sent_calls{0}, completed{0}, splits{0};
  const auto to_duration = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  const auto start = Clock::now();
  const auto measured_from = start + to_duration(warmup_seconds);
  const auto end = measured_from + to_duration(seconds);
  latencies.measure_from(measured_from);
  uint64_t round = 0;
  uint64_t late = 0;  // sends that left later than planned (the generator fell behind)
  while (true) {
    const auto round_start = start + interval * static_cast<int64_t>(round);
    if (round_start >= end) break;
    for (Session& s : sessions) {
      const auto due = round_start + s.offset;
      std::this_thread::sleep_until(due);
      if (due >= measured_from && Clock::now() - due > std::chrono::milliseconds(1)) ++late;
      const auto sent = Clock::now();
      if (s.kind == Session::Kind::kConsumer) {
        Message m;
        m.mutable_consumer_heartbeat()->set_consumer_id(s.id);
        m.mutable_consumer_heartbeat()->set_iteration(0);
        sent_calls.fetch_add(1);
        s.connection->call_async(m, [&, sent](stoker::Result<Message> r) {
          r.is_ok() ? latencies.add(sent) : latencies.error();
          completed.fetch_add(1);
        });
        continue;
      }
      // As a real worker does: it sends the assignment it runs and gets the
      // tasks only when they changed.
      Message hb;
      hb.mutable_worker_heartbeat()->set_worker_id(s.id);
      hb.mutable_worker_heartbeat()->set_assignment_version(s.assignment_version);
      Session* worker = &s;
      sent_calls.fetch_add(1);
      s.connection->call_async(hb, [&, sent, worker](stoker::Result<Message> r) {
        completed.fetch_add(1);
        if (!r.is_ok()) return latencies.error();
        latencies.add(sent);
        worker->assignment_version = r->worker_heartbeat_response().assignment_version();
      });
      Message get;
      get.mutable_get_split()->set_worker_id(s.id);
      get.mutable_get_split()->set_job_id(s.job);
      get.mutable_get_split()->set_iteration(s.iteration);
      get.mutable_get_split()->set_request_id(++s.request);
      Session* session = &s;
      sent_calls.fetch_add(1);
      s.connection->call_async(get, [&, sent, session](stoker::Result<Message> r) {
        completed.fetch_add(1);
        if (!r.is_ok()) return latencies.error();
        latencies.add(sent);
        const auto& response = r->get_split_response();
        if (response.has_end_of_iteration()) ++session->iteration;
        if (!response.has_split()) return;
        splits.fetch_add(1);
        // Report it done at once: a second journaled round trip.
        Message done;
        auto* d = done.mutable_split_done();
        d->set_worker_id(session->id);
        d->set_job_id(session->job);
        d->set_iteration(response.iteration());
        d->set_lane(response.split().lane());
        d->set_split_id(response.split().id());
        const auto done_sent = Clock::now();
        sent_calls.fetch_add(1);
        session->connection->call_async(done, [&, done_sent](stoker::Result<Message> a) {
          a.is_ok() ? latencies.add(done_sent) : latencies.error();
          completed.fetch_add(1);
        });
      });
    }
    ++round;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - measured_from).count();
  // Let the last answers land, then stop the connections before anything the
  // callbacks touch goes away (late answers are cancelled and not counted).
  const auto drain_until = Clock::now() + std::chrono::seconds(10);
  while (completed.load() < sent_calls.load() && Clock::now() < drain_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const uint64_t unanswered = sent_calls.load() - completed.load();
  for (auto& c : clients) c->shutdown();
  auto samples = latencies.take();
  std::sort(samples.begin(), samples.end());
  const auto pct = [&](double p) {
    return samples.empty()
               ? 0u
               : samples[static_cast<size_t>(p * static_cast<double>(samples.size() - 1))];
  };
  fmt::print(
      "RESULT workers={} consumers={} connections={} rps={:.0f} p50_us={} p99_us={} p999_us={} "
      "max_us={} calls={} errors={} splits={} late_sends={} unanswered={}\n",
      workers, consumers, connections, static_cast<double>(samples.size()) / elapsed, pct(0.5),
      pct(0.99), pct(0.999), samples.empty() ? 0 : samples.back(), samples.size(),
      latencies.errors(), splits.load(), late, unanswered);
  return latencies.errors() == 0 && unanswered == 0 ? 0 : 1;
}
