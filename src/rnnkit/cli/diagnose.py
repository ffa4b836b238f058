"""``rnnkit diagnose``: see vanishing and exploding gradients.

    rnnkit diagnose --demo [--out DIR]             # the adding problem, four cells, a plot
    rnnkit diagnose MODEL --file DATA [--out DIR]  # one batch of your data, your model

For a saved model and the first ``--samples`` rows of a labelled file, prints per recurrent
layer the norm of the loss gradient reaching the first and the last step
(``||dL/dh_t||``, and ``||dL/dc_t||`` for an LSTM), the most saturated activation and the
largest weight gradient, with a warning when the first step gets under 1e-6 of the last
step's gradient (vanishing) or a weight gradient exceeds 1e3 (exploding: try
``--clip-norm``); writes ``gradients.png`` (per-step norms on a log scale, one curve per
layer) and ``diagnose.json`` into ``--out``. The figures come from autograd on the
reference loop, whatever kernel trains the model. Every task: text, imdb, tagger, seq2seq,
lm, siamese (the in-batch softmax loss over the file's similar pairs), series, forecast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diagnostics import Report, gradient_report, warnings_for
from ..errors import UserError
from ..io import atomic_path, atomic_write_json, read_config
from .common import print_json, read_model_json

Batch = tuple[nn.Module, tuple[Any, ...], Tensor, Callable[[Tensor, Tensor], Tensor]]


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="per-step gradient norms: vanishing / exploding",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", nargs="?", help="a saved model (omit with --demo)")
    p.add_argument("--file", help="labelled data in the model's training format")
    p.add_argument("--samples", type=int, default=64, help="rows of --file in the batch")
    p.add_argument("--demo", action="store_true",
                   help="train SimpleRNN (tanh, relu), LSTM and GRU briefly on the adding "
                        "problem at lengths 50 and 200 and plot their gradients")
    p.add_argument("--out", default=None,
                   help="directory for gradients.png and diagnose.json (default: "
                        "diagnose-demo with --demo, else MODEL/diagnose)")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.set_defaults(func=diagnose)


def diagnose(args: argparse.Namespace) -> int:
    if args.demo:
        if args.model_dir or args.file:
            raise UserError("--demo takes no model directory or --file")
        return _demo(args)
    if not args.model_dir or not args.file:
        raise UserError("pass a model directory and --file DATA, or --demo")
    if not 1 <= args.samples <= 10_000:
        raise UserError(f"--samples must be in [1, 10000], got {args.samples}")
    task = read_config(args.model_dir)["task"]
    if task not in BATCHES:
        raise UserError(f"diagnose supports models of the tasks {', '.join(sorted(BATCHES))}; "
                        f"this one is {task!r}")
    out = Path(args.out) if args.out else Path(args.model_dir) / "diagnose"
    model, inputs, target, loss = BATCHES[task](args)
    rep = gradient_report(model, inputs, target, loss)
    out.mkdir(parents=True, exist_ok=True)
    plot_report(rep, out / "gradients.png", f"{Path(args.model_dir).name} on "
                f"{len(target)} rows of {Path(args.file).name}")
    atomic_write_json(out / "diagnose.json", rep.to_dict())
    warns = warnings_for(rep)
    for w in warns:
        print(f"rnnkit: warning: {w}", file=sys.stderr)
    if args.json:
        print_json({**rep.to_dict(), "warnings": warns, "out": str(out)})
    else:
        print(rep.summary())
        print(f"plot: {out / 'gradients.png'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..tasks.adding import run_demo

    out = Path(args.out or "diagnose-demo")
    say = (lambda *a: None) if args.json else print
    res = run_demo(out, say=say)
    if args.json:
        print_json({"lengths": {k: {n: {"accuracy": r["accuracy"],
                                        "ratio_first_last": r["ratio_first_last"]}
                                    for n, r in v.items()} for k, v in res["lengths"].items()},
                    "out": str(out)})
    else:
        print(f"plot: {out / 'gradients.png'}, figures: {out / 'diagnose.json'}")
    return 0


def plot_report(rep: Report, path: Path, title: str) -> None:
    """``||dL/dh_t||`` (and ``||dL/dc_t||``) over the steps of every layer, log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for r in rep.layers:
        ax.semilogy(range(1, len(r.h) + 1), [v if v > 0 else float("nan") for v in r.h],
                    label=f"{r.name} ({r.cell}) h")
        if r.c is not None:
            ax.semilogy(range(1, len(r.c) + 1), [v if v > 0 else float("nan") for v in r.c],
                        ls="--", label=f"{r.name} c")
    ax.set_title(f"gradient reaching each step: {title}", fontsize=9)
    ax.set_xlabel("step (processing order)")
    ax.set_ylabel("||dL/dh_t||")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- one batch of a saved model's task --------------------------------------------------------
def _probability_loss(binary: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """The classifiers output probabilities: binary cross-entropy, or the negative
    log-likelihood of the softmax probabilities."""
    if binary:
        return lambda p, y: F.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), y)
    return lambda p, y: F.nll_loss(torch.log(p.clamp_min(1e-7)), y)


def _text_batch(args: argparse.Namespace) -> Batch:
    from ..tasks.classify import TextClassifier
    from ..tasks.textfile import encode_labels, read_labelled

    clf = TextClassifier.load(args.model_dir)
    d = read_model_json(args.model_dir, "data.json") if (
        Path(args.model_dir) / "data.json").is_file() else {}

    def setting(key: str, default: str | None = None) -> str | None:
        v = d.get(key, default)
        return v if isinstance(v, str) else default

    data = read_labelled(args.file, setting("text_col"), setting("label_col"),
                         setting("format", "auto") or "auto")
    texts, labels = data.texts[:args.samples], data.labels[:args.samples]
    y = clf.targets(encode_labels(labels, clf.labels))
    return clf.model, (clf.encoder.encode(texts),), y, _probability_loss(clf.binary)


def _series_batch(args: argparse.Namespace) -> Batch:
    from ..tasks.forecast import pad_series
    from ..tasks.series import SeriesClassifier, read_series_file

    clf = SeriesClassifier.load(args.model_dir)
    data = read_series_file(args.file)
    y = clf.targets(data)[:args.samples]  # a UserError when the file has no labels
    data.series = data.series[:args.samples]
    x, lengths = pad_series(data.series)
    return clf.model, (x, lengths), y, lambda o, t: F.cross_entropy(o, t)


def _forecast_batch(args: argparse.Namespace) -> Batch:
    from ..tasks.forecast import Forecaster, pinball_loss, read_series_csv

    fc, _ = Forecaster.load(args.model_dir)
    d = read_model_json(args.model_dir, "data.json")
    date_col = d.get("date_col", "auto")
    series = read_series_csv(args.file, date_col if isinstance(date_col, str) else None,
                             fc.columns)
    x, y = fc.windows(series.values)
    if len(x) == 0:
        raise UserError(f"{args.file}: shorter than lookback + horizon")
    x, y = x[:args.samples], y[:args.samples]
    qs = fc.spec.quantiles
    if qs:
        return fc.model, (x,), y, lambda o, t: pinball_loss(o, t, qs)
    return fc.model, (x,), y, lambda o, t: ((o - t) ** 2).mean()


def _tagger_batch(args: argparse.Namespace) -> Batch:
    from ..tasks.tagging import Tagger, masked_cross_entropy, read_tagged

    tagger = Tagger.load(args.model_dir)
    d = read_model_json(args.model_dir, "data.json")
    fmt, col = d.get("format", "auto"), d.get("tag_column")
    if fmt not in ("auto", "conllu", "conll", "tsv") or not isinstance(col, (str, int, type(None))):
        raise UserError(f"{args.model_dir}/data.json: corrupt data settings")
    x, y = tagger.encode(read_tagged(args.file, fmt, col)[:args.samples])
    inputs = x if isinstance(x, tuple) else (x,)
    return tagger.model, inputs, y, masked_cross_entropy


def _seq2seq_batch(args: argparse.Namespace) -> Batch:
    from ..tasks._seqtools import token_cross_entropy
    from ..tasks.seq2seq import Translator, read_pairs
    from .seq2seq import saved_columns

    tr = Translator.load(args.model_dir)
    pairs = read_pairs(args.file, args.samples, *saved_columns(args.model_dir))
    tgt_in, tgt_out = tr.target_ids([t for _, t in pairs])
    return tr.model, (tr.source_ids([s for s, _ in pairs]), tgt_in), tgt_out, \
        token_cross_entropy


def _lm_batch(args: argparse.Namespace) -> Batch:
    from ..tasks._seqtools import token_cross_entropy
    from ..tasks.generate import TextLM, read_text
    from ..text import START

    lm = TextLM.load(args.model_dir)
    ids = [START, *lm.ids(read_text(args.file))]
    n = min(args.samples, (len(ids) - 1) // lm.seq_len)
    if n < 1:
        raise UserError(f"{args.file}: shorter than one sequence of {lm.seq_len} tokens")
    seq = torch.tensor(ids[:n * lm.seq_len + 1])
    x, y = seq[:-1].reshape(n, lm.seq_len), seq[1:].reshape(n, lm.seq_len)
    return lm.model, (x,), y, token_cross_entropy


def _siamese_batch(args: argparse.Namespace) -> Batch:
    from ..tasks.siamese import InBatchSimilarity, Matcher, read_pairs, softmax_loss

    m = Matcher.load(args.model_dir)
    pairs, labels = read_pairs(args.file)
    pos = [p for i, p in enumerate(pairs) if labels is None or labels[i] == 1][:args.samples]
    if len(pos) < 2:
        raise UserError(f"{args.file}: need at least 2 similar pairs (label 1)")
    # the in-batch softmax loss: each first text against every second text of the batch
    return (InBatchSimilarity(m.model), (m.ids([a for a, _ in pos]), m.ids([b for _, b in pos])),
            torch.arange(len(pos)), lambda s, _: softmax_loss(s))


BATCHES: dict[str, Callable[[argparse.Namespace], Batch]] = {
    "text": _text_batch, "imdb": _text_batch, "series": _series_batch,
    "forecast": _forecast_batch, "tagger": _tagger_batch, "seq2seq": _seq2seq_batch,
    "lm": _lm_batch, "siamese": _siamese_batch,
}
