"""Korean tokenization throughput: sentences tokenized per second.

Tokenizers: ``ko`` (kiwipiepy morphemes) one text at a time and batched (``tokenize_many`` on
1 and 2 kiwipiepy threads), ``ko`` with spacing correction, ``sentencepiece`` (trained on the
texts first; training time reported separately) and ``basic`` (regex words, as a baseline).
Texts: the reviews of an NSMC-format file (default: the synthetic fixture
``tests/fixtures/nsmc_small.txt``, repeated to ``--n`` texts; pass a real ``ratings_test.txt``
with ``--file``). Each row is the best of ``--repeat`` timed runs after one warm-up run, so the
one-off kiwipiepy model load (about a second) is excluded and reported on its own. Wall and
CPU seconds (``time.process_time``, all threads of the process) are both reported: on a busy
machine the wall clock overstates the cost.

    python benchmarks/tokenize_ko.py [--file ratings_test.txt] [--n 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "tests" / "fixtures" / "nsmc_small.txt"


def _best(fn, texts: list[str], repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds of this process over ``repeat`` runs."""
    fn(texts[:200])  # warm-up
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(texts)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(FIXTURE), help="NSMC-format file of texts")
    ap.add_argument("--n", type=int, default=20000, help="number of texts to tokenize")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)

    from rnnkit.nsmc import load_nsmc
    from rnnkit.text import get_tokenizer
    from rnnkit.text_ko import _kiwi

    base, _, _ = load_nsmc(args.file)
    texts = (base * (args.n // len(base) + 1))[: args.n]
    chars = sum(map(len, texts)) / len(texts)

    t0 = time.perf_counter()
    _kiwi(1)
    load_s = time.perf_counter() - t0
    _kiwi(2)

    ko1 = get_tokenizer("ko")
    ko2 = get_tokenizer("ko", num_workers=2)
    ko_space = get_tokenizer("ko", spacing=True)
    basic = get_tokenizer("basic")
    spm = get_tokenizer("sentencepiece", vocab_size=1000)
    t0 = time.perf_counter()
    spm.fit(base)
    spm_train_s = time.perf_counter() - t0

    cases = [
        ("ko, one text at a time", lambda ts: [ko1.tokenize(t) for t in ts]),
        ("ko, tokenize_many, 1 thread", ko1.tokenize_many),
        ("ko, tokenize_many, 2 threads", ko2.tokenize_many),
        ("ko + spacing, one text at a time", lambda ts: [ko_space.tokenize(t) for t in ts]),
        ("sentencepiece (unigram 1000), tokenize_many", spm.tokenize_many),
        ("basic (regex words), tokenize_many", basic.tokenize_many),
    ]
    import kiwipiepy
    import sentencepiece

    print(f"{len(texts)} texts from {args.file} (mean {chars:.1f} characters); kiwipiepy "
          f"{kiwipiepy.__version__}, sentencepiece {sentencepiece.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print(f"kiwipiepy model load {load_s:.2f} s; sentencepiece training on {len(base)} texts "
          f"{spm_train_s:.2f} s")
    rows = []
    for name, fn in cases:
        s, cpu = _best(fn, texts, args.repeat)
        rows.append({"tokenizer": name, "seconds": round(s, 3), "cpu_seconds": round(cpu, 3),
                     "sentences_per_s": round(len(texts) / s),
                     "sentences_per_cpu_s": round(len(texts) / cpu)})
        print(f"{name:<46} {len(texts) / s:>10,.0f} sentences/s  ({s:.2f} s wall, "
              f"{cpu:.2f} s CPU: {len(texts) / cpu:,.0f} sentences per CPU second)")
    if args.json:
        print(json.dumps({"texts": len(texts), "mean_chars": round(chars, 1),
                          "kiwi_load_s": round(load_s, 2), "rows": rows}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
