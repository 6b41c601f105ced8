// stoker-worker: a preprocessing worker.
//
//   stoker-worker --coordinator HOST:PORT --threads N [--memory-budget 256M]
//
// Runs every job the coordinator assigns on N pipeline threads and pushes the
// batches to the jobs' consumers. Exits 0 on SIGTERM or SIGINT after closing
// its consumer connections.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/byte_size.h"
#include "common/shutdown_signal.h"
#include "workers/worker_daemon.h"

int main(int argc, char** argv) {
  stoker::block_shutdown_signals();
  CLI::App app{"stoker-worker: runs preprocessing pipelines and pushes batches to trainers"};
  stoker::workers::WorkerOptions options;
  std::string memory_budget = "256M";
  std::string secret_file;
  std::string push_mode = "auto";
  std::string log_level = "info";
  app.add_option("--coordinator", options.coordinator_address, "HOST:PORT of the coordinator")
      ->required();
  app.add_option("--threads", options.threads, "pipeline threads")->check(CLI::Range(1u, 1024u));
  app.add_option("--memory-budget", memory_budget,
                 "bytes of batches this worker may hold (64M, 1G, ...): when consumers hold no "
                 "credit, the pipelines stop here");
  app.add_option("--name", options.name, "name shown by stoker-ctl (default: host:pid)");
  app.add_option("--secret-file", secret_file, "the cluster secret, if the cluster has one");
  app.add_option("--push-mode", push_mode, "am, put or auto")
      ->check(CLI::IsMember({"am", "put", "auto"}));
  int64_t busy_poll_us = options.busy_poll.count();
  app.add_option("--busy-poll-us", busy_poll_us,
                 "how long a consumer link polls after its last event before it sleeps "
                 "(longer: steadier throughput on a shared host, at the cost of CPU)")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000'000}));
  app.add_option("--metrics-port", options.metrics_port, "serve /metrics on this port (0: off)");
  uint32_t connect_retry_s = 60;
  app.add_option("--connect-retry-s", connect_retry_s,
                 "how long to keep trying to reach the coordinator at start");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  // A daemon's log is often a file: write each line out as it is logged.
  spdlog::flush_on(spdlog::level::trace);

  auto budget = stoker::parse_byte_size(memory_budget);
  if (!budget.is_ok()) {
    fmt::print(stderr, "stoker-worker: --memory-budget: {}\n", budget.status().message());
    return 2;
  }
  options.memory_budget = *budget;
  options.connect_retry = std::chrono::seconds(connect_retry_s);
  options.busy_poll = std::chrono::microseconds(busy_poll_us);
  // SIGTERM while still reaching the coordinator: stop retrying and exit.
  options.give_up_starting = stoker::shutdown_signal_pending;
  options.push_mode = stoker::parse_push_mode(push_mode).value_or(stoker::PushMode::kAuto);
  if (!secret_file.empty()) {
    auto secret = stoker::control::ClusterSecret::load(secret_file);
    if (!secret.is_ok()) {
      fmt::print(stderr, "stoker-worker: {}\n", secret.status().to_string());
      return 2;
    }
    options.secret = std::move(secret).value();
  }
  auto worker = stoker::workers::WorkerDaemon::start(std::move(options));
  if (!worker.is_ok()) {
    if (worker.status().code() == stoker::StatusCode::kCancelled &&
        stoker::shutdown_signal_pending()) {
      spdlog::info("stoker-worker: signal {} while starting: {}",
                   stoker::wait_for_shutdown_signal().value_or(0), worker.status().message());
      return 0;
    }
    fmt::print(stderr, "stoker-worker: {}\n", worker.status().to_string());
    return 1;
  }
  fmt::print("stoker-worker: worker {} running\n", (*worker)->worker_id());
  std::fflush(stdout);
  const auto signal = stoker::wait_for_shutdown_signal();
  spdlog::info("stoker-worker: signal {}: shutting down", signal.value_or(0));
  (*worker)->stop();
  return 0;
}
