#!/usr/bin/python3
"""The reference for pipeline_bench.sh: the same pipeline as stoker's bench
spec (JPEG decode, RandomResizedCrop to SIZE with torchvision's semantics,
random horizontal flip, uint8 HWC output) in Python with Pillow, one
process, reading the same WebDataset tar shards.

  pil_pipeline.py [--draft] [--size 224] [--repeat 3] SHARD.tar...

Prints: RESULT impl=pil draft=<0|1> images=<n> seconds=<wall> ips=<n/wall>
        cpu_seconds=<c> ips_per_cpu_second=<n/c>   (the best of --repeat passes)

--draft lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the crop is at
least that much larger than the output (Pillow's Image.draft), which is what
stoker does with DCT scaling; without it Pillow decodes every pixel.
"""
import argparse
import io
import math
import random
import tarfile
import time

import numpy as np
from PIL import Image


def rrc_params(width, height, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision.transforms.RandomResizedCrop.get_params, with Python's RNG."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def load_jpegs(paths):
    out = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    out.append(tar.extractfile(member).read())
    return out


def transform(data, size, rng, draft):
    im = Image.open(io.BytesIO(data))
    width, height = im.size
    top, left, h, w = rrc_params(width, height, rng)
    box = (left, top, left + w, top + h)
    if draft:
        # Ask for an image at least as large as the crop needs, then map the box.
        im.draft("RGB", (max(1, width * size // w), max(1, height * size // h)))
        sx, sy = im.size[0] / width, im.size[1] / height
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    im = im.convert("RGB")
    # torchvision's F.resized_crop on a PIL image: crop, then resize (bilinear).
    im = im.crop(tuple(int(round(v)) for v in box)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(im)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--draft", action="store_true")
    args = parser.parse_args()
    jpegs = load_jpegs(args.shards)  # read once: like stoker's runs, from memory/page cache
    rng = random.Random(0)
    for data in jpegs[:20]:  # warm-up
        transform(data, args.size, rng, args.draft)
    best = None
    best_cpu = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        cpu_start = time.process_time()
        for data in jpegs:
            out = transform(data, args.size, rng, args.draft)
            assert out.shape == (args.size, args.size, 3)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        best = seconds if best is None else min(best, seconds)
        best_cpu = cpu_seconds if best_cpu is None else min(best_cpu, cpu_seconds)
    print(f"RESULT impl=pil draft={int(args.draft)} images={len(jpegs)} seconds={best:.3f} "
          f"ips={len(jpegs) / best:.1f} cpu_seconds={best_cpu:.3f} "
          f"ips_per_cpu_second={len(jpegs) / best_cpu:.1f}", flush=True)


if __name__ == "__main__":
    main()
