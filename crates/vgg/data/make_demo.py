#!/usr/bin/env python3
"""Builds the embedded demo dataset: the first 500 training and 100 test images of each class of
Fashion-MNIST (MIT licence, Zalando Research), from Debian's dataset-fashion-mnist package.
Run: python3 crates/vgg/data/make_demo.py  (writes crates/vgg/data/demo/*.gz)."""
import gzip, os, struct

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
PER_CLASS = {"train": 500, "t10k": 100}

def read_idx(path):
    data = gzip.open(path).read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]

for split, per in PER_CLASS.items():
    (n, h, w), pixels = read_idx(f"{SRC}/{split}-images-idx3-ubyte.gz")
    _, labels = read_idx(f"{SRC}/{split}-labels-idx1-ubyte.gz")
    taken, counts = [], [0] * 10
    for i in range(n):
        if counts[labels[i]] < per:
            counts[labels[i]] += 1
            taken.append(i)
    img = struct.pack(">BBBBIII", 0, 0, 8, 3, len(taken), h, w) + b"".join(pixels[i * h * w:(i + 1) * h * w] for i in taken)
    lab = struct.pack(">BBBBI", 0, 0, 8, 1, len(taken)) + bytes(labels[i] for i in taken)
    # mtime=0 keeps the files byte-identical across runs.
    with open(f"{OUT}/{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(gzip.compress(img, 9, mtime=0))
    with open(f"{OUT}/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(gzip.compress(lab, 9, mtime=0))
    print(split, len(taken), counts)
