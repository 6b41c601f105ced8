// Faulting memory in before the data path writes it.
#pragma once

#include <cstddef>

namespace stoker {

// Faults every page of [p, p + bytes) in now, for writing. Landing pools are
// written by the data path; left to fault on first touch, the kernel's
// zeroing of each page (and, in a VM, the hypervisor backing it) would fall
// in the middle of a stream, at up to a tenth of a receiver's CPU in its
// first second (docs/perf.md). Works on private and shared mappings alike.
void fault_in(std::byte* p, size_t bytes);

}  // namespace stoker
