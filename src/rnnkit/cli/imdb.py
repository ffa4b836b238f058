"""``rnnkit train imdb``: the flagship -- sentiment of IMDB movie reviews.

Defaults are the seed's recipe: num_words 500, maxlen 100 (front padding/truncation),
Embedding(500, 16) -> SimpleRNN(8) -> Dense(1, sigmoid), RMSprop 1e-4, batch 64, 20%
validation split (seed 42), early stopping with patience 3 restoring the best weights, up
to 100 epochs. ``--recipe recommended`` switches to rnnkit's own faster recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..datasets import load_imdb, train_val_split
from ..errors import UserError
from ..plots import plot_history
from ..tasks.classify import TextClassifier
from ..text import format_length_stats, length_stats
from ..train import seed_everything
from .common import (
    add_model_args,
    add_training_args,
    check_positive,
    classifier_spec,
    given,
    predict_texts_cmd,
    print_json,
)

LABELS = ["negative", "positive"]

#: rnnkit's recommended IMDB recipe (docs/results.md): what ``--recipe recommended`` sets.
#: (``rnnkit.train.RECOMMENDED`` is the optimizer setting for the seed's small model.)
RECOMMENDED = {"cell": "lstm", "num_words": 10000, "maxlen": 200, "embed_dim": 32, "units": 32,
               "optimizer": "adam", "lr": 3e-3, "batch_size": 64, "patience": 2, "mask": True}


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("imdb", help="sentiment of IMDB movie reviews (the flagship)",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_training_args(p)
    p.add_argument("--recipe", choices=["seed", "recommended"], default="seed",
                   help="'recommended' replaces the model/optimiser defaults with rnnkit's "
                        "own recipe (explicit flags still win)")
    p.add_argument("--data-dir", help="directory holding aclImdb_v1.tar.gz (else "
                   "RNNKIT_DATA_DIR, ../shared/data, or a download)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and N test reviews (quick runs)")
    p.set_defaults(func=train, out_default="models/imdb")

    from . import TASKS
    TASKS["imdb"] = {"evaluate": evaluate_cmd, "predict": predict_texts_cmd}


def _apply_recipe(args: argparse.Namespace) -> None:
    if args.recipe != "recommended":
        return
    for k, v in RECOMMENDED.items():
        if not given(args, k):
            setattr(args, k, v)


def _take(x: list[str], y: np.ndarray, n: int | None) -> tuple[list[str], np.ndarray]:
    """A seeded random subset of ``n`` (the official order is sorted by label)."""
    if not n:
        return list(x), y
    idx = np.random.default_rng(0).permutation(len(x))[:n]
    return [x[i] for i in idx], y[idx]


def _load(data_dir: str | None, limit: int | None):
    (xtr, ytr), (xte, yte) = load_imdb(data_dir, format="raw")
    return _take(xtr, ytr, limit), _take(xte, yte, limit)


def train(args: argparse.Namespace) -> int:
    _apply_recipe(args)
    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if not 0 < args.validation_split < 1:
        raise UserError(f"--validation-split must be in (0, 1), got {args.validation_split}")
    spec = classifier_spec(args)
    out = Path(args.out or args.out_default)
    say = (lambda *a: None) if args.json and args.quiet else print

    t0 = time.perf_counter()
    (train_texts, train_y), (test_texts, test_y) = _load(args.data_dir, args.limit)
    (tr_texts, tr_y), (va_texts, va_y) = train_val_split(
        train_texts, train_y, validation_split=args.validation_split, seed=args.seed)
    seed_everything(args.seed)  # the initial weights too, so a run is reproducible
    clf = TextClassifier.create(spec, tr_texts, LABELS, padding=args.padding,
                                truncating=args.truncating, task="imdb")
    enc = clf.encoder
    x_tr, x_va, x_te = clf.train_ids, enc.encode(va_texts), enc.encode(test_texts)
    say(f"IMDB: {len(tr_texts)} train / {len(va_texts)} validation / {len(test_texts)} test "
        f"reviews, loaded and encoded in {time.perf_counter() - t0:.1f} s")
    say("review length " + format_length_stats(length_stats(enc.lengths(tr_texts))) +
        f" -> maxlen {spec.maxlen}")

    history = clf.fit(x_tr, tr_y, validation_data=(x_va, va_y), optimizer=args.optimizer,
                      lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                      patience=args.patience, seed=args.seed, out=out, backup=args.backup,
                      clip_norm=args.clip_norm, verbose=0 if args.quiet else 1)
    clf.save(out)  # the restored best weights (identical to the best checkpoint)
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    test = clf.evaluate_ids(x_te, test_y)
    val_acc = history.history.get("val_accuracy", [float("nan")])
    result = {"test_accuracy": round(test["accuracy"], 4), "test_loss": round(test["loss"], 4),
              "best_val_accuracy": round(max(val_acc), 4), "epochs": len(history.epoch),
              "train_seconds": round(clf.train_seconds, 1), "model_dir": args.final_out}
    say(f"test accuracy {result['test_accuracy']:.4f} (best validation accuracy "
        f"{result['best_val_accuracy']:.4f}) after {result['epochs']} epochs in "
        f"{result['train_seconds']:.1f} s; model saved to {args.final_out}")
    if args.json:
        print_json(result)
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    clf = TextClassifier.load(args.model_dir)
    (_, _), (test_texts, test_y) = _load(args.data_dir, None)
    res = clf.evaluate_ids(clf.encoder.encode(test_texts), test_y, batch_size=args.batch_size)
    res = {k: round(float(v), 4) for k, v in res.items()}
    if args.json:
        print_json({"test_accuracy": res["accuracy"], "test_loss": res["loss"],
                    "samples": len(test_texts), "model_dir": args.model_dir})
    else:
        print(f"test accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f} on "
              f"{len(test_texts)} reviews")
    return 0
