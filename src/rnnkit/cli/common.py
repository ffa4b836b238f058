"""Flags and helpers shared by the CLI's task modules (one definition, used everywhere)."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError


def add_model_args(p: argparse.ArgumentParser, **defaults: Any) -> None:
    """Model-shape flags of a recurrent text classifier (defaults: the seed's IMDB recipe)."""
    d = {"cell": "simple", "encoding": "embedding", "units": 8, "layers": 1, "embed_dim": 16,
         "dropout": 0.0, "recurrent_dropout": 0.0, "num_words": 500, "maxlen": 100, **defaults}
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["simple", "lstm", "gru"], default=d["cell"])
    g.add_argument("--encoding", choices=["onehot", "embedding"], default=d["encoding"])
    g.add_argument("--units", type=int, default=d["units"])
    g.add_argument("--layers", type=int, default=d["layers"], help="stacked recurrent layers")
    g.add_argument("--embed-dim", type=int, default=d["embed_dim"])
    g.add_argument("--bidirectional", action="store_true")
    g.add_argument("--mask", action="store_true", help="mask padding (id 0) in the recurrence")
    g.add_argument("--dropout", type=float, default=d["dropout"])
    g.add_argument("--recurrent-dropout", type=float, default=d["recurrent_dropout"])
    g.add_argument("--num-words", type=int, default=d["num_words"],
                   help="vocabulary size including the ids 0 (pad), 1 (start), 2 (unknown)")
    g.add_argument("--maxlen", type=int, default=d["maxlen"], help="pad/truncate to this length")
    g.add_argument("--padding", choices=["pre", "post"], default="pre")
    g.add_argument("--truncating", choices=["pre", "post"], default="pre")


def classifier_spec(args: argparse.Namespace):
    """The :class:`~rnnkit.tasks.classify.ClassifierSpec` given by :func:`add_model_args` flags."""
    from ..tasks.classify import ClassifierSpec

    return ClassifierSpec(cell=args.cell, encoding=args.encoding, num_words=args.num_words,
                          embed_dim=args.embed_dim, units=args.units, layers=args.layers,
                          bidirectional=args.bidirectional, dropout=args.dropout,
                          recurrent_dropout=args.recurrent_dropout, mask=args.mask,
                          maxlen=args.maxlen)


def add_training_args(p: argparse.ArgumentParser, **defaults: Any) -> None:
    """Optimisation flags (defaults: the seed's recipe: RMSprop 1e-4, batch 64, patience 3)."""
    d = {"optimizer": "rmsprop", "lr": 1e-4, "batch_size": 64, "epochs": 100, "patience": 3,
         "validation_split": 0.2, **defaults}
    g = p.add_argument_group("training")
    g.add_argument("--optimizer", choices=["rmsprop", "adam", "sgd"], default=d["optimizer"])
    g.add_argument("--lr", type=float, default=d["lr"])
    g.add_argument("--batch-size", type=int, default=d["batch_size"])
    g.add_argument("--epochs", type=int, default=d["epochs"])
    g.add_argument("--patience", type=int, default=d["patience"],
                   help="early-stopping patience on validation loss (0 = off)")
    g.add_argument("--validation-split", type=float, default=d["validation_split"])
    g.add_argument("--clip-norm", type=float, default=None)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--out", default=None, help="model directory to write")
    g.add_argument("--config", default=None, help="TOML file whose keys replace flag defaults")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print one JSON object last")


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Let ``--config file.toml`` set defaults (flags on the command line still win).

    Keys are flag names with ``-`` or ``_`` (``batch-size = 32``), optionally under a table
    named after the command (``[train]``)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    path = Path(known.config)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({str(e).splitlines()[0]})") from None
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    defaults = {k.replace("-", "_"): v for k, v in flat.items()}
    _set_defaults_everywhere(parser, defaults, path)


def _set_defaults_everywhere(parser: argparse.ArgumentParser, defaults: dict[str, Any],
                             path: Path) -> None:
    known = set()
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        known.add(action.dest)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _set_defaults_everywhere(sub, defaults, path)
                known.update(a.dest for a in sub._actions)  # noqa: SLF001
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in known})


def read_texts(texts: Iterable[str], file: str | None) -> list[str]:
    """Texts from arguments, else from ``file`` (one per line), else from standard input.

    Raises UserError for a missing or non-UTF-8 file and for empty texts."""
    texts = list(texts)
    if not texts and file:
        p = Path(file)
        if not p.is_file():
            raise UserError(f"file not found: {file}")
        try:
            texts = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise UserError(f"{file}: not UTF-8 text (byte {e.start})") from None
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise UserError(f"{file}: no text in the file")
    elif not texts:
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("no text given: pass texts as arguments, --file FILE, or stdin")
        try:
            data = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"standard input: not UTF-8 text (byte {e.start})") from None
        texts = [t for t in data.splitlines() if t.strip()]
        if not texts:
            raise UserError("standard input: no text given")
    for i, t in enumerate(texts, 1):
        if not t.strip():
            raise UserError(f"text {i} is empty")
    return texts


def print_json(obj: Any) -> None:
    """The machine-readable last line of a ``--json`` command."""
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def check_positive(**values: float) -> None:
    """UserError naming the first flag that is not positive."""
    for name, v in values.items():
        if v is None or v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")


def read_model_json(model_dir: str, name: str) -> dict[str, Any]:
    """``model_dir/name`` as a dict ({} when absent); UserError when it is corrupt."""
    path = Path(model_dir) / name
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: corrupt JSON") from None
    return d if isinstance(d, dict) else {}


def predict_texts_cmd(args: argparse.Namespace) -> int:
    """``rnnkit predict`` for text classifiers: label and probability per text.

    ``--json``: a list of ``{label, probability, probabilities}`` (all class probabilities)."""
    from ..tasks.classify import TextClassifier

    clf = TextClassifier.load(args.model_dir)
    texts = read_texts(args.texts, args.file)
    preds = clf.predict(texts)
    if args.json:
        print_json(preds)
    else:
        for text, p in zip(texts, preds, strict=True):
            short = text if len(text) <= 60 else text[:57] + "..."
            print(f"{p['label']}\t{p['probability']:.3f}\t{short}")
    return 0
