#!/usr/bin/env python3
"""Where data-parallel VGG training stops scaling: a ring all-reduce model.

Per SGD step each worker computes b images, then the gradient (4 bytes per parameter) is
all-reduced with a ring: 2 (N-1)/N * bytes over the link plus 2 (N-1) latency hops per
bucket. Without overlap the step takes compute + all-reduce; with full overlap, the larger.
Usage: bench/scaling_model.py [--batch-per-worker 32] [--img-per-s 16]
"""
import argparse

PARAMS = {"vgg11": 132_863_336, "vgg16": 138_357_544, "vgg19": 143_667_240}
BUCKET = 16 * 2**20  # bytes, as vgg train
LATENCY = 10e-6  # seconds per hop (TCP ~10-50 us; RDMA ~2 us)


def allreduce_s(params, workers, gbps, bytes_per_param=4):
    if workers == 1:
        return 0.0
    size = params * bytes_per_param
    buckets = -(-size // BUCKET)
    return 2 * (workers - 1) / workers * size / (gbps * 1e9 / 8) + 2 * (workers - 1) * buckets * LATENCY


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="vgg16", choices=PARAMS)
    ap.add_argument("--batch-per-worker", type=int, default=32)
    ap.add_argument("--img-per-s", type=float, default=16.0, help="one worker's training speed")
    ap.add_argument("--fp16", action="store_true", help="2-byte gradients")
    ap.add_argument("--links", default="10,25,100", help="link speeds in Gb/s")
    a = ap.parse_args()
    p = PARAMS[a.variant]
    bpp = 2 if a.fp16 else 4
    compute = a.batch_per_worker / a.img_per_s
    print(f"{a.variant}: {p:,} parameters, {p * bpp / 1e6:.0f} MB of gradient per step; "
          f"compute {compute:.2f} s per step ({a.batch_per_worker} images at {a.img_per_s:g} img/s)")
    links = [float(x) for x in a.links.split(",")]
    print()
    print("| workers | " + " | ".join(f"{g:g} Gb/s" for g in links) + " |")
    print("|---:|" + "---:|" * len(links))
    for n in (2, 4, 8, 16, 32, 64):
        cells = []
        for g in links:
            t = allreduce_s(p, n, g, bpp)
            cells.append(f"{t:.2f} s, {compute / (compute + t):.0%} ({compute / max(compute, t):.0%})")
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\ncell: all-reduce seconds per step, scaling efficiency without overlap (with full overlap)")


if __name__ == "__main__":
    main()
