// UCX context creation and capability query.
#include "transport/ucx/context.h"

#include <fmt/format.h>

#include <cstdlib>

#include "stoker/landing.h"
#include "stoker/transport_context.h"
#include "transport/host_identity.h"
#include "transport/ucx/ucx_status.h"

namespace stoker::ucx {

Status from_ucs(ucs_status_t status, std::string_view what) {
  if (status == UCS_OK) return Status::ok();
  std::string message = fmt::format("{}: {}", what, ucs_status_string(status));
  switch (status) {
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_IO_ERROR:
      return unavailable(std::move(message));
    case UCS_ERR_CANCELED:
      return cancelled(std::move(message));
    case UCS_ERR_TIMED_OUT:
      return timed_out(std::move(message));
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return resource_exhausted(std::move(message));
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_SHMEM_SEGMENT:  // a peer's shared memory this process may not attach
      return unsupported(std::move(message));
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return invalid_argument(std::move(message));
    default:
      return io_error(std::move(message));
  }
}

namespace {

struct ConfigDeleter {
  void operator()(ucp_config_t* c) const { ucp_config_release(c); }
};
using Config = std::unique_ptr<ucp_config_t, ConfigDeleter>;

// Whether the environment sets the shared-memory receive pool's growth
// (UCX_MM_... for both shared-memory transports, or either one's own).
bool rx_bufs_grow_set_by_user() {
  for (const char* name :
       {"UCX_MM_RX_BUFS_GROW", "UCX_SYSV_RX_BUFS_GROW", "UCX_POSIX_RX_BUFS_GROW"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

}  // namespace

Result<std::shared_ptr<Context>> Context::create(Traffic traffic) {
  ucp_config_t* read = nullptr;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_config_read(nullptr, nullptr, &read), "ucp_config_read"));
  Config config(read);
  // Only where UCX opens such a transport: a setting no transport takes
  // makes UCX warn at every worker.
  if (traffic == Traffic::kSendOnly && ucx_mapped_shared_memory_enabled() &&
      !rx_bufs_grow_set_by_user()) {
    STOKER_RETURN_IF_ERROR(
        from_ucs(ucp_config_modify(config.get(), "MM_RX_BUFS_GROW", kSendOnlyRxBufsGrow),
                 "ucp_config_modify MM_RX_BUFS_GROW"));
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  // Workers of one context may live on different threads (a receiver and a
  // sender in one process); each worker itself is used by one thread.
  params.mt_workers_shared = 1;
  ucp_context_h handle = nullptr;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_init(&params, config.get(), &handle), "ucp_init"));
  auto ctx = std::make_shared<Context>();
  ctx->context_.reset(handle);

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  STOKER_RETURN_IF_ERROR(from_ucs(ucp_context_query(handle, &attr), "ucp_context_query"));
  ctx->memory_types_ = attr.memory_types;
  return ctx;
}

}  // namespace stoker::ucx

namespace stoker {

Result<TransportContext> TransportContext::create() {
  STOKER_ASSIGN_OR_RETURN(auto context, ucx::Context::create());
  return TransportContext(std::move(context));
}

Result<TransportContext> TransportContext::create_for_sending() {
  STOKER_ASSIGN_OR_RETURN(auto context, ucx::Context::create(ucx::Traffic::kSendOnly));
  return TransportContext(std::move(context));
}

}  // namespace stoker

namespace stoker::ucx {

std::string Context::version_string() {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  return fmt::format("UCX {}.{}.{}", major, minor, release);
}

}  // namespace stoker::ucx

namespace stoker {

Result<TransportInfo> query_transport() {
  STOKER_ASSIGN_OR_RETURN(auto context, ucx::Context::create());
  return TransportInfo{.ucx_version = ucx::Context::version_string(),
                       .cuda_memory = context->supports_cuda()};
}

}  // namespace stoker
