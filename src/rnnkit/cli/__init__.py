"""The ``rnnkit`` command: a thin layer over the library.

Each task lives in its own module ``rnnkit.cli.<task>`` exposing ``register(sub, train_sub)``:
it adds ``rnnkit train <task>`` and any task commands of its own, and records in ``TASKS``
how ``evaluate``/``predict`` handle a model directory saved by that task.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from .common import add_model_args, apply_config_file, classifier_spec

#: task modules, in the order their commands appear in ``--help``
TASK_MODULES = ["imdb", "text", "tagger", "forecast", "seq2seq", "lm", "siamese"]

#: task name -> {"evaluate": fn(args), "predict": fn(args)}; filled by ``register``
TASKS: dict[str, dict[str, Callable[[argparse.Namespace], int | None]]] = {}


def model_task(model_dir: str) -> str:
    """The task a saved model directory belongs to (from its ``config.json``)."""
    cfg = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise UserError(f"model directory not found: {model_dir}")
    if not cfg.is_file():
        raise UserError(f"{model_dir} is not an rnnkit model directory (no config.json)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))["task"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg}: not a valid rnnkit config ({e})") from None


def _dispatch(verb: str) -> Callable[[argparse.Namespace], int | None]:
    def run(args: argparse.Namespace) -> int | None:
        task = model_task(args.model_dir)
        if task not in TASKS or verb not in TASKS[task]:
            raise UserError(f"'{verb}' is not available for a model of task {task!r}")
        return TASKS[task][verb](args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks: "
                                     "train, evaluate, predict, summarise.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a model for a task")
    train_sub = train.add_subparsers(dest="task", required=True, metavar="TASK")

    ev = sub.add_parser("evaluate", help="evaluate a saved model on its task's test data")
    ev.add_argument("model_dir")
    ev.add_argument("--data-dir", help="directory holding the data files")
    ev.add_argument("--file", help="labelled data file to evaluate on (text tasks)")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--json", action="store_true", help="print one JSON object last")
    ev.set_defaults(func=_dispatch("evaluate"))

    pr = sub.add_parser("predict", help="predict labels for raw texts with a saved model")
    pr.add_argument("model_dir")
    pr.add_argument("texts", nargs="*", help="texts to classify (else --file or stdin)")
    pr.add_argument("--file", help="a UTF-8 file with one text per line")
    pr.add_argument("--json", action="store_true", help="print one JSON object last")
    pr.set_defaults(func=_dispatch("predict"))

    sm = sub.add_parser("summary", help="layers, output shapes and exact parameter counts of "
                        "a saved model, or of a text classifier given by flags")
    sm.add_argument("model_dir", nargs="?")
    add_model_args(sm)
    sm.add_argument("--classes", type=int, default=2)
    sm.set_defaults(func=summary_cmd)

    for name in TASK_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub, train_sub)
    return parser


def summary_cmd(args: argparse.Namespace) -> int:
    """Summary of a saved model, or of an untrained text classifier given by flags."""
    from ..summary import summary
    if args.model_dir:
        from ..io import load_model
        model, _ = load_model(args.model_dir)
    else:
        from ..tasks.classify import build_model
        model = build_model(classifier_spec(args), args.classes)
    print(summary(model))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        apply_config_file(parser, argv)
        args = parser.parse_args(argv)
        args.argv = argv
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
