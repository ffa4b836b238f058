"""Flags and helpers shared by the CLI's task modules (one definition, used everywhere)."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import select
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator
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
    g.add_argument("--maxlen", type=int, default=d["maxlen"],
                   help="pad/truncate to this length" + (
                       " (default: the 90th percentile of the training texts' lengths, "
                       "within [8, 256])" if d["maxlen"] is None else ""))
    g.add_argument("--padding", choices=["pre", "post"], default="pre")
    g.add_argument("--truncating", choices=["pre", "post"], default="pre")


def classifier_spec(args: argparse.Namespace):
    """The :class:`~rnnkit.tasks.classify.ClassifierSpec` given by :func:`add_model_args` flags."""
    from ..tasks.classify import ClassifierSpec

    return ClassifierSpec(cell=args.cell, encoding=args.encoding, num_words=args.num_words,
                          embed_dim=args.embed_dim, units=args.units, layers=args.layers,
                          bidirectional=args.bidirectional, dropout=args.dropout,
                          recurrent_dropout=args.recurrent_dropout, mask=args.mask,
                          maxlen=args.maxlen if args.maxlen is not None else 100)


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
    add_resume_arg(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print one JSON object last")


def given(args: argparse.Namespace, name: str) -> bool:
    """Whether the flag of ``name`` (``"lookback"`` -> ``--lookback``) was typed on the
    command line, as opposed to left at its default."""
    flag = f"--{name.replace('_', '-')}"
    return any(a == flag or a.startswith(flag + "=") for a in args.argv)


def add_resume_arg(g: argparse._ArgumentGroup) -> None:
    """``--resume``: continue the interrupted run of ``--out`` (see :mod:`rnnkit.rundir`)."""
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted training run of --out from its last "
                        "finished epoch (same flags required)")


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
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid TOML (nested too deeply)") from None
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
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
    """Set the TOML values as defaults of every (sub)parser that has the flag, after checking
    each key exists and each value has the flag's type (a TOML value bypasses argparse's
    ``type``, so it is checked here) and lies in its choices."""
    actions: dict[str, list[argparse.Action]] = {}
    _collect_actions(parser, actions)
    for key, value in defaults.items():
        if key not in actions or key in ("config", "help"):
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f" (did you mean {close[0].replace('_', '-')!r}?)" if close else ""
            raise UserError(f"{path}: unknown key {key.replace('_', '-')!r}{hint}")
        for action in actions[key]:
            _check_toml_value(action, key, value, path)
    _apply_defaults(parser, defaults)


def _collect_actions(parser: argparse.ArgumentParser, out: dict[str, list[argparse.Action]]
                     ) -> None:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _collect_actions(sub, out)
        elif action.dest not in ("help",) and action.option_strings:
            out.setdefault(action.dest, []).append(action)


def _apply_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    known = set()
    for action in parser._actions:  # noqa: SLF001
        known.add(action.dest)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _apply_defaults(sub, defaults)
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in known})


def _check_toml_value(action: argparse.Action, key: str, value: Any, path: Path) -> None:
    flag = key.replace("_", "-")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # noqa: SLF001
        ok, want = isinstance(value, bool), "true or false"
    elif action.type is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok, want = ok and math.isfinite(value), "a finite number"
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise UserError(f"{path}: {flag} must be {want}, got {value!r:.60}")
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{path}: {flag} must be one of {sorted(action.choices)}, "
                        f"got {value!r:.60}")


#: the range every numeric flag must lie in: dest -> (low, high, low is excluded); checked
#: for every command after parsing (so TOML values too), before any work starts
FLAG_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "units": (1, 4096, False), "embed_dim": (1, 4096, False), "out_dim": (1, 4096, False),
    "layers": (1, 16, False), "epochs": (1, 100_000, False), "batch_size": (1, 65_536, False),
    "num_words": (4, 2**24, False), "subword_vocab": (8, 2**20, False),
    "maxlen": (1, 100_000, False), "max_len": (1, 100_000, False),
    "max_source_len": (1, 10_000, False), "max_target_len": (1, 10_000, False),
    "max_pairs": (1, 2**31, False), "max_chars": (1, 2**40, False),
    "batches_per_epoch": (1, 2**31, False), "limit": (1, 2**31, False),
    "min_count": (1, 2**31, False), "max_repeat": (0, 2**31, False),
    "patience": (0, 100_000, False), "seq_len": (1, 100_000, False),
    "lookback": (1, 100_000, False), "horizon": (1, 10_000, False),
    "stride": (1, 100_000, False), "step": (1, 100_000, False), "length": (1, 100_000, False),
    "beam_width": (1, 64, False), "source_col": (1, 1000, False), "target_col": (1, 1000, False),
    "samples": (1, 10_000, False),
    "char_filters": (0, 4096, False), "top_k": (1, 2**24, False), "classes": (2, 2**16, False),
    "seed": (0, 2**63 - 1, False), "lr": (0, 1e6, True), "clip_norm": (0, 1e12, True),
    "dropout": (0, 1, False), "recurrent_dropout": (0, 1, False),
    "validation_split": (0, 1, False), "validation_fraction": (0, 1, False),
    "val_fraction": (0, 1, False), "test_fraction": (0, 1, False),
    "margin": (0, 1e6, False), "temperature": (0, 1e6, False),
}
#: rates must stay below 1 (a split of 1 leaves nothing to train on)
_BELOW_ONE = {"dropout", "recurrent_dropout", "validation_split", "validation_fraction",
              "val_fraction", "test_fraction"}


def check_flag_bounds(args: argparse.Namespace) -> None:
    """UserError naming the first numeric flag that is non-finite or out of its range."""
    for dest, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = "--" + dest.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if dest not in FLAG_BOUNDS:
            continue
        lo, hi, open_lo = FLAG_BOUNDS[dest]
        top_open = dest in _BELOW_ONE
        if value < lo or (open_lo and value == lo) or value > hi or (top_open and value == hi):
            if hi >= 2**31:
                rng = f"{'>' if open_lo else '>='} {lo:g}"
            else:
                rng = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if top_open else ']'}"
            raise UserError(f"{flag} must be {rng}, got {value}")


def print_json(obj: Any) -> None:
    """The machine-readable last line of a ``--json`` command (always valid JSON: a
    non-finite number is written as null)."""
    from ..io import json_safe

    print(json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False), flush=True)


def check_positive(**values: float) -> None:
    """UserError naming the first flag that is not positive."""
    for name, v in values.items():
        if v is None or v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")


def read_model_json(model_dir: str, name: str) -> dict[str, Any]:
    """``model_dir/name`` as a dict ({} when absent); UserError when it is corrupt."""
    from ..io import read_json

    path = Path(model_dir) / name
    if not path.is_file():
        return {}
    d = read_json(path, name)
    return d if isinstance(d, dict) else {}


#: lines per batch when predicting a stream of texts
STREAM_BATCH = 256


def text_batches(texts: Iterable[str], file: str | None, size: int = STREAM_BATCH
                 ) -> Iterator[list[tuple[int, str]]]:
    """``(index, text)`` batches of at most ``size``: the arguments, else the lines of
    ``file``, else the lines of standard input, read as a stream (memory stays flat in the
    number of lines; on stdin a batch is answered as soon as no more input is waiting, so an
    interactive user gets each answer as the line arrives). Every line keeps its index, blank
    lines included (the caller answers them as empty). Empty arguments, a missing or
    non-UTF-8 file and an input without any line are UserErrors."""
    texts = list(texts)
    if texts:
        for i, t in enumerate(texts, 1):
            if not t.strip():
                raise UserError(f"text {i} is empty")
        for k in range(0, len(texts), size):
            yield list(enumerate(texts[k:k + size], k))
        return
    if file:
        p = Path(file)
        if not p.is_file():
            raise UserError(f"file not found: {file}")
        with open(p, "rb") as f:
            yield from _line_batches(iter(f), str(file), size, lambda: True)
        return
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError("no text given: pass texts as arguments, --file FILE, or stdin")
    fd = sys.stdin.fileno()
    yield from _line_batches(_fd_lines(fd), "standard input", size,
                             lambda: bool(select.select([fd], [], [], 0)[0]))


def _fd_lines(fd: int) -> Iterator[bytes]:
    """Lines of a file descriptor as they arrive (no read-ahead past what is available)."""
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if buf:
        yield buf


def _line_batches(lines: Iterator[bytes], where: str, size: int, more_waiting
                  ) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    i = -1
    for i, raw in enumerate(lines):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: line {i + 1} is not UTF-8 text (byte {e.start})") from None
        batch.append((i, text))
        if len(batch) >= size or not more_waiting():
            yield batch
            batch = []
    if batch:
        yield batch
    if i < 0:
        raise UserError(f"{where}: no text given")


def answer_lines(texts: Iterable[str], file: str | None,
                 answer: Callable[[list[str]], list[Any]]) -> Iterator[tuple[int, str, Any]]:
    """``(index, text, answer)`` for every input line of :func:`text_batches`, in order.
    ``answer`` is called once per batch with the batch's non-blank texts and returns one
    answer each (None where it has none); a blank line's answer is None. Standard output
    is flushed after each batch, so a streamed line is answered before more is read."""
    for batch in text_batches(texts, file):
        kept = [(i, t) for i, t in batch if t.strip()]
        got = dict(zip([i for i, _ in kept], answer([t for _, t in kept]) if kept else [],
                       strict=True))
        for i, text in batch:
            yield i, text, got.get(i)
        sys.stdout.flush()


def predict_texts_cmd(args: argparse.Namespace) -> int:
    """``rnnkit predict`` for text classifiers: one answer per input line, streamed.

    Plain: ``label<TAB>probability<TAB>text``. ``--json``: JSON Lines, one object per input
    line ``{index, label, probability, probabilities}`` (a blank line gets
    ``{index, label: null, error: "empty text"}``), so outputs never shift against inputs."""
    from ..tasks.classify import TextClassifier

    clf = TextClassifier.load(args.model_dir)
    for i, text, p in answer_lines(args.texts, args.file, clf.predict):
        if args.json:
            print_json({"index": i, **p} if p is not None else
                       {"index": i, "label": None, "probability": None, "error": "empty text"})
        elif p is None:
            print("\t\t(empty line)")
        else:
            short = text if len(text) <= 60 else text[:57] + "..."
            print(f"{p['label']}\t{p['probability']:.3f}\t{short}")
    return 0
