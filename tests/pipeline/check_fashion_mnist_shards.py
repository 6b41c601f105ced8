#!/usr/bin/python3
"""Checks stoker-mkdata's Fashion-MNIST shards against the IDX files they
came from, with nothing from stoker: Python's gzip for the IDX files,
tfrecord_reader.py (pure Python CRC32C and protobuf parsing) or tarfile for
the shards, Pillow for the images.

  check_fashion_mnist_shards.py IDX_DIR SPLIT(train|t10k) png|jpeg SHARD...

Every record must hold the image and label of the IDX item at its position
(shards in name order); PNG images must be exact, JPEG ones close. Prints
"ok <records> <max_mean_abs_diff>" or exits 1 naming the first mismatch.
"""
import gzip
import io
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfrecord_reader  # noqa: E402

from PIL import Image  # noqa: E402


def records(shards):
    """(image bytes, label) in order, from TFRecord or tar shards."""
    for path in sorted(shards):
        if path.endswith(".tar"):
            with tarfile.open(path) as tar:
                sample = {}
                for member in tar:
                    key, ext = member.name.split(".", 1)
                    if sample and sample["key"] != key:
                        yield sample["img"], int(sample["cls"])
                        sample = {}
                    sample["key"] = key
                    data = tar.extractfile(member).read()
                    sample["cls" if ext == "cls" else "img"] = data
                if sample:
                    yield sample["img"], int(sample["cls"])
        else:
            with open(path, "rb") as f:
                data = f.read()
            pos = 0
            while pos < len(data):
                length = int.from_bytes(data[pos:pos + 8], "little")
                length_crc = int.from_bytes(data[pos + 8:pos + 12], "little")
                payload = data[pos + 12:pos + 12 + length]
                data_crc = int.from_bytes(data[pos + 12 + length:pos + 16 + length], "little")
                if tfrecord_reader.masked(tfrecord_reader.crc32c(data[pos:pos + 8])) != length_crc:
                    sys.exit(f"{path}: length CRC mismatch at {pos}")
                if tfrecord_reader.masked(tfrecord_reader.crc32c(payload)) != data_crc:
                    sys.exit(f"{path}: data CRC mismatch at {pos}")
                ex = tfrecord_reader.parse_example(payload)
                yield ex["image"][1][0], ex["label"][1][0]
                pos += 16 + length


def main():
    idx_dir, split, encoding, shards = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    images = gzip.open(f"{idx_dir}/{split}-images-idx3-ubyte.gz").read()[16:]
    labels = gzip.open(f"{idx_dir}/{split}-labels-idx1-ubyte.gz").read()[8:]
    worst = 0.0
    n = 0
    for n, (image, label) in enumerate(records(shards), start=1):
        i = n - 1
        if label != labels[i]:
            sys.exit(f"record {i}: label {label}, the IDX file says {labels[i]}")
        im = Image.open(io.BytesIO(image))
        if im.format != encoding.upper() or im.size != (28, 28):
            sys.exit(f"record {i}: a {im.format} {im.size} image")
        pixels = im.convert("L").tobytes()
        expected = images[i * 784:(i + 1) * 784]
        diff = sum(abs(a - b) for a, b in zip(pixels, expected)) / 784
        if encoding == "png" and pixels != expected:
            sys.exit(f"record {i}: PNG pixels differ from the IDX item")
        if diff > 6:
            sys.exit(f"record {i}: mean abs diff {diff} from the IDX item")
        worst = max(worst, diff)
    print(f"ok {n} {worst:.3f}")


if __name__ == "__main__":
    main()
