// Turns UCX status codes into stoker Status, keeping UCX's own words.
#pragma once

#include <ucs/type/status.h>

#include <string_view>

#include "stoker/status.h"

namespace stoker::ucx {

// Status for a failed UCX call: "<what>: <UCX's message>". OK for UCS_OK.
Status from_ucs(ucs_status_t status, std::string_view what);

}  // namespace stoker::ucx
