#!/usr/bin/env python3
"""Runs `vgg bench --json` (our kernels), the same with Winograd off (`VGG_NO_WINOGRAD=1`: our
direct convolutions), `vgg bench --json --generic` (burn's generic operations) and
bench/pytorch.py in turn on the standard workloads and prints our images/s beside PyTorch's with
the ratio.

    cargo build --release && python3 bench/compare.py [--runs 5]
"""
import argparse, json, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--runs", type=int, default=5)
a = p.parse_args()
vgg = os.path.join(here, "..", "target", "release", "vgg")
peak = subprocess.run([vgg, "bench", "--runs", "1", "--warmup", "0", "--arch", "vgg11", "--input", "3x32x32", "--batch", "1"],
                      check=True, capture_output=True, text=True).stdout
peak = next(l for l in peak.splitlines() if l.startswith("CPU peak"))
def bench(*extra, env=None):
    return json.loads(subprocess.run([vgg, "bench", "--json", "--runs", str(a.runs), *extra], check=True, capture_output=True, text=True,
                                     env={**os.environ, **(env or {})}).stdout)


ours, direct, generic = bench(), bench(env={"VGG_NO_WINOGRAD": "1"}), bench("--generic")
theirs = json.loads(subprocess.run([sys.executable, os.path.join(here, "pytorch.py"), "--runs", str(a.runs), "--threads", str(os.cpu_count())],
                                   check=True, capture_output=True, text=True).stdout)
print(peak)
print(f"PyTorch {theirs[0]['torch']}, {theirs[0]['threads']} threads; vgg on burn 0.22 flex")
print("| workload | vgg img/s | no Winograd img/s | generic img/s | PyTorch img/s | vgg / PyTorch | vgg GFLOP/s (% peak) | vgg peak RSS | PyTorch peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for o, d, g, t in zip(ours, direct, generic, theirs):
    name = f"{o['variant']}{' compact' if o['compact'] else ''} {o['mode']} b{o['batch']} {o['input'][1]}x{o['input'][2]}"
    print(f"| {name} | {o['images_per_s']:.2f} | {d['images_per_s']:.2f} | {g['images_per_s']:.2f} | {t['images_per_s']:.2f} | {o['images_per_s'] / t['images_per_s']:.2f}x | "
          f"{o['gflops']:.0f} ({100 * o['peak_fraction']:.0f}%) | {o['peak_rss_bytes'] / 1e6:.0f} MB | {t['peak_rss_bytes'] / 1e6:.0f} MB |")
