"""Time to load and tokenize all 50,000 IMDB reviews (goal: under 10 s on 2 CPU cores).

Stages, in this order (one process, one thread):

1. ``read``     -- ``load_imdb(format="raw")``: gunzip ``aclImdb_v1.tar.gz`` in memory, read
   its 50,000 members, decode UTF-8, sort;
2. ``pipeline`` -- what a user runs next, through the public API:
   ``TextEncoder(maxlen).fit_encode(train, num_words)`` then ``encode(test)`` -> two
   ``(25000, maxlen)`` int64 tensors (``encode`` tokenizes only the kept end of long texts);

then, for a breakdown, the pieces on their own:

3. ``tokenize`` -- the ``basic`` tokenizer on all 50,000 whole texts;
4. ``vocab``    -- ``Vocabulary.fit`` on the 25,000 training token lists (``--num-words``);
5. ``encode``   -- ids of all tokens + ``pad_sequences`` to ``(50000, --maxlen)``.

``total`` = read + pipeline, the time a user waits before training starts. Each stage reports
wall-clock seconds and CPU seconds of this process (``time.process_time``); on a shared,
oversubscribed machine the CPU seconds are what an idle machine's wall clock would show.
The best of ``--repeat`` runs is reported (the least disturbed one).

    python benchmarks/load_imdb.py [--data-dir ../shared/data] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


class _Timer:
    """Wall (perf_counter) and CPU (process_time) seconds of a block, stored under ``name``."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float], name: str):
        self.wall, self.cpu, self.name = wall, cpu, name

    def __enter__(self) -> None:
        self.w0, self.c0 = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.wall[self.name] = time.perf_counter() - self.w0
        self.cpu[self.name] = time.process_time() - self.c0


def run_once(data_dir: str | None, num_words: int, maxlen: int
             ) -> tuple[dict[str, float], dict[str, float], int]:
    from rnnkit.datasets import load_imdb
    from rnnkit.text import BasicTokenizer, TextEncoder, Vocabulary, pad_sequences

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with _Timer(wall, cpu, "read"):
        (train_x, _), (test_x, _) = load_imdb(data_dir, format="raw", download=False)
    with _Timer(wall, cpu, "pipeline"):
        enc = TextEncoder(maxlen=maxlen)
        x_train = enc.fit_encode(train_x, num_words)
        x_test = enc.encode(test_x)
    assert x_train.shape == (25000, maxlen) and x_test.shape == (25000, maxlen)
    del enc, x_train, x_test
    tok = BasicTokenizer()
    with _Timer(wall, cpu, "tokenize"):
        train_tok = tok.tokenize_many(train_x)
        test_tok = tok.tokenize_many(test_x)
    with _Timer(wall, cpu, "vocab"):
        vocab = Vocabulary.fit(train_tok, num_words)
    with _Timer(wall, cpu, "encode"):
        pad_sequences([vocab.encode(s) for s in train_tok + test_tok], maxlen)
    tokens = sum(map(len, train_tok)) + sum(map(len, test_tok))
    for d in (wall, cpu):
        d["total"] = d["read"] + d["pipeline"]
    return wall, cpu, tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="directory with aclImdb_v1.tar.gz "
                    "(default: RNNKIT_DATA_DIR, else ../shared/data)")
    ap.add_argument("--num-words", type=int, default=500)
    ap.add_argument("--maxlen", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    runs = [run_once(args.data_dir, args.num_words, args.maxlen) for _ in range(args.repeat)]
    keys = ("read", "pipeline", "total", "tokenize", "vocab", "encode")
    best_wall = {k: min(r[0][k] for r in runs) for k in keys}
    best_cpu = {k: min(r[1][k] for r in runs) for k in keys}
    info = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0], "repeat": args.repeat, "tokens": runs[0][2],
            "num_words": args.num_words, "maxlen": args.maxlen}
    if args.json:
        print(json.dumps({"best_wall_seconds": best_wall, "best_cpu_seconds": best_cpu,
                          "runs_wall": [r[0] for r in runs], **info}))
        return 0
    print(f"IMDB 50,000 reviews, {info['tokens']:,} tokens; best of {args.repeat} "
          f"(python {info['python']}, {info['cpus']} CPUs, 1-min load {info['load_avg_1min']:.2f})")
    print(f"  {'stage':<9} {'wall s':>7} {'cpu s':>7}   wall of each run")
    for k in keys:
        all_runs = ", ".join(f"{r[0][k]:.2f}" for r in runs)
        print(f"  {k:<9} {best_wall[k]:7.2f} {best_cpu[k]:7.2f}   {all_runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
