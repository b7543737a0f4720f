"""Writes the fuzzers' seed inputs to crates/vgg/tests/hostile/TARGET/seed-*: small valid files of
every format (the test suite replays them with the crashes the fuzzers found).

Run once (needs torch for the .pth seeds and a built `vgg` for the .bpk seed):
    python3 fuzz/make_seeds.py target/release/vgg
The config and state seeds are a demo run's own config.json and state.json (copied by hand).
The network is vgg::fuzz::tiny(): layers 4,M,8,M,8,M,8,M,8,M, pool 1, hidden 8, 10 classes.
"""
import gzip, io, json, os, struct, subprocess, sys, zlib

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "vgg", "tests", "hostile")
VGG = sys.argv[1] if len(sys.argv) > 1 else "target/release/vgg"


def out(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, "seed-" + name), "wb") as f:
        f.write(data)


def tiny_state_dict():
    torch.manual_seed(0)
    sd, c, i = {}, 3, 0
    for tok in "4,M,8,M,8,M,8,M,8,M".split(","):
        if tok == "M":
            i += 1
            continue
        n = int(tok)
        sd[f"features.{i}.weight"] = torch.randn(n, c, 3, 3) * 0.1
        sd[f"features.{i}.bias"] = torch.zeros(n)
        c, i = n, i + 2
    for j, (a, b) in zip([0, 3, 6], [(c, 8), (8, 8), (8, 10)]):
        sd[f"classifier.{j}.weight"] = torch.randn(b, a) * 0.1
        sd[f"classifier.{j}.bias"] = torch.zeros(b)
    return sd


def safetensors(sd, rename=lambda k: k):
    header, blobs, off = {}, [], 0
    for k, t in sd.items():
        b = t.contiguous().numpy().astype("<f4").tobytes()
        header[rename(k)] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def torch_bytes(obj, legacy=False):
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


sd = tiny_state_dict()
out("safetensors", "tiny.safetensors", safetensors(sd))
caffe = {f"features.{i}": f"conv{b}_1" for i, b in [(0, 1), (3, 2), (6, 3), (9, 4), (12, 5)]}
caffe.update({"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"})
out("safetensors", "caffe.safetensors",
    safetensors(sd, lambda k: caffe[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]))
out("safetensors", "half.safetensors", safetensors({k: v for k, v in list(sd.items())[:2]}))
out("pth", "tiny.pth", torch_bytes(sd))
out("pth", "legacy.pth", torch_bytes(sd, legacy=True))
out("pth", "wrapped.pth", torch_bytes({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}))
out("pth", "f16.pth", torch_bytes({k: v.half() for k, v in list(sd.items())[:4]}))

st = os.path.join(ROOT, "safetensors", "seed-tiny.safetensors")
bpk = os.path.join(ROOT, "bpk", "seed-tiny.bpk")
os.makedirs(os.path.dirname(bpk), exist_ok=True)
subprocess.run([VGG, "convert", st, bpk, "--force", "--arch", "tiny", "--layers", "4,M,8,M,8,M,8,M,8,M",
                "--pool-size", "1", "--hidden", "8", "--num-classes", "10"], check=True)


# The same tiny network as a Caffe model (today's form) and as ONNX (written by vgg convert).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "vgg", "tests", "fixtures"))
from make_formats import blob_v2, ld  # noqa: E402
caffe = b""
for key in [k for k in sd if k.endswith(".weight")]:
    name = key.replace(".weight", "").replace(".", "_")
    body = ld(1, name.encode()) + ld(2, b"Convolution") + ld(7, blob_v2(sd[key].numpy())) + ld(7, blob_v2(sd[key.replace("weight", "bias")].numpy()))
    caffe += ld(100, body)
out("caffe", "tiny.caffemodel", caffe)
onnx = os.path.join(ROOT, "onnx", "seed-tiny.onnx")
os.makedirs(os.path.dirname(onnx), exist_ok=True)
subprocess.run([VGG, "convert", st, onnx, "--force", "--arch", "tiny", "--layers", "4,M,8,M,8,M,8,M,8,M",
                "--pool-size", "1", "--hidden", "8", "--num-classes", "10"], check=True)
try:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers as kl
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for b, w in enumerate([4, 8, 8, 8, 8], 1):
        x = kl.Conv2D(w, 3, padding="same", activation="relu", name=f"block{b}_conv1")(x)
        x = kl.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = kl.Flatten(name="flatten")(x)
    x = kl.Dense(8, activation="relu", name="fc1")(x)
    x = kl.Dense(8, activation="relu", name="fc2")(x)
    m = keras.Model(inputs, kl.Dense(10, name="predictions")(x))
    m.save(os.path.join(ROOT, "keras", "seed-tiny.h5")) if os.makedirs(os.path.join(ROOT, "keras"), exist_ok=True) is None else None
    m.save_weights(os.path.join(ROOT, "keras", "seed-tiny.weights.h5"))
except ImportError:
    pass


def png(w, h, grey=True):
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(w * (1 if grey else 3))) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if grey else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


out("image", "grey.png", png(8, 6))
out("image", "rgb.png", png(5, 4, grey=False))
try:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 10)).save(buf, "JPEG", quality=80)
    out("image", "rgb.jpg", buf.getvalue())
    buf = io.BytesIO()
    Image.new("L", (16, 12), 90).save(buf, "JPEG", progressive=True)
    out("image", "progressive.jpg", buf.getvalue())
    # The other formats a folder dataset reads: 12x8 of chelsea.png.
    small = Image.open(os.path.join(ROOT, "..", "fixtures", "chelsea.png")).convert("RGB").resize((12, 8))
    for ext, options in [("bmp", {}), ("gif", {}), ("tiff", {}), ("webp", {"lossless": True}), ("ppm", {})]:
        buf = io.BytesIO()
        small.save(buf, ext.upper() if ext != "tiff" else "TIFF", **options)
        out("image", "rgb." + ext, buf.getvalue())
except ImportError:
    pass
# seed-restart.jpg: a 40x24 JPEG with a restart marker after every MCU, by libjpeg-turbo's
# `cjpeg -quality 80 -restart 1B` (not made here).


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


images = idx([2, 3, 3], range(18))
labels = idx([2], [1, 7])
out("idx", "plain", bytes([len(images)]) + images + labels)
gz_images = gzip.compress(images)
out("idx", "gzip", bytes([len(gz_images)]) + gz_images + labels)

out("cifar", "two", b"".join(bytes([label]) + bytes((i * 13 + label) % 256 for i in range(3072)) for label in [3, 9]))

out("layers", "d", b"64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512,M")
out("layers", "c-lrn", b"[64, 'L', 'M', 128, 'C1-128', 'M', 'C3-32']")
out("layers", "spaces", b"16 M 32\nM C1-8")
