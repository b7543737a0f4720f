#!/usr/bin/env python3
"""The `vgg bench` standard workloads in PyTorch/torchvision, same timing method (warm-up, then
the median of timed runs), printed as JSON rows with the same fields.

    python3 bench/pytorch.py [--runs 5] [--warmup 1] [--threads N] [--device cpu|cuda] [--gpu-set]

--gpu-set adds VGG-16 training at batch 64 on 224x224 (bench/gpu.sh); on cuda each timed run ends
with torch.cuda.synchronize(), and peak memory is the GPU's (torch.cuda.max_memory_allocated).
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

WORKLOADS = [
    ("vgg16", "inference", 1, (3, 224, 224), False),
    ("vgg16", "inference", 8, (3, 224, 224), False),
    ("vgg16_bn", "train", 64, (3, 32, 32), True),
    ("vgg11", "train", 16, (3, 224, 224), False),
]
GPU_EXTRA = [("vgg16", "train", 64, (3, 224, 224), False)]


def run_one(spec, runs, warmup, threads, device):
    import torch, torchvision
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    variant, mode, batch, shape, compact = spec
    model = getattr(torchvision.models, variant)(num_classes=10 if compact else 1000)
    if compact:  # pool 1x1, hidden 512: the 512x1x1 map feeds FC1 directly
        model.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        model.classifier = torch.nn.Sequential(
            torch.nn.Linear(512, 512), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(512, 512), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(512, 10))
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train(mode == "train")
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        if mode == "train":
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--gpu-set", action="store_true")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    workloads = WORKLOADS + (GPU_EXTRA if a.gpu_set else [])
    if a.one is not None:
        median = run_one(workloads[a.one], a.runs, a.warmup, a.threads, a.device)
        if a.device == "cuda":
            import torch
            rss = torch.cuda.max_memory_allocated()
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"median_s": median, "peak_rss_bytes": rss}))
        return
    import torch
    rows = []
    for i, (variant, mode, batch, shape, compact) in enumerate(workloads):
        out = subprocess.run([sys.executable, __file__, "--one", str(i), "--runs", str(a.runs), "--warmup", str(a.warmup),
                              "--threads", str(a.threads), "--device", a.device] + (["--gpu-set"] if a.gpu_set else []),
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        rows.append({"variant": variant, "mode": mode, "batch": batch, "input": list(shape), "compact": compact,
                     "median_ms": r["median_s"] * 1e3, "images_per_s": batch / r["median_s"],
                     "peak_rss_bytes": r["peak_rss_bytes"], "torch": torch.__version__, "threads": a.threads,
                     "device": a.device})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
