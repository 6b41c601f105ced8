#!/usr/bin/python3
"""Independent reference for the image tests: Pillow (Debian's python3-pil)
decodes, crops and resizes the files the C++ tests wrote.

  pil_reference.py JOBS.json

JOBS.json is a list of jobs; each writes raw 8-bit pixels (HWC) to "out":
  {"op": "decode", "in": PATH, "mode": "RGB"|"L", "out": PATH}
  {"op": "resized_crop", "in": PATH, "mode": "RGB"|"L", "box": [left, top, right, bottom],
   "size": [width, height], "out": PATH}
      torchvision's F.resized_crop on a PIL image: img.crop(box).resize(size, BILINEAR)
  {"op": "encode_jpeg", "in_raw": PATH, "mode": "RGB", "width": W, "height": H,
   "quality": Q, "out_file": PATH}
      a JPEG written by Pillow's encoder (for decoding tests with a file stoker did not write)
Prints one line per job: "ok <out> <width> <height>".
"""
import json
import sys

from PIL import Image


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        op = job["op"]
        if op == "encode_jpeg":
            with open(job["in_raw"], "rb") as f:
                raw = f.read()
            im = Image.frombytes(job["mode"], (job["width"], job["height"]), raw)
            im.save(job["out_file"], "JPEG", quality=job["quality"])
            print(f"ok {job['out_file']} {im.size[0]} {im.size[1]}")
            continue
        im = Image.open(job["in"]).convert(job["mode"])
        if op == "resized_crop":
            im = im.crop(tuple(job["box"])).resize(tuple(job["size"]), Image.BILINEAR)
        elif op != "decode":
            raise SystemExit(f"unknown op {op}")
        with open(job["out"], "wb") as f:
            f.write(im.tobytes())
        print(f"ok {job['out']} {im.size[0]} {im.size[1]}")


if __name__ == "__main__":
    main()
