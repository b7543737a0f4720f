"""Writes Fashion-MNIST subsets as image folders (one PNG per image, one folder per class) for
the fine-tuning experiment of bench/finetune.sh.

    python3 bench/fmnist_subsets.py OUT [/usr/share/datasets/fashion-mnist]

OUT/pretrain     the training images of classes 0-4 (30,000)
OUT/few          300 training images of classes 5-9 (60 a class, the first of each)
OUT/val          1,000 other training images of classes 5-9 (200 a class), for validation
OUT/test         the 5,000 test images of classes 5-9
"""
import gzip, os, struct, sys

from PIL import Image

NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def find(root, stem):
    for ext in ("", ".gz"):
        p = os.path.join(root, stem + ext)
        if os.path.exists(p):
            return p
    sys.exit(f"{root}: no {stem}[.gz]")


def load(root, split):
    (n, h, w), pixels = read_idx(find(root, f"{split}-images-idx3-ubyte"))
    _, labels = read_idx(find(root, f"{split}-labels-idx1-ubyte"))
    return [(pixels[i * h * w:(i + 1) * h * w], labels[i], h, w) for i in range(n)]


def write(out, items):
    for k, (pix, label, h, w) in enumerate(items):
        d = os.path.join(out, NAMES[label])
        os.makedirs(d, exist_ok=True)
        Image.frombytes("L", (w, h), pix).save(os.path.join(d, f"{k:05d}.png"))


def main():
    out = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    train, test = load(root, "train"), load(root, "t10k")
    write(os.path.join(out, "pretrain"), [x for x in train if x[1] < 5])
    taken = {c: 0 for c in range(5, 10)}
    few, val = [], []
    for x in train:
        c = x[1]
        if c < 5:
            continue
        if taken[c] < 60:
            few.append(x)
        elif taken[c] < 260:
            val.append(x)
        taken[c] += 1
    write(os.path.join(out, "few"), few)
    write(os.path.join(out, "val"), val)
    write(os.path.join(out, "test"), [x for x in test if x[1] >= 5])


main()
