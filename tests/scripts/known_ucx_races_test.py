#!/usr/bin/env python3
"""Tests scripts/known_ucx_races.py against the JUnit file of a real ctest run.

A throw-away CMake project holds tests that print what UCX printed when a
race killed a test process (backtraces taken from real runs, addresses kept)
and tests that fail for other reasons; ctest runs them and writes its JUnit
file, and the script must excuse exactly the known races.
Usage: known_ucx_races_test.py SOURCE_DIR WORK_DIR
"""

import pathlib
import shutil
import subprocess
import sys

CONN_REQUEST_RACE = """\
[vm:19740:a:19753] Caught signal 11 (Segmentation fault: address not mapped to object at address 0x7f0300000069)
==== backtrace (tid:  19753) ====
 0  /lib/x86_64-linux-gnu/libucs.so.0(ucs_handle_error+0x2dc) [0x7f037ac58e9c]
 1  /lib/x86_64-linux-gnu/libucs.so.0(+0x2908c) [0x7f037ac5908c]
 2  /lib/x86_64-linux-gnu/libucs.so.0(+0x2923a) [0x7f037ac5923a]
 3  /lib/x86_64-linux-gnu/libc.so.6(+0x3c050) [0x7f037a05a050]
 4  /lib/x86_64-linux-gnu/libucp.so.0(ucp_cm_server_conn_request_cb+0x68) [0x7f037ad4cad8]
 5  /lib/x86_64-linux-gnu/libuct.so.0(+0x2929c) [0x7f037ab8b29c]
 6  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_sockcm_ep_recv+0x135) [0x7f037ab8cb85]
 7  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_sa_data_handler+0x78) [0x7f037ab8a1f8]
 8  /lib/x86_64-linux-gnu/libucs.so.0(ucs_async_dispatch_handlers+0x3c) [0x7f037ac45bcc]
=================================
"""

ASAN_CONN_REQUEST_RACE = """\
==5830==ERROR: AddressSanitizer: SEGV on unknown address 0x7f0300000069 (pc 0x7f037ad4cad8 T12)
==5830==The signal is caused by a READ memory access.
    #0 0x7f037ad4cad8 in ucp_cm_server_conn_request_cb (/lib/x86_64-linux-gnu/libucp.so.0+0x5aad8)
    #1 0x7f037ab8b29c  (/lib/x86_64-linux-gnu/libuct.so.0+0x2929c)
    #2 0x7f037ab8cb85 in uct_tcp_sockcm_ep_recv (/lib/x86_64-linux-gnu/libuct.so.0+0x2ab85)
"""

MISSED_EVENT_RACE = """\
[vm:17051:0:17128]       async.c:643  Assertion `handler->async == async' failed
==== backtrace (tid:  17128) ====
 0  /lib/x86_64-linux-gnu/libucs.so.0(ucs_handle_error+0x2dc) [0x7f007de5be9c]
 3  /lib/x86_64-linux-gnu/libucs.so.0(__ucs_async_poll_missed+0x258) [0x7f007de49b98]
=================================
"""

TCP_EVENT_RACE = """\
[vm:26688:0:26756] Caught signal 11 (Segmentation fault: address not mapped to object at address 0xfffffffffffffff8)
==== backtrace (tid:  26756) ====
 0  /lib/x86_64-linux-gnu/libucs.so.0(ucs_handle_error+0x2dc) [0x7f8b35668e9c]
 1  /lib/x86_64-linux-gnu/libucs.so.0(+0x2908c) [0x7f8b3566908c]
 2  /lib/x86_64-linux-gnu/libucs.so.0(+0x2923a) [0x7f8b3566923a]
 3  /lib/x86_64-linux-gnu/libc.so.6(+0x3c050) [0x7f8b34a5a050]
 4  /lib/x86_64-linux-gnu/libuct.so.0(+0x21650) [0x7f8b35593650]
 5  /lib/x86_64-linux-gnu/libuct.so.0(+0x242fd) [0x7f8b355962fd]
 6  /lib/x86_64-linux-gnu/libucs.so.0(ucs_event_set_wait+0xe1) [0x7f8b356719c1]
 7  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_iface_progress+0x7b) [0x7f8b3559629b]
 8  /lib/x86_64-linux-gnu/libucp.so.0(ucp_worker_progress+0x72) [0x7f8b356e6ef2]
 9  ./tests/system/fault_tolerance_test(+0x10e898) [0x55c2b5a0e898]
=================================
"""

# UCX's assertion on a purged handshake reply, down to the purge; what comes
# below it says where the purge came from.
PURGED_REPLY = """\
[vm:24923:0:24946] ucp_request.c:684  Assertion `(req->send.wireup.type == UCP_WIREUP_MSG_EP_REMOVED) || (req->send.wireup.type == UCP_WIREUP_MSG_EP_CHECK) || (req->send.wireup.type == UCP_WIREUP_MSG_ACK)' failed: req 0x7f5b700012f0 ep 0x7f5b7e98a108: got REP message
==== backtrace (tid:  24946) ====
 0  /lib/x86_64-linux-gnu/libucs.so.0(ucs_handle_error+0x2dc) [0x7f5b80289e9c]
 1  /lib/x86_64-linux-gnu/libucs.so.0(ucs_fatal_error_message+0xb6) [0x7f5b80287b06]
 2  /lib/x86_64-linux-gnu/libucs.so.0(ucs_fatal_error_format+0xe1) [0x7f5b80287bf1]
 3  /lib/x86_64-linux-gnu/libucp.so.0(ucp_request_send_state_ff+0x44f) [0x7f5b802fe97f]
 4  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_ep_pending_purge+0x71) [0x7f5b801b69e1]
 5  /lib/x86_64-linux-gnu/libucp.so.0(ucp_worker_discard_uct_ep+0x75) [0x7f5b8030a205]
"""

# The purge of an endpoint that failed: excused.
PURGED_REPLY_RACE = PURGED_REPLY + """\
 6  /lib/x86_64-linux-gnu/libucp.so.0(+0x3994c) [0x7f5b802f694c]
 7  /lib/x86_64-linux-gnu/libucp.so.0(ucp_ep_set_failed+0xea) [0x7f5b802f6bea]
 8  /lib/x86_64-linux-gnu/libucp.so.0(+0x4cfa7) [0x7f5b80309fa7]
 9  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_ep_set_failed+0x6d) [0x7f5b801b1f8d]
10  /lib/x86_64-linux-gnu/libuct.so.0(+0x1f187) [0x7f5b801b2187]
11  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_ep_handle_io_err+0xdf) [0x7f5b801b32df]
=================================
"""

# The same purge from a worker being destroyed with the reply still queued,
# which stoker prevents by flushing first: not excused. (This lower frame is
# edited; the rest is the real trace.)
PURGED_REPLY_AT_DESTROY = PURGED_REPLY + """\
 6  /lib/x86_64-linux-gnu/libucp.so.0(ucp_worker_destroy+0x1a2) [0x7f5b80309c42]
=================================
"""

# A segfault in stoker's own code, with UCX's connection handling further up
# the stack: not excused.
STOKER_CRASH = """\
[vm:1:a:2] Caught signal 11 (Segmentation fault: address not mapped to object at address (nil))
==== backtrace (tid:  2) ====
 0  /lib/x86_64-linux-gnu/libucs.so.0(ucs_handle_error+0x2dc) [0x7f037ac58e9c]
 1  /lib/x86_64-linux-gnu/libucs.so.0(+0x2908c) [0x7f037ac5908c]
 2  /lib/x86_64-linux-gnu/libucs.so.0(+0x2923a) [0x7f037ac5923a]
 3  /lib/x86_64-linux-gnu/libc.so.6(+0x3c050) [0x7f037a05a050]
 4  ./tests/system/reader_test(+0xf8f9d) [0x55f4c0d07f9d]
 5  /lib/x86_64-linux-gnu/libuct.so.0(uct_tcp_sockcm_ep_recv+0x135) [0x7f037ab8cb85]
=================================
"""

ASSERTION_FAILURE = "reader_test.cc:42: Failure\nExpected equality of these values\n"

CASES = {
    "conn_request_race": CONN_REQUEST_RACE,
    "asan_conn_request_race": ASAN_CONN_REQUEST_RACE,
    "missed_event_race": MISSED_EVENT_RACE,
    "tcp_event_race": TCP_EVENT_RACE,
    "purged_reply_race": PURGED_REPLY_RACE,
    "purged_reply_at_destroy": PURGED_REPLY_AT_DESTROY,
    "stoker_crash": STOKER_CRASH,
    "assertion_failure": ASSERTION_FAILURE,
}


def main():
    source, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    project = work / "project"
    project.mkdir(parents=True)
    lines = ["cmake_minimum_required(VERSION 3.25)", "project(races NONE)", "enable_testing()"]
    for name, output in CASES.items():
        (project / f"{name}.txt").write_text(output)
        lines.append(f'add_test(NAME {name} COMMAND sh -c "cat {project / name}.txt; exit 1")')
    lines.append('add_test(NAME passes COMMAND sh -c "echo fine")')
    (project / "CMakeLists.txt").write_text("\n".join(lines) + "\n")
    build = work / "build"
    subprocess.run(["cmake", "-S", project, "-B", build], check=True, capture_output=True)

    script = source / "scripts" / "known_ucx_races.py"
    failures = 0

    def expect(selection, want_status, want_lines):
        nonlocal failures
        junit = build / f"run{len(list(build.glob('run*.xml')))}.xml"
        subprocess.run(["ctest", "-R", selection, "--output-junit", junit], cwd=build,
                       capture_output=True)
        got = subprocess.run([sys.executable, script, junit], capture_output=True, text=True)
        ok = got.returncode == want_status and all(line in got.stdout for line in want_lines)
        print(f"{'ok' if ok else 'FAILED'}: {selection} -> exit {got.returncode}\n{got.stdout}")
        failures += not ok

    expect("race$|passes", 0,
           ["conn_request_race died of a known UCX 1.13 race: a TCP connection request",
            "asan_conn_request_race died of a known UCX 1.13 race: a TCP connection request",
            "tcp_event_race died of a known UCX 1.13 race: an event of a TCP endpoint",
            "missed_event_race died of a known UCX 1.13 race: an async handler",
            "purged_reply_race died of a known UCX 1.13 race: a handshake reply"])
    expect("^conn_request_race|assertion_failure", 1,
           ["assertion_failure failed for another reason"])
    expect("stoker_crash", 1, ["stoker_crash failed for another reason"])
    expect("purged_reply_at_destroy", 1, ["purged_reply_at_destroy failed for another reason"])
    expect("passes", 1, ["no failed test"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
