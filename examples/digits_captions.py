"""Conditional generation: spell each 8x8 digit's English name, character by character,
from an LSTM whose initial state is computed from the image (the image-captioning shape).

    python examples/digits_captions.py

Uses scikit-learn's bundled ``load_digits`` (1797 images); the last 397 are held out. Prints
the exact-match rate of the generated names next to the most-frequent-name baseline.
"""

from __future__ import annotations

import argparse
import time

import numba
import torch

from rnnkit.tasks.generate import caption_accuracy, load_digit_names, train_captioner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the numba recurrent kernels, likewise

    x, names, _ = load_digit_names()
    t0 = time.time()
    cap, hist = train_captioner(x[:1400], names[:1400], units=args.units, epochs=args.epochs,
                                seed=args.seed, verbose=2)
    print(f"trained in {time.time() - t0:.0f}s; loss {hist['loss'][0]:.3f} -> "
          f"{hist['loss'][-1]:.4f}")
    res = caption_accuracy(cap, x[1400:], names[1400:], names[:1400])
    print(f"held-out exact name: {res['accuracy']:.3f} ({res['n']} images); most-frequent-name "
          f"baseline {res['baseline_accuracy']:.3f}")
    print("samples (truth -> generated):", res["examples"])
    print("sampled at temperature 1:", cap.generate(x[1400:1408], temperature=1.0, seed=1))


if __name__ == "__main__":
    main()
