"""Time to load and tokenize all 50,000 IMDB reviews (goal: under 10 s on 2 CPU cores).

Stages, each timed with ``time.perf_counter`` (wall clock, one process, one thread):

1. ``read``     -- ``load_imdb(format="raw")``: gunzip ``aclImdb_v1.tar.gz`` in memory, read
   its 50,000 members, decode UTF-8, sort;
2. ``tokenize`` -- the ``basic`` tokenizer on all 50,000 texts;
3. ``vocab``    -- ``Vocabulary.fit`` on the 25,000 training token lists (``--num-words``);
4. ``encode``   -- ids + ``pad_sequences`` to ``(50000, --maxlen)`` int64 tensors;
5. ``pipeline`` -- the same end to end through the public API:
   ``TextEncoder(maxlen).fit_encode(train, num_words)`` then ``encode(test)`` (each text
   tokenized once; ``fit`` + ``encode(train)`` would tokenize the training texts twice).

``total`` = read + pipeline, the time a user waits before training starts. The best of
``--repeat`` runs is reported (the machine is shared; the best run is the least disturbed).

    python benchmarks/load_imdb.py [--data-dir ../shared/data] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def run_once(data_dir: str | None, num_words: int, maxlen: int) -> dict[str, float]:
    from rnnkit.datasets import load_imdb
    from rnnkit.text import BasicTokenizer, TextEncoder, Vocabulary, pad_sequences

    t = {}
    t0 = time.perf_counter()
    (train_x, _), (test_x, _) = load_imdb(data_dir, format="raw", download=False)
    t["read"] = time.perf_counter() - t0

    tok = BasicTokenizer()
    t0 = time.perf_counter()
    train_tok = tok.tokenize_many(train_x)
    test_tok = tok.tokenize_many(test_x)
    t["tokenize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vocab = Vocabulary.fit(train_tok, num_words)
    t["vocab"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pad_sequences([vocab.encode(s) for s in train_tok + test_tok], maxlen)
    t["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    enc = TextEncoder(maxlen=maxlen)
    x_train = enc.fit_encode(train_x, num_words)
    x_test = enc.encode(test_x)
    t["pipeline"] = time.perf_counter() - t0
    assert x_train.shape == (25000, maxlen) and x_test.shape == (25000, maxlen)
    t["tokens"] = float(sum(map(len, train_tok)) + sum(map(len, test_tok)))
    t["total"] = t["read"] + t["pipeline"]
    return t


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
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    info = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0], "repeat": args.repeat,
            "num_words": args.num_words, "maxlen": args.maxlen}
    if args.json:
        print(json.dumps({"best_seconds": best, "runs": runs, **info}))
        return 0
    print(f"IMDB 50,000 reviews, {int(best['tokens']):,} tokens; best of {args.repeat} "
          f"(python {info['python']}, {info['cpus']} CPUs, load {info['load_avg_1min']:.2f})")
    for k in ("read", "tokenize", "vocab", "encode", "pipeline", "total"):
        all_runs = ", ".join(f"{r[k]:.2f}" for r in runs)
        print(f"  {k:<9} {best[k]:6.2f} s   (runs: {all_runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
