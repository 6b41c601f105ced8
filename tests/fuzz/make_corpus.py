#!/usr/bin/env python3
"""Writes a seed corpus for decoders_fuzzer: one well-formed input per decoder
(the first byte selects the decoder, as in decoders_fuzzer.cc), so the fuzzer
starts from valid structure instead of discovering magics and CRCs.

    tests/fuzz/make_corpus.py OUT_DIR
"""
import os
import struct
import sys


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def descriptor() -> bytes:
    # Header (64 bytes): magic, version 2, 1 tensor, job, split, seq, round,
    # payload bytes, iteration, flags, reserved; then one 120-byte tensor entry.
    head = struct.pack("<IHHQQQQQQII", 0x4B425453, 2, 1, 7, 3, 0, 0, 64, 1, 1, 0)
    name = b"index".ljust(32, b"\0")
    entry = name + struct.pack("<BBHIQQ", 8, 1, 0, 0, 0, 64) + struct.pack("<8Q", 8, 0, 0, 0, 0, 0, 0, 0)
    return head + entry


def string(s: bytes) -> bytes:
    return struct.pack("<H", len(s)) + s


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    frame_header = struct.pack("<IHBBQ", 0x50435453, 1, 1, 0, 42)
    # Message{register_worker (field 20) {worker_id: 3, name: "w", threads: 2}}
    register = b"\x08\x03\x12\x01w\x18\x02"
    body = b"\xa2\x01" + bytes([len(register)]) + register
    hello = struct.pack("<IHQ", 0x4C454853, 2, 5) + string(b"worker-5") + string(b"token")
    attach = struct.pack("<IQB", 4, 0x1122334455667788, 0)
    refusal = struct.pack("<H", 2) + string(b"no")
    credit = struct.pack("<I", 3) + struct.pack("<3I", 0, 5, 9)
    ready = struct.pack("<H", 1) + struct.pack("<I", 2) + descriptor()
    record = b"\x0a\x03\x08\x01\x12\x00"
    journal = struct.pack("<IHHQ", 0x4A4B5453, 1, 0, 0)
    for payload in (record, b""):
        length = struct.pack("<I", len(payload))
        journal += length + struct.pack("<I", masked(length)) + payload + struct.pack("<I", masked(payload))
    seeds = {
        "frame_header": b"\x00" + frame_header,
        "body": b"\x01" + body,
        "descriptor": b"\x02" + descriptor(),
        "descriptor_size": b"\x03" + descriptor(),
        "hello": b"\x04" + hello,
        "attach": b"\x06" + attach,
        "refusal": b"\x07" + refusal,
        "credit": b"\x08" + credit,
        "ready": b"\x09" + ready,
        "journal": b"\x0a" + journal,
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
