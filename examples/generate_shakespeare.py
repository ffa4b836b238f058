"""Character-level language model on Tiny Shakespeare: train, report held-out perplexity
beside the unigram baseline, and sample from a prompt with temperature and top-k.

    python examples/generate_shakespeare.py [--data-dir DIR]

The data file ``tinyshakespeare.txt`` is found through ``--data-dir``, else
``$RNNKIT_DATA_DIR``, else ``../shared/data`` next to the project. To stay within about two
minutes on two CPU cores it trains on the first 300k characters for a few hundred batches;
the held-out text is the 30k characters that follow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import torch

from rnnkit.datasets import resolve_data_dir
from rnnkit.tasks.generate import read_text, train_lm, unigram_perplexity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-chars", type=int, default=300_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches-per-epoch", type=int, default=120)
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="save the model here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the numba recurrent kernels, likewise

    d = resolve_data_dir(args.data_dir)
    path = Path(d) / "tinyshakespeare.txt" if d else None
    if path is None or not path.is_file():
        raise SystemExit(f"tinyshakespeare.txt not found (data dir: {d}); pass --data-dir")
    text = read_text(path, args.train_chars + 30_000)
    train, held = text[:args.train_chars], text[args.train_chars:]
    t0 = time.time()
    lm, hist = train_lm(train, level="char", units=args.units, embed_dim=32, seq_len=64,
                        batch_size=32, epochs=args.epochs,
                        batches_per_epoch=args.batches_per_epoch, lr=4e-3, seed=args.seed,
                        verbose=2)
    print(f"trained in {time.time() - t0:.0f}s")
    print(f"held-out perplexity {lm.perplexity(held):.2f} per character (unigram baseline "
          f"{unigram_perplexity(train, held, 'char', lm.vocab):.2f})")
    for temp in (0.5, 1.0):
        print(f"--- temperature {temp}, top-k 10:")
        print(lm.generate("ROMEO:\n", 200, temperature=temp, top_k=10, seed=args.seed))
    if args.out:
        lm.save(args.out)


if __name__ == "__main__":
    main()
