"""Training on a text file larger than memory: peak RSS stays flat in the file's size.

    python benchmarks/stream_large.py [--gb 2] [--rows 200000]

Builds a CSV of about ``--gb`` GB by repeating the 50,000 IMDB reviews of the shared
``aclImdb_v1.tar.gz`` (``RNNKIT_DATA_DIR`` or ../shared/data), then, in a fresh process each:
the streaming scan of the whole file (vocabulary, labels, held-out rows) and one epoch of
``--rows`` training rows through :class:`rnnkit.tasks.textstream.StreamedBatches` and the
``train text`` default model (GRU 32, maxlen from the scan). Prints peak RSS (VmHWM) after
import, after the scan and after training, the scan's MB/s and training samples/s; and the
same for a 0.1 GB file, so the flatness is visible in one run.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, torch
from rnnkit.tasks.classify import ClassifierSpec, TextClassifier, build_model
from rnnkit.tasks.textstream import StreamedBatches, scan
from rnnkit.text import TextEncoder
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'): return int(line.split()[1]) // 1024
path, rows = sys.argv[1], int(sys.argv[2])
base = peak()
tok = TextEncoder('basic').tokenizer
t0 = time.perf_counter()
sc = scan(path, 'review', 'label', 'csv', tok, 10000)
scan_s = time.perf_counter() - t0
after_scan = peak()
enc = TextEncoder(tok, maxlen=sc.maxlen()); enc.vocabulary = sc.vocabulary
spec = ClassifierSpec(cell='gru', units=32, embed_dim=32, num_words=10000, maxlen=sc.maxlen(),
                      dropout=0.3)
clf = TextClassifier(build_model(spec, 2), enc, sc.labels, spec)
data = StreamedBatches(path, 'review', 'label', 'csv', enc, sc.labels, clf.targets, 32,
                       limit=rows)
t0 = time.perf_counter()
clf.fit_batches(data, epochs=1, patience=0, verbose=0)
train_s = time.perf_counter() - t0
print(base, after_scan, peak(), round(scan_s, 1), sc.train_rows, round(train_s, 1))
"""


def build(path: Path, gb: float, data_dir: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from rnnkit.datasets import load_imdb

    (tx, ty), (vx, vy) = load_imdb(data_dir, "raw", download=False)
    texts, labels = list(tx) + list(vx), list(ty) + list(vy)
    target, written, n = gb * 1e9, 0, 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "label"])
        while written < target:
            for t, y in zip(texts, labels, strict=True):
                w.writerow([t, "pos" if y else "neg"])
                written += len(t) + 6
                n += 1
                if written >= target:
                    break
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--data-dir", default=os.environ.get("RNNKIT_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for gb in (0.1, args.gb):
            f = Path(d) / f"imdb_{gb}.csv"
            n = build(f, gb, Path(args.data_dir))
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(f), str(args.rows)],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                return 1
            base, scan_mb, end_mb, scan_s, train_rows, train_s = out.stdout.split()
            size = f.stat().st_size / 1e6
            print(f"{size:,.0f} MB ({n:,} rows): peak RSS {base} MB after import, {scan_mb} MB "
                  f"after the scan ({size / float(scan_s):.0f} MB/s), {end_mb} MB after "
                  f"training {min(args.rows, int(train_rows)):,} rows "
                  f"({min(args.rows, int(train_rows)) / float(train_s):,.0f} samples/s); "
                  f"wall {time.perf_counter() - t0:.0f} s", flush=True)
            f.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
