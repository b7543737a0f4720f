"""The table and the verdicts of bench/reproduce.sh, from its work folder.

    python3 bench/reproduce_table.py WORK_DIR [--svg OUT.svg]   markdown table on stdout
    python3 bench/reproduce_table.py WORK_DIR --best-two         the two best configurations

A cell is WORK_DIR/<config>-s<seed> with the run's state.json (its history gives the training
time: the epochs' seconds), center.json (`vgg eval --json`, centre crop on every test image) and
eval.json (the four methods on the first LIMIT test images). Errors are top-1 error on the test images, in %; with several seeds each cell shows
the mean and, in brackets, every seed, so that the noise is visible. Orderings of configurations
are judged by the centre crop on every test image, methods against each other on the same
LIMIT images; each verdict names the difference and the standard error of one error rate
(sqrt(p(1-p)/n)), and calls a difference under two standard errors a tie. With several seeds
the means are compared, and a difference whose sign is not the same for every seed (seed 1
against seed 1, seed 2 against seed 2, ...) is a tie too: the seeds disagree. The ensemble
(WORK_DIR/ensemble-s<seed>.json, its members' WORK_DIR/ensemble-<config>-s<seed>.json) is
judged the same way, seed by seed.
"""
import json, math, os, re, sys

ORDER = ["A", "A-LRN", "B", "C", "C-jit", "D", "D-jit", "E", "E-jit"]
METHODS = ["center", "dense", "multicrop", "dense+multicrop"]


def cells(work):
    found = {}
    for name in sorted(os.listdir(work)):
        m = re.fullmatch(r"(.+)-s(\d+)", name)
        path = os.path.join(work, name)
        if not m or not os.path.isfile(os.path.join(path, "eval.json")):
            continue
        state = json.load(open(os.path.join(path, "state.json")))
        rows = {r["method"]: r for r in json.load(open(os.path.join(path, "eval.json")))}
        center = json.load(open(os.path.join(path, "center.json")))[0]
        found.setdefault(m.group(1), []).append({
            "dir": name,
            "seed": int(m.group(2)),
            "val_err": 100 * min(h["val_top1_err"] for h in state["history"]),
            "epochs": len(state["history"]),
            "history": [100 * h["val_top1_err"] for h in state["history"]],
            "err": {k: 100 * r["top1_err"] for k, r in rows.items()},
            "center_all": 100 * center["top1_err"],
            "center_images": center["images"],
            "images": next(iter(rows.values()))["images"],
            "scales": next(iter(rows.values()))["scales"],
            # The epochs' own time, from the run's history: a run resumed (by hand, or by a
            # second invocation) spent more than times.json's last training call.
            "train_s": sum(h["seconds"] for h in state["history"]),
        })
    return found


def mean(xs):
    return sum(xs) / len(xs)


def cell_text(runs, get):
    values = [get(r) for r in runs]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def err(found, cell):
    """A configuration's error: the centre crop on every test image, mean over seeds."""
    runs = found.get(cell)
    return mean([r["center_all"] for r in runs]) if runs else None


def se(p_percent, n):
    """The standard error of an error rate p (in %) measured on n images, in points."""
    p = p_percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def verdicts(found, ensemble):
    out = []
    n = next(iter(found.values()))[0]["center_images"] if found else 1

    def better(worse, good, tie_holds=False):
        """'holds', 'does not hold' or 'tie' for "good has lower error than worse" (a tie holds
        for claims of "at least as good")."""
        a, b = err(found, worse), err(found, good)
        if a is None or b is None:
            return None, ""
        pairs = paired(found.get(worse), found.get(good), lambda r: r["center_all"])
        return judge(a, b, 2 * se((a + b) / 2, n), pairs, tie_holds)

    def claim(text, result):
        verdict, detail = result
        out.append(f"| {text} | {verdict or 'not measured'} | {detail} |")

    claim("deeper is better: B better than A (Table 3)", better("A", "B"))
    claim("deeper is better: D better than B", better("B", "D"))
    claim("deeper is better: E at least as good as D", better("D", "E", tie_holds=True))
    claim("LRN does not help: A-LRN no better than A", better("A-LRN", "A", tie_holds=True))
    claim("3x3 beats 1x1 at the same depth: D better than C", better("C", "D"))
    for c in ["C", "D", "E"]:
        claim(f"scale jittering helps: {c}-jit better than {c}", better(c, f"{c}-jit"))
    comp = [all(r["err"]["dense+multicrop"] <= min(r["err"]["dense"], r["err"]["multicrop"])
                for r in runs) for runs in found.values()]
    m = next(iter(found.values()))[0]["images"] if found else 1
    claim(f"dense and multi-crop are complementary (dense+multi-crop at least as good as both, "
          f"on the same {m} images)",
          ("holds" if comp and all(comp) else "does not hold",
           f"in {sum(comp)} of {len(comp)} configurations"))
    if ensemble:
        # Per seed: the ensemble against its better member.
        pairs = [(min(s["members_err"]), s["err"]) for s in ensemble["seeds"]]
        a, b = mean([p[0] for p in pairs]), mean([p[1] for p in pairs])
        claim(f"combining nets helps: the ensemble of {' + '.join(ensemble['members'])} beats its "
              f"best member (dense, Q = 32, 40, 48, every test image)",
              judge(a, b, 2 * se(a, ensemble["images"]), pairs if len(pairs) > 1 else []))
    return out


def paired(worse_runs, good_runs, get):
    """(worse, good) per seed that both sides ran, when there are several."""
    if not worse_runs or not good_runs:
        return []
    good = {r["seed"]: get(r) for r in good_runs}
    pairs = [(get(r), good[r["seed"]]) for r in worse_runs if r["seed"] in good]
    return pairs if len(pairs) > 1 else []


def judge(a, b, margin, pairs, tie_holds=False):
    """The verdict on "b (mean error) is lower than a" and its detail; `pairs` the per-seed
    (a, b) when there are several seeds."""
    detail = f"{a:.2f} vs {b:.2f} (2 s.e. = {margin:.2f})"
    if pairs:
        detail += "; per seed " + ", ".join(f"{x:.2f} vs {y:.2f}" for x, y in pairs)
    tie = "holds (tie)" if tie_holds else "tie"
    if abs(a - b) < margin:
        return tie, detail
    if pairs and len({x > y for x, y in pairs if x != y}) > 1:
        return tie + " (the seeds disagree)", detail
    return ("holds" if b < a else "does not hold"), detail


def svg(found, path):
    """Validation top-1 error per epoch, one line per configuration (first seed)."""
    w, h, pad = 640, 360, 48
    series = {c: found[c][0]["history"] for c in ORDER if c in found}
    if not series:
        return
    top = max(max(s) for s in series.values())
    low = min(min(s) for s in series.values())
    n = max(len(s) for s in series.values())
    x = lambda i: pad + (w - 2 * pad) * (i / max(n - 1, 1))
    y = lambda v: pad + (h - 2 * pad) * (top - v) / max(top - low, 1e-9)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="18" text-anchor="middle">validation top-1 error (%) per epoch'
             f'</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
             f'<text x="{pad - 4}" y="{y(top) + 4}" text-anchor="end">{top:.1f}</text>',
             f'<text x="{pad - 4}" y="{y(low) + 4}" text-anchor="end">{low:.1f}</text>']
    for i in range(n):
        parts.append(f'<text x="{x(i)}" y="{h - pad + 14}" text-anchor="middle">{i + 1}</text>')
    for k, (c, s) in enumerate(series.items()):
        col = colours[k % len(colours)]
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s))
        dash = ' stroke-dasharray="5,3"' if c.endswith("-jit") else ""
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.5"{dash} points="{pts}"/>')
        parts.append(f'<text x="{w - pad + 4}" y="{y(s[-1]) + 4}" fill="{col}">{c}</text>')
    parts.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(tmp, path)


def main():
    work = sys.argv[1]
    found = cells(work)
    # The two best configurations by their first seed's validation error.
    ranked = sorted(found, key=lambda c: found[c][0]["val_err"])[:2]
    if "--best-two" in sys.argv:
        if len(ranked) < 2:
            sys.exit("fewer than two finished cells")
        print(*ranked)
        return
    if "--svg" in sys.argv:
        svg(found, sys.argv[sys.argv.index("--svg") + 1])
    ensemble = None
    one = lambda path: 100 * json.load(open(path))[0]["top1_err"]
    seeds = []
    for seed in sorted({r["seed"] for runs in found.values() for r in runs}):
        path = os.path.join(work, f"ensemble-s{seed}.json")
        if os.path.isfile(path):
            seeds.append({"seed": seed, "err": one(path),
                          "images": json.load(open(path))[0]["images"],
                          "members_err": [one(os.path.join(work, f"ensemble-{c}-s{seed}.json"))
                                          for c in ranked]})
    if seeds:
        ensemble = {"members": ranked, "seeds": seeds, "images": seeds[0]["images"]}
    any_run = next(iter(found.values()))[0] if found else None
    if any_run:
        print(f"Top-1 error (%). Centre crop at Q = S (or (Smin + Smax) / 2 when S is jittered, "
              f"Table 3's rule) on all "
              f"{any_run['center_images']} test images; then the four methods over the test "
              f"scales Q on the first {any_run['images']}; seeds in brackets.\n")
    print(f"| config | S (train) | epochs | best val err | centre (all) | centre | dense "
          "| multi-crop | dense+multi-crop | train time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in ORDER:
        runs = found.get(c)
        if not runs:
            continue
        s = "[32, 48]" if c.endswith("-jit") else "36"
        row = [c, s, cell_text(runs, lambda r: r["epochs"]).replace(".00", ""),
               cell_text(runs, lambda r: r["val_err"]),
               cell_text(runs, lambda r: r["center_all"])]
        row += [cell_text(runs, lambda r, m=m: r["err"][m]) for m in METHODS]
        row.append(f"{mean([r['train_s'] for r in runs]) / 60:.0f} min")
        print("| " + " | ".join(row) + " |")
    if ensemble:
        per = "; ".join(f"seed {s['seed']}: {s['err']:.2f}%, the members alone "
                        f"{' and '.join(f'{e:.2f}%' for e in s['members_err'])}"
                        for s in ensemble["seeds"])
        print(f"\nEnsemble of the two best by validation error (first seed), "
              f"{' + '.join(ensemble['members'])}, the same seed for both members, by dense "
              f"evaluation at Q = 32, 40, 48 on all {ensemble['images']} test images, top-1 "
              f"error: {per}.")
    print("\n| the paper's finding | here | errors (%) |\n|---|---|---|")
    print("\n".join(verdicts(found, ensemble)))


if __name__ == "__main__":
    main()
