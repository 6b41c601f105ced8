// stoker-ctl: what a stoker cluster is doing, from its coordinator.
//
//   stoker-ctl --coordinator HOST:PORT [--secret-file F] [--json] status|workers|jobs|consumers
//
// Tables for people, --json (the protobuf JSON mapping of ClusterDescription)
// for scripts.
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "transport/control/control_client.h"

namespace {

using stoker::control::ClusterDescription;

// Prints rows as left-aligned columns.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    fmt::print("{}\n", line);
  }
}

std::string sharding(stoker::control::ShardingMode m) {
  switch (m) {
    case stoker::control::SHARDING_OFF:
      return "off";
    case stoker::control::SHARDING_DYNAMIC:
      return "dynamic";
    case stoker::control::SHARDING_FILE:
      return "file";
    case stoker::control::SHARDING_DATA:
      return "data";
    default:
      return "?";
  }
}

std::string job_state(stoker::control::JobState s) {
  switch (s) {
    case stoker::control::JOB_RUNNING:
      return "running";
    case stoker::control::JOB_FINISHED:
      return "finished";
    case stoker::control::JOB_FAILED:
      return "failed";
    default:
      return "?";
  }
}

void print_workers(const ClusterDescription& d) {
  std::vector<std::vector<std::string>> rows{{"WORKER", "NAME", "ADDRESS", "STATE",
                                              "LAST HEARTBEAT", "THREADS", "BATCHES",
                                              "BAD RECORDS"}};
  for (const auto& w : d.workers()) {
    rows.push_back(
        {std::to_string(w.worker_id()), w.name(), w.address(), w.alive() ? "alive" : "dead",
         fmt::format("{:.1f} s ago", w.seconds_since_heartbeat()), std::to_string(w.threads()),
         std::to_string(w.stats().batches_produced()), std::to_string(w.stats().bad_records())});
  }
  print_table(rows);
}

void print_jobs(const ClusterDescription& d) {
  std::vector<std::vector<std::string>> rows{{"JOB", "NAME", "STATE", "SHARDING", "EPOCHS",
                                              "ITERATION", "SPLITS DONE/TOTAL", "ASSIGNED", "LOST",
                                              "CONSUMERS", "FINGERPRINT"}};
  for (const auto& j : d.jobs()) {
    std::string iteration = "-", progress = "-", assigned = "-", lost = "-";
    if (j.iterations_size() > 0) {
      const auto& it = j.iterations(j.iterations_size() - 1);
      iteration = fmt::format("{}{}", it.iteration(), it.complete() ? " (complete)" : "");
      progress = fmt::format("{}/{}", it.splits_done(), it.splits_total());
      assigned = std::to_string(it.splits_assigned());
      lost = std::to_string(it.splits_lost());
    }
    rows.push_back(
        {std::to_string(j.job_id()), j.name().empty() ? "(anonymous)" : j.name(),
         job_state(j.state()),
         sharding(j.options().sharding()) + (j.options().redeliver() ? "+redeliver" : ""),
         j.options().epochs() == 0 ? "forever" : std::to_string(j.options().epochs()), iteration,
         progress, assigned, lost, std::to_string(j.consumers_size()),
         j.fingerprint().substr(0, 12)});
  }
  print_table(rows);
  for (const auto& j : d.jobs()) {
    if (!j.error().empty()) fmt::print("job {}: {}\n", j.job_id(), j.error());
  }
}

void print_consumers(const ClusterDescription& d) {
  std::vector<std::vector<std::string>> rows{
      {"CONSUMER", "NAME", "JOB", "ADDRESS", "STATE", "ITERATION"}};
  for (const auto& c : d.consumers()) {
    rows.push_back({std::to_string(c.consumer_id()), c.name(), std::to_string(c.job_id()),
                    c.address(), c.alive() ? "alive" : "gone", std::to_string(c.iteration())});
  }
  print_table(rows);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stoker-ctl: workers, jobs, iterations and consumers of a stoker cluster"};
  std::string coordinator = "127.0.0.1:7000";
  std::string secret_file;
  bool json = false;
  std::string what = "status";
  app.add_option("--coordinator", coordinator, "HOST:PORT of the coordinator");
  app.add_option("--secret-file", secret_file, "the cluster secret, if the cluster has one");
  app.add_flag("--json", json, "print the whole cluster description as JSON");
  app.add_option("what", what, "status (everything), workers, jobs or consumers")
      ->check(CLI::IsMember({"status", "workers", "jobs", "consumers"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  stoker::control::ControlClientOptions options{.server_address = coordinator,
                                                .role = stoker::control::ROLE_ADMIN,
                                                .name = "stoker-ctl",
                                                .connect_timeout = std::chrono::seconds(5)};
  if (!secret_file.empty()) {
    auto secret = stoker::control::ClusterSecret::load(secret_file);
    if (!secret.is_ok()) {
      fmt::print(stderr, "stoker-ctl: {}\n", secret.status().to_string());
      return 2;
    }
    options.secret = std::move(secret).value();
  }
  auto client = stoker::control::ControlClient::connect(std::move(options));
  if (!client.is_ok()) {
    fmt::print(stderr, "stoker-ctl: {}\n", client.status().to_string());
    return 1;
  }
  stoker::control::Message request;
  request.mutable_describe_cluster();
  auto answer = (*client)->call(request, std::chrono::seconds(10));
  if (!answer.is_ok() || !answer->has_cluster_description()) {
    fmt::print(stderr, "stoker-ctl: {}\n",
               answer.is_ok() ? "unexpected answer" : answer.status().to_string());
    return 1;
  }
  const ClusterDescription& d = answer->cluster_description();
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions print;
    print.add_whitespace = true;
    print.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(d, &out, print);
    fmt::print("{}\n", out);
    return 0;
  }
  if (what == "status") {
    fmt::print("coordinator {} up {:.0f} s; suggested workers: {}\n\n", d.coordinator(),
               d.uptime_seconds(),
               d.suggested_workers() == 0 ? "unknown" : std::to_string(d.suggested_workers()));
  }
  if (what == "status" || what == "workers") print_workers(d);
  if (what == "status") fmt::print("\n");
  if (what == "status" || what == "jobs") print_jobs(d);
  if (what == "status") fmt::print("\n");
  if (what == "status" || what == "consumers") print_consumers(d);
  return 0;
}
