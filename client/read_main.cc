// stoker-read: reads a job from the command line — to look at what a
// pipeline delivers, to measure a cluster's end-to-end throughput, and (in
// tests) to be a consumer that can be killed.
//
//   stoker-read --coordinator HOST:PORT --spec pipeline.json [--job NAME]
//               [--epochs N] [--sharding dynamic] [--record-indices FILE]
//
// Prints one line per epoch and a final
//   RESULT reader=stoker-read batches=<n> bytes=<n> seconds=<x> batches_per_s=<x> MBps=<x>
// With --record-indices, the `index` tensor of every batch (range pipelines)
// is appended to FILE as it is handed out, one number per line, flushed.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "stoker/client.h"

int main(int argc, char** argv) {
  CLI::App app{"stoker-read: read a stoker job"};
  std::string coordinator, spec_file, job, secret_file, indices_file, sharding = "dynamic";
  uint32_t epochs = 1, slots = 32, credits = 4;
  double pace_ms = 0;
  int64_t busy_poll_us = stoker::ReaderOptions{}.busy_poll.count();
  std::string log_level = "warn";
  app.add_option("--coordinator", coordinator, "HOST:PORT")->required();
  app.add_option("--spec", spec_file, "pipeline spec (JSON file)")->required();
  app.add_option("--job", job, "job name (shared with readers of the same name)");
  app.add_option("--epochs", epochs, "epochs to read (0: until interrupted)");
  app.add_option("--sharding", sharding, "off, dynamic, file or data")
      ->check(CLI::IsMember({"off", "dynamic", "file", "data"}));
  bool redeliver = false;
  app.add_flag("--redeliver", redeliver,
               "at least once: a dead worker's splits go to the others (default: at most once)");
  app.add_option("--slots", slots, "landing slots");
  app.add_option("--credits", credits, "credits per worker");
  app.add_option("--secret-file", secret_file, "the cluster secret, if the cluster has one");
  app.add_option("--record-indices", indices_file, "append each batch's `index` tensor here");
  app.add_option("--busy-poll-us", busy_poll_us,
                 "how long the receiver polls after its last event before it sleeps (longer: "
                 "steadier throughput on a shared host, at the cost of a core)")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000'000}));
  app.add_option("--pace-ms", pace_ms, "sleep this long per batch (a slow trainer)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  std::ifstream in(spec_file);
  if (!in) {
    fmt::print(stderr, "stoker-read: cannot read {}\n", spec_file);
    return 2;
  }
  std::stringstream spec;
  spec << in.rdbuf();
  auto client = stoker::Client::connect(
      {.coordinator = coordinator, .secret_file = secret_file, .name = "stoker-read"});
  if (!client.is_ok()) {
    fmt::print(stderr, "stoker-read: {}\n", client.status().to_string());
    return 1;
  }
  const stoker::Sharding mode = sharding == "off"    ? stoker::Sharding::kOff
                                : sharding == "file" ? stoker::Sharding::kFile
                                : sharding == "data" ? stoker::Sharding::kData
                                                     : stoker::Sharding::kDynamic;
  auto reader = (*client)->open_reader({.job_name = job,
                                        .pipeline_spec = spec.str(),
                                        .sharding = mode,
                                        .redeliver = redeliver,
                                        .epochs = epochs,
                                        .slots = slots,
                                        .credits_per_worker = credits,
                                        .busy_poll = std::chrono::microseconds(busy_poll_us)});
  if (!reader.is_ok()) {
    fmt::print(stderr, "stoker-read: {}\n", reader.status().to_string());
    return 1;
  }
  std::FILE* indices = indices_file.empty() ? nullptr : std::fopen(indices_file.c_str(), "a");
  const auto started = std::chrono::steady_clock::now();
  uint64_t batches = 0, bytes = 0, epoch_batches = 0;
  while (true) {
    auto next = (*reader)->next(std::chrono::minutes(10));
    if (!next.is_ok()) {
      if (next.status().code() == stoker::StatusCode::kOutOfRange) break;
      fmt::print(stderr, "stoker-read: {}\n", next.status().to_string());
      return 1;
    }
    if (!next->has_value()) {
      fmt::print("epoch {}: {} batches\n", (*reader)->epoch() - 1, epoch_batches);
      std::fflush(stdout);
      epoch_batches = 0;
      continue;
    }
    const stoker::Batch& batch = **next;
    ++batches;
    ++epoch_batches;
    bytes += batch.descriptor().payload_bytes;
    if (indices != nullptr) {
      if (auto index = batch.tensor("index"); index.is_ok()) {
        const auto* p = index->data_as<const int64_t>();
        for (int64_t i = 0; i < index->element_count(); ++i)
          std::fprintf(indices, "%lld\n", static_cast<long long>(p[i]));
        std::fflush(indices);
      }
    }
    if (pace_ms > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(pace_ms));
    }
  }
  if (indices != nullptr) std::fclose(indices);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  fmt::print(
      "RESULT reader=stoker-read batches={} bytes={} seconds={:.3f} batches_per_s={:.1f} "
      "MBps={:.1f}\n",
      batches, bytes, seconds, static_cast<double>(batches) / seconds,
      static_cast<double>(bytes) / seconds / 1e6);
  return 0;
}
