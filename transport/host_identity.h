// Whether two processes share a host (and so could share memory), and whether
// UCX is allowed to use shared memory at all.
#pragma once

#include <string>

namespace stoker {

// Identifies this boot of this host and this network namespace: equal for
// two processes exactly when UCX's shared-memory transports can connect them.
std::string host_identity();

// False when UCX_TLS rules out every shared-memory transport.
bool ucx_shared_memory_enabled();

// False when UCX_TLS rules out the shared-memory transports that receive
// into segments their peers map (posix, sysv, xpmem: UCX's "mm" family).
bool ucx_mapped_shared_memory_enabled();

}  // namespace stoker
