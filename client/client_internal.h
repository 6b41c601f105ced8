// What a Client shares with the Readers it opens: its control connection
// (for calls that belong to no job), the cluster secret, and the address
// this host is reached at.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "stoker/client.h"
#include "transport/control/cluster_secret.h"
#include "transport/control/control_client.h"

namespace stoker::detail {

class ClientConnection {
 public:
  static Result<std::unique_ptr<ClientConnection>> connect(const ClientOptions& options);

  // Validates a spec at the coordinator and returns what a reader must know.
  Result<control::PipelineInfo> describe_pipeline(const std::string& spec) const;
  const std::optional<control::ClusterSecret>& secret() const { return secret_; }
  // The UCX context the client's connections and its readers' receivers share.
  const TransportContext& transport() const { return transport_; }
  // This host's address on the route to the coordinator: what workers on
  // other hosts can reach a receiver here at.
  const std::string& local_host_toward_coordinator() const { return local_host_; }

 private:
  std::optional<control::ClusterSecret> secret_;
  TransportContext transport_;
  std::unique_ptr<control::ControlClient> control_;
  std::string local_host_;
};

// 128 random bits as hex: a receiver's access token.
std::string random_token();

}  // namespace stoker::detail
