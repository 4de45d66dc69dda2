#!/usr/bin/env python3
"""Plots the cost-growth curves of a `scheduler-bench scale` run (its last output line, JSON).

    cargo run --release -p scheduler-bench -- scale | tail -n 1 > scale.json
    pip install matplotlib && python3 benches/plot_scale.py scale.json docs/img/scale.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
d = json.loads(open(src).read().strip().splitlines()[-1])
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))

grid = d["throughput_grid"]
for shards in sorted({g["shards"] for g in grid}):
    pts = sorted((g["workers"], g["processed_per_s"]) for g in grid if g["shards"] == shards)
    a.plot([w for w, _ in pts], [p for _, p in pts], marker="o", label=f"{shards} shards")
a.set_xlabel("worker processes")
a.set_ylabel("processed tasks / s")
a.set_title(f"Drain of {grid[0]['tasks']:,} queued tasks, one Redis")
a.set_xticks(sorted({g["workers"] for g in grid}))
a.set_ylim(bottom=0)
a.grid(alpha=0.3)
a.legend()

rates = d["lateness_by_rate"]
xs = [r["rate_per_s"] for r in rates]
for q in ("p50", "p99", "max"):
    b.plot(xs, [max(r["lateness_ms"][q], 0.5) for r in rates], marker="o", label=q)
b.set_xscale("log")
b.set_yscale("log")
b.set_xlabel("due tasks / s (16 shards, 1 worker process)")
b.set_ylabel("claim - due, ms (0 drawn at 0.5)")
b.set_title("Lateness against due rate")
b.grid(alpha=0.3, which="both")
b.legend()

fig.suptitle(f"scheduler-bench scale, Redis {d['redis_version']}, 2-core VM")
fig.tight_layout()
fig.savefig(dst, dpi=100)
print(f"wrote {dst}")
