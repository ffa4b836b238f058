"""Data-parallel throughput: ``rnnkit train text`` samples per second at 1 and 2 processes
(``torchrun --standalone --nproc-per-node N``, gloo on CPU), the same data, seed and global
batch.

    python benchmarks/ddp_throughput.py [--samples 20000] [--epochs 2] [--json out.json]

The data are generated reviews (two classes, 20-60 words). One process runs the fused
training step; the data-parallel runs use DistributedDataParallel over the per-layer
kernels (the fused step does not run data-parallel), each process on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS_POS = "good great fine wonderful moving superb clever warm".split()
WORDS_NEG = "bad awful dull boring wooden weak silly cold".split()
FILLER = "the a film movie story plot cast scene it was and but very quite".split()


def make_data(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 1
        words = [rng.choice(WORDS_POS if pos else WORDS_NEG) if rng.random() < 0.2
                 else rng.choice(FILLER) for _ in range(rng.randint(20, 60))]
        rows.append(f"{' '.join(words)},{'pos' if pos else 'neg'}")
    path.write_text("\n".join(rows) + "\n")


def run(procs: int, data: Path, out: Path, epochs: int) -> dict:
    flags = ["train", "text", "--file", str(data), "--text-col", "text", "--label-col", "label",
             "--epochs", str(epochs), "--batch-size", "64", "--patience", "0", "--seed", "1",
             "--quiet", "--json", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if procs > 1 else os.environ.get(
        "OMP_NUM_THREADS", "1")}
    cmd = ([sys.executable, "-m", "rnnkit"] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(procs), "-m", "rnnkit"])
    t0 = time.perf_counter()
    p = subprocess.run(cmd + flags, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    res = json.loads([x for x in p.stdout.splitlines() if x.startswith("{")][-1])
    return {"processes": procs, "train_seconds": res["train_seconds"], "wall_seconds":
            round(wall, 1), "test_accuracy": res["test"]["accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data.csv"
        make_data(data, args.samples)
        train_n = int(args.samples * 0.8 * 0.9)  # the CLI's default test and validation parts
        for procs in (1, 2):
            r = run(procs, data, Path(d) / f"m{procs}", args.epochs)
            r["samples_per_s"] = round(train_n * args.epochs / r["train_seconds"], 1)
            rows.append(r)
            print(f"{procs} process(es): {r['samples_per_s']} samples/s "
                  f"(train {r['train_seconds']} s, wall {r['wall_seconds']} s, "
                  f"test accuracy {r['test_accuracy']:.3f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
