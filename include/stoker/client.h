// Client: a trainer's handle on a stoker cluster. It knows where the
// coordinator is and how to prove it belongs (the cluster secret), checks
// both at connect(), and opens Readers: one per job the trainer reads.
//
//   auto client = stoker::Client::connect({.coordinator = "10.0.0.1:7000"}).value();
//   auto reader = client->open_reader({.job_name = "imagenet-train",
//                                      .pipeline_spec = spec_json, .epochs = 90}).value();
//   while (true) {
//     auto next = reader->next();            // a batch, an end of epoch, or an error
//     if (!next.is_ok()) break;              // kOutOfRange once every epoch is read
//     if (!next->has_value()) continue;      // end of an epoch
//     stoker::Batch batch = std::move(**next);
//     ... batch.tensor("image") ...           // released (slot and credit back) on destruction
//   }
//
// Threading: a Client may be shared by threads; each Reader is used by one
// thread at a time (Batches may be released from any thread).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "stoker/reader.h"
#include "stoker/result.h"

namespace stoker {

struct ClientOptions {
  std::string coordinator;  // "host:port"
  // A file holding the cluster secret, when the cluster has one.
  std::string secret_file;
  std::string name;  // shown by stoker-ctl; default: host:pid
  std::chrono::milliseconds connect_timeout{10'000};
};

class Client {
 public:
  // Checks that the coordinator is there and accepts us (version, secret).
  static Result<std::shared_ptr<Client>> connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Joins (or creates) a job and starts receiving its batches.
  Result<std::unique_ptr<Reader>> open_reader(ReaderOptions options);

  const ClientOptions& options() const;

 private:
  struct State;
  explicit Client(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace stoker
