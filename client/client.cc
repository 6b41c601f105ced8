// Client: the connection a trainer keeps to its coordinator.
#include "stoker/client.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/client_internal.h"
#include "transport/control/control_frame.h"
#include "transport/socket_address.h"

namespace stoker {
namespace detail {
namespace {

// The local address the kernel would use to reach `peer` (a UDP "connect"
// sends nothing; it only picks the route).
std::string local_address_toward(const SocketAddress& peer) {
  const int fd = ::socket(peer.get()->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "127.0.0.1";
  std::string out = "127.0.0.1";
  if (::connect(fd, peer.get(), peer.length) == 0) {
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      char host[NI_MAXHOST] = {};
      if (::getnameinfo(reinterpret_cast<sockaddr*>(&local), length, host, sizeof host, nullptr, 0,
                        NI_NUMERICHOST) == 0) {
        out = host;
      }
    }
  }
  ::close(fd);
  return out;
}

std::string default_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return fmt::format("{}:{}", host, ::getpid());
}

}  // namespace

std::string random_token() {
  const auto nonce = control::random_nonce();
  std::string hex;
  for (size_t i = 0; i < 16; ++i) hex += fmt::format("{:02x}", static_cast<unsigned>(nonce[i]));
  return hex;
}

Result<std::unique_ptr<ClientConnection>> ClientConnection::connect(const ClientOptions& options) {
  auto connection = std::make_unique<ClientConnection>();
  if (!options.secret_file.empty()) {
    STOKER_ASSIGN_OR_RETURN(connection->secret_, control::ClusterSecret::load(options.secret_file));
  }
  STOKER_ASSIGN_OR_RETURN(auto address, SocketAddress::parse(options.coordinator));
  connection->local_host_ = local_address_toward(address);
  STOKER_ASSIGN_OR_RETURN(connection->transport_, TransportContext::create());
  STOKER_ASSIGN_OR_RETURN(connection->control_, control::ControlClient::connect(
                                                    {.server_address = options.coordinator,
                                                     .role = control::ROLE_CONSUMER,
                                                     .name = options.name,
                                                     .secret = connection->secret_,
                                                     .connect_timeout = options.connect_timeout,
                                                     .retry_for = options.connect_timeout,
                                                     .context = connection->transport_}));
  return connection;
}

Result<control::PipelineInfo> ClientConnection::describe_pipeline(const std::string& spec) const {
  control::Message request;
  request.mutable_describe_pipeline()->set_pipeline_spec(spec);
  STOKER_ASSIGN_OR_RETURN(auto answer, control_->call(request, std::chrono::seconds(60)));
  if (!answer.has_pipeline_info()) {
    return protocol_error(
        fmt::format("expected pipeline_info, got {}", control::body_name(answer)));
  }
  return answer.pipeline_info();
}

}  // namespace detail

struct Client::State {
  ClientOptions options;
  std::unique_ptr<detail::ClientConnection> connection;
};

Client::Client(std::unique_ptr<State> state) : state_(std::move(state)) {}
Client::~Client() = default;

Result<std::shared_ptr<Client>> Client::connect(ClientOptions options) {
  if (options.coordinator.empty())
    return invalid_argument("the client needs a coordinator address");
  if (options.name.empty()) options.name = detail::default_name();
  auto state = std::make_unique<State>();
  STOKER_ASSIGN_OR_RETURN(state->connection, detail::ClientConnection::connect(options));
  state->options = std::move(options);
  return std::shared_ptr<Client>(new Client(std::move(state)));
}

Result<std::unique_ptr<Reader>> Client::open_reader(ReaderOptions options) {
  return Reader::create(std::move(options), state_->options, *state_->connection);
}

const ClientOptions& Client::options() const { return state_->options; }

}  // namespace stoker
