#!/usr/bin/python3
"""An independent TFRecord + tf.train.Example reader for the tests: pure
Python, sharing no code with stoker. CRC32C is computed bit by bit from the
Castagnoli polynomial; the protobuf wire format is parsed by hand.

  tfrecord_reader.py FILE...

Prints one JSON object per record:
  {"file": ..., "offset": ..., "label": int or null, "image_sha256": hex or null,
   "image_bytes": n, "tokens": [..] or null}
and exits 1 with a message on the first framing or CRC error.
"""
import hashlib
import json
import struct
import sys


def make_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = make_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf):
    """(field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            length, pos = varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            value = buf[pos:pos + 4]
            pos += 4
        elif wire == 1:
            value = buf[pos:pos + 8]
            pos += 8
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_example(buf):
    """{name: ("bytes", [..]) | ("int64", [..]) | ("float", n)}."""
    out = {}
    for number, _, features in fields(buf):
        if number != 1:
            continue
        for fnum, _, entry in fields(features):
            if fnum != 1:
                continue
            key, feature = None, b""
            for enum, _, v in fields(entry):
                if enum == 1:
                    key = v.decode()
                elif enum == 2:
                    feature = v
            for kind, _, lst in fields(feature):
                if kind == 1:
                    out[key] = ("bytes", [v for n, _, v in fields(lst) if n == 1])
                elif kind == 3:
                    values = []
                    for n, wire, v in fields(lst):
                        if n != 1:
                            continue
                        if wire == 2:  # packed
                            p = 0
                            while p < len(v):
                                x, p = varint(v, p)
                                values.append(signed64(x))
                        else:
                            values.append(signed64(v))
                    out[key] = ("int64", values)
                elif kind == 2:
                    out[key] = ("float", len(lst))
    return out


def main():
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            if len(data) - pos < 12:
                sys.exit(f"{path}: truncated header at {pos}")
            length, length_crc = struct.unpack_from("<QI", data, pos)
            if masked(crc32c(data[pos:pos + 8])) != length_crc:
                sys.exit(f"{path}: length CRC mismatch at {pos}")
            end = pos + 12 + length + 4
            if end > len(data):
                sys.exit(f"{path}: truncated record at {pos}")
            payload = data[pos + 12:pos + 12 + length]
            (data_crc,) = struct.unpack_from("<I", data, pos + 12 + length)
            if masked(crc32c(payload)) != data_crc:
                sys.exit(f"{path}: data CRC mismatch at {pos}")
            ex = parse_example(payload)
            image = ex.get("image", ("bytes", [None]))[1][0]
            label = ex.get("label", ("int64", [None]))[1][0]
            tokens = ex.get("tokens", (None, None))[1]
            print(json.dumps({
                "file": path, "offset": pos, "label": label,
                "image_sha256": hashlib.sha256(image).hexdigest() if image is not None else None,
                "image_bytes": len(image) if image is not None else 0,
                "tokens": tokens,
            }))
            pos = end


if __name__ == "__main__":
    main()
