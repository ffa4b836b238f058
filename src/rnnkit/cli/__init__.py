"""The ``rnnkit`` command: a thin layer over the library.

Each task lives in its own module ``rnnkit.cli.<task>`` exposing ``register(sub, train_sub)``:
it adds ``rnnkit train <task>`` and any task commands of its own, and records in ``TASKS``
how ``evaluate``/``predict`` handle a model directory saved by that task.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from .common import add_model_args, apply_config_file, check_flag_bounds, classifier_spec

#: task modules, in the order their commands appear in ``--help``
TASK_MODULES = ["imdb", "text", "tagger", "forecast", "series", "seq2seq", "lm", "siamese",
                "diagnose", "keras", "export", "serve"]

#: task name -> {"evaluate": fn(args), "predict": fn(args)}; filled by ``register``
TASKS: dict[str, dict[str, Callable[[argparse.Namespace], int | None]]] = {}


def model_task(model_dir: str) -> str:
    """The task a saved model directory belongs to (from its checked ``config.json``)."""
    from ..io import read_config

    return read_config(model_dir)["task"]


def _dispatch(verb: str) -> Callable[[argparse.Namespace], int | None]:
    def run(args: argparse.Namespace) -> int | None:
        task = model_task(args.model_dir)
        if task not in TASKS or verb not in TASKS[task]:
            raise UserError(f"'{verb}' is not available for a model of task {task!r}")
        return TASKS[task][verb](args)
    return run


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"rnnkit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnkit", description="Recurrent neural networks: "
                     "train, evaluate, predict, summarise.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a model for a task")
    train_sub = train.add_subparsers(dest="task", required=True, metavar="TASK")

    ev = sub.add_parser("evaluate", help="evaluate a saved model on its task's test data")
    ev.add_argument("model_dir")
    ev.add_argument("--data-dir", help="directory holding the data files")
    ev.add_argument("--file", help="labelled data file to evaluate on (text tasks)")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--beam-width", type=int, default=1,
                    help="seq2seq: beam width of the decoding scored by BLEU (1 = greedy)")
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
    for p in train_sub.choices.values():
        _add_run_options(p)
    _show_defaults(parser)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The flags every ``train`` command shares (applied to each ``fit`` of the run through
    :func:`rnnkit.train.training_options`)."""
    from ..callbacks import SCHEDULES

    g = p.add_argument_group("schedule, precision, logging, device (every task)")
    g.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                   help="learning rate over the epochs: constant, cosine (to lr/100), "
                        "onecycle (up over 30%% of the epochs, then down), plateau (halve "
                        "when the validation loss stalls for 2 epochs)")
    g.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of linear warm-up before the schedule")
    g.add_argument("--precision", choices=["32", "bf16"], default="32",
                   help="bf16: autocast the forward pass and loss (the fused and compiled "
                        "kernels stay float32)")
    g.add_argument("--log-dir", default=None,
                   help="write history.csv, history.png (each epoch) and TensorBoard "
                        "scalars (with the tensorboard package) here")
    g.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where fit trains (auto: CUDA when available); evaluation, "
                        "prediction and saving run on the CPU")


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every flag's default value in ``--help`` (flags whose default means "not given" --
    None, or off for a switch -- show none); descriptions stay as written."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for p in action.choices.values():
                _show_defaults(p)
            continue
        d, text = action.default, action.help or ""
        if (not action.option_strings or d is None or d is False or d is argparse.SUPPRESS
                or action.nargs == 0 or "%(default)" in text or "default" in text.lower()):
            continue
        action.help = f"{text} (default: %(default)s)" if text else "default: %(default)s"


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


#: parsed values that do not change what a training run computes
_NOT_SETTINGS = {"func", "task_func", "argv", "quiet", "json", "resume", "config", "out",
                 "out_default", "backup", "final_out"}


def _train(args: argparse.Namespace) -> int:
    """Every ``rnnkit train <task>``: the task writes its model directory into a staged
    folder, with a lock on ``--out`` and a backup after each epoch, and the folder becomes
    ``--out`` in one rename when the task returns (see :mod:`rnnkit.rundir`). When training
    diverges, the best finite checkpoint (if any) is published and the error is reported."""
    from .. import distributed

    out = Path(args.out or getattr(args, "out_default", None) or "model")
    settings = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    rank, world = distributed.init_from_env()
    settings["world_size"] = world
    try:
        if rank != 0:
            if not distributed.start_together(True):
                return 2  # rank 0 stopped before training and reports why
            return _train_other_rank(args, out)
        return _train_rank0(args, out, settings)
    finally:
        distributed.barrier()
        distributed.shutdown()


def _run_options(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    from ..train import resolve_device, training_options

    if getattr(args, "warmup_epochs", 0) < 0:
        raise UserError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    device = getattr(args, "device", "cpu")
    resolve_device(device)  # a clear error now when CUDA is asked for and absent
    return training_options(lr_schedule=getattr(args, "lr_schedule", "constant"),
                            warmup_epochs=getattr(args, "warmup_epochs", 0),
                            precision=getattr(args, "precision", "32"),
                            log_dir=getattr(args, "log_dir", None),
                            device=None if device == "cpu" else device)


def _train_other_rank(args: argparse.Namespace, out: Path) -> int:
    """A data-parallel rank other than 0 trains in step with rank 0 and writes nothing that
    stays: its model directory is a temporary one; with ``--resume`` it restores rank 0's
    backup without writing it."""
    import tempfile

    from ..backup import ReadOnlyBackup
    from ..rundir import TrainingRun

    with tempfile.TemporaryDirectory(prefix="rnnkit-rank-") as tmp:
        args.out = args.final_out = str(Path(tmp) / "model")
        args.quiet, args.json = True, False
        shared = TrainingRun(out, {}).backup_dir
        args.backup = ReadOnlyBackup(shared if getattr(args, "resume", False) else
                                     Path(tmp) / "backup")
        args.log_dir = None  # rank 0 logs
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
                _run_options(args):
            return int(args.task_func(args) or 0)


def _train_rank0(args: argparse.Namespace, out: Path, settings: dict) -> int:
    """The run that writes: staged, locked, backed up, published (see :func:`_train`).
    Whether the output directory's checks passed is sent to the other ranks
    (:func:`rnnkit.distributed.start_together`) before anyone trains."""
    from .. import distributed
    from ..backup import Backup
    from ..rundir import TrainingRun
    from ..train import TrainingDiverged

    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(TrainingRun(out, settings,
                                                  resume=getattr(args, "resume", False)))
            args.backup = Backup(run.backup_dir)
        except BaseException:
            distributed.start_together(False)
            raise
        distributed.start_together(True)
        if run.resumed_epochs:
            print(f"resuming {out} after epoch {run.resumed_epochs}", file=sys.stderr)
        args.out, args.final_out = str(run.stage), str(out)
        try:
            with _run_options(args):
                rc = int(args.task_func(args) or 0)
            _record_settings(run.stage, settings)
        except TrainingDiverged as e:
            if (run.stage / "config.json").is_file():
                run.publish()
                raise UserError(f"{e}; the best finite checkpoint was saved to {out}") from None
            raise UserError(f"{e}; no finite checkpoint, {out} was left as it was") from None
        run.publish()
    return rc


def _record_settings(model_dir: Path, settings: dict) -> None:
    """Add the run's flags to the staged ``config.json`` as ``"training"`` (every task,
    in one place), so a model directory says how it was trained. Paths are recorded by
    their file name only (``data.json`` has the data's checksum): a directory shared with
    others carries no local paths."""
    from ..io import CONFIG_FILE, atomic_write_json, json_safe, read_json

    path = model_dir / CONFIG_FILE
    if path.is_file():
        cfg = read_json(path, "model config")
        if isinstance(cfg, dict) and "training" not in cfg:
            cfg["training"] = json_safe({
                k: Path(v).name if isinstance(v, str) and ("/" in v or Path(v).exists())
                else v for k, v in settings.items()})
            atomic_write_json(path, cfg)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        apply_config_file(parser, argv)
        args = parser.parse_args(argv)
        args.argv = argv
        check_flag_bounds(args)
        if args.command == "train":
            args.task_func = args.func
            return _train(args)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rnnkit predict ... | head`: the reader left, stop quietly
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
        return 0
    except OSError as e:  # disk full, permissions, a path that vanished: not a bug
        print(f"rnnkit: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
