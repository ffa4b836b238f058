"""``rnnkit train series`` / ``rnnkit classify``: time-series classification.

    rnnkit train series --train X_TRAIN.ts --test X_TEST.ts --out DIR
    rnnkit classify DIR --file new.ts            # one label per series
    rnnkit evaluate DIR --file X_TEST.ts          # accuracy, macro F1, confusion, 1-NN

Files: the UCR/UEA ``.ts`` format (uni- or multivariate, equal or variable length; missing
values inside a series are filled by linear interpolation, and stderr says how many) or CSV
(one row per series with a ``label`` column, or long format with ``id`` and ``label``
columns). The model is an LSTM beside a fully convolutional branch (LSTM-FCN) over
standardised, masked series; the report sets it beside the 1-nearest-neighbour Euclidean
baseline on the same split. Defaults: LSTM(8), 64/128/64 filters, Adam 1e-3 with a cosine
decay over 500 epochs, batch 16.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..metrics import format_classification_report
from ..plots import plot_history
from ..tasks.series import SeriesClassifier, SeriesSet, SeriesSpec, read_series_file
from ..train import seed_everything
from .common import add_resume_arg, print_json


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("series", help="time-series classification (.ts or CSV)",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--train", required=True, help="labelled training series (.ts or CSV)")
    d.add_argument("--test", help="labelled test series, reported after training")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    m.add_argument("--units", type=int, default=8, help="recurrent units")
    m.add_argument("--bidirectional", action="store_true")
    m.add_argument("--no-conv", dest="conv", action="store_false",
                   help="no convolutional branch (a plain masked RNN)")
    m.add_argument("--filters", type=int, default=64,
                   help="filters of the convolutional branch: F, 2F, F")
    m.add_argument("--dropout", type=float, default=0.5, help="on the RNN's last state")
    m.add_argument("--normalize", choices=["channel", "series"], default="channel",
                   help="standardise each channel over the training set (default) or "
                        "each series on its own")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=500,
                   help="epochs (the learning rate decays over them on a cosine)")
    t.add_argument("--batch-size", type=int, default=16, help="series per batch")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate at the start")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--out", default=None, help="model directory (default: models/series)")
    t.add_argument("--config", default=None, help="TOML file whose keys replace flag defaults")
    add_resume_arg(t)
    t.add_argument("--quiet", action="store_true", help="no progress on stderr")
    t.add_argument("--json", action="store_true", help="print one JSON object last")
    p.set_defaults(func=train, out_default="models/series")

    c = sub.add_parser("classify", help="label series with a saved series classifier")
    c.add_argument("model_dir")
    c.add_argument("--file", required=True, help="series (.ts or CSV; labels not needed)")
    c.add_argument("--json", action="store_true", help="JSON Lines, one object per series")
    c.set_defaults(func=classify_cmd)

    from . import TASKS
    TASKS["series"] = {"evaluate": evaluate_cmd, "predict": classify_cmd}


def _summary(name: str, r: dict[str, Any]) -> str:
    line = f"{name}: accuracy {r['accuracy']:.4f}, macro F1 {r['macro']['f1']:.4f}"
    if "baseline_1nn_accuracy" in r:
        line += f" (1-NN Euclidean baseline {r['baseline_1nn_accuracy']:.4f})"
    return line


def _read(path: str, labelled: bool = True) -> SeriesSet:
    """:func:`read_series_file`, saying on stderr how many missing values it interpolated."""
    data = read_series_file(path, labelled)
    if data.filled:
        print(f"rnnkit: note: {path}: {data.filled} missing value(s) inside "
              f"{data.filled_series} series filled by linear interpolation", file=sys.stderr)
    return data


def train(args: argparse.Namespace) -> int:
    spec = SeriesSpec(cell=args.cell, units=args.units, bidirectional=args.bidirectional,
                      conv=args.conv, filters=args.filters, dropout=args.dropout,
                      normalize=args.normalize)
    say = (lambda *a: None) if args.json and args.quiet else print
    train_set = _read(args.train)
    test_set = _read(args.test) if args.test else None
    lengths = [len(s) for s in train_set.series]
    say(f"series: {len(train_set)} train{f' / {len(test_set)} test' if test_set else ''} "
        f"series, {train_set.channels} channel(s), length {min(lengths)}-{max(lengths)}")
    seed_everything(args.seed)  # the initial weights too, so a run is reproducible
    clf = SeriesClassifier.create(spec, train_set)
    if test_set is not None:
        clf.targets(test_set)  # unknown labels and channel mismatches fail before training
        clf._check_channels(test_set)  # noqa: SLF001 - same module family
    history = clf.fit(train_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, verbose=0 if args.quiet else 1, backup=args.backup)
    clf.save(args.out)
    history.save(f"{args.out}/history.json")
    plot_history(history, f"{args.out}/history.png")
    result: dict[str, Any] = {"labels": clf.labels, "epochs": len(history.epoch),
                              "train_seconds": round(clf.train_seconds, 1),
                              "model_dir": args.final_out}
    if test_set is not None:
        report = clf.evaluate(test_set, train_set)
        say(format_classification_report(report))
        say(_summary("test", report))
        result["test"] = report
    say(f"model saved to {args.final_out}")
    if args.json:
        print_json(result)
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from ..errors import UserError

    if not args.file:
        raise UserError("pass --file FILE with labelled series to evaluate on")
    clf = SeriesClassifier.load(args.model_dir)
    report = clf.evaluate(_read(args.file))
    if args.json:
        print_json({**report, "file": args.file, "model_dir": args.model_dir})
    else:
        print(format_classification_report(report))
        print(_summary("evaluated", report))
    return 0


def classify_cmd(args: argparse.Namespace) -> int:
    clf = SeriesClassifier.load(args.model_dir)
    data = _read(args.file, labelled=False)
    for i, p in enumerate(clf.predict(data)):
        if args.json:
            print_json({"index": i, **p})
        else:
            print(f"{p['label']}\t{p['probability']:.3f}")
    sys.stdout.flush()
    return 0
