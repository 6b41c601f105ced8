#!/usr/bin/env python3
"""Tells whether every failed test of a ctest run died of a known UCX 1.13 race.

Usage: known_ucx_races.py JUNIT_XML

Debian 12's UCX 1.13 has races that kill a process while it closes endpoints
or listeners that peers are still using (docs/protocol.md, section 12). stoker cannot avoid them
from outside UCX, and in a loaded 2-core run they kill a test process about
once in a few hundred starts. scripts/run retries a failed run once, and only
when this script says that each failure shows one of these signatures in its
output; any other failure fails the build. Exit status: 0 when every failure
is a known race (it prints which), 1 otherwise (or when nothing failed).
"""

import re
import sys
import xml.etree.ElementTree as ET

# A crash matches only when UCX's own frames say so: the faulting frame of a
# segfault must lie in a UCX library, so a crash in stoker's code never does.
SEGFAULT = re.compile(r"Caught signal 11 \(Segmentation fault[^\n]*\n==== backtrace[^\n]*\n"
                      r"((?:\s*\d+ [^\n]*\n)+)")
# The same crash caught by AddressSanitizer's handler instead of UCX's.
ASAN_SEGFAULT = re.compile(r"ERROR: AddressSanitizer: SEGV[^\n]*\n(?:[^\n#]*\n)*?"
                           r"((?:\s*#\d+ [^\n]*\n)+)")
UCX_LIBRARY = re.compile(r"/libuc[pts]\.so")


def ucx_segfault(output, marker):
    """A segfault whose faulting frame is in UCX, with `marker` on the stack."""
    stacks = []
    for match in SEGFAULT.finditer(output):
        frames = match.group(1).splitlines()
        # Frames 0-2 are UCX's signal handler, 3 the kernel's trampoline in libc.
        stacks.append((frames[4] if len(frames) > 4 else "", frames))
    for match in ASAN_SEGFAULT.finditer(output):
        frames = match.group(1).splitlines()
        stacks.append((frames[0], frames))
    return any(UCX_LIBRARY.search(faulting) and marker in "\n".join(frames)
               for faulting, frames in stacks)


MISSED_EVENT = re.compile(r"async\.c:\d+\s+Assertion `handler->async == async' failed")
# UCX's check of what a purge of an endpoint's pending sends may meet, failing
# on a handshake reply. Excused only when the purge comes from an endpoint
# that failed: the same assertion from a worker being destroyed is the case
# stoker prevents by flushing first (docs/protocol.md, section 12).
PURGED_REPLY = re.compile(r"Assertion `\(req->send\.wireup\.type == UCP_WIREUP_MSG_EP_REMOVED\)"
                          r"[^\n]*got REP message\n==== backtrace[^\n]*\n((?:\s*\d+ [^\n]*\n)+)")


def purged_reply_of_failed_endpoint(output):
    return any("ucp_ep_set_failed" in match.group(1) for match in PURGED_REPLY.finditer(output))


# (what it is and where it was fixed, test of a test's output)
KNOWN_RACES = [
    ("a TCP connection request handled while its listener is destroyed; fixed upstream in "
     "openucx/ucx#8243",
     lambda output: ucx_segfault(output, "uct_tcp_sockcm_ep_recv")),
    ("an async handler removed while its event waits in the missed queue; fixed upstream in "
     "openucx/ucx#9942",
     lambda output: MISSED_EVENT.search(output) is not None),
    ("an event of a TCP endpoint handled after UCX freed it, while endpoints close; no "
     "upstream fix identified",
     lambda output: ucx_segfault(output, "uct_tcp_iface_progress")),
    ("a handshake reply still queued on an endpoint that failed, purged against an assertion; "
     "the assertion was removed upstream in openucx/ucx#8175",
     purged_reply_of_failed_endpoint),
]


def failed_tests(junit_path):
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        if case.get("status") in ("fail", "failed") or case.find("failure") is not None:
            yield case.get("name"), case.findtext("system-out") or ""


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    failures = list(failed_tests(sys.argv[1]))
    if not failures:
        print("known_ucx_races: no failed test in", sys.argv[1])
        return 1
    unknown = []
    for name, output in failures:
        race = next((fix for fix, seen_in in KNOWN_RACES if seen_in(output)), None)
        if race:
            print(f"known_ucx_races: {name} died of a known UCX 1.13 race: {race}")
        else:
            unknown.append(name)
    for name in unknown:
        print(f"known_ucx_races: {name} failed for another reason")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
