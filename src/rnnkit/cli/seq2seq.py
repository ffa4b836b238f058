"""``rnnkit train seq2seq`` and ``rnnkit translate``: encoder-decoder translation.

    rnnkit train seq2seq --file pairs.tsv [--attention luong|bahdanau|none] --out DIR
    rnnkit translate DIR "a sentence" [--beam-width 4]
    rnnkit evaluate DIR --file pairs.tsv      # BLEU

The pairs file is the Tatoeba/ManyThings format ``source<TAB>target[<TAB>attribution]``. A
seeded ``--validation-split`` of the pairs is held out: its loss is logged every epoch
(``--patience N`` stops early and keeps the best epoch), and BLEU (sacrebleu) on it is
reported next to the constant most-frequent-translation baseline and saved in
``metrics.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_write_json
from .common import add_resume_arg, answer_lines, check_positive, print_json


def add_seq_training_flags(p: argparse.ArgumentParser, *, out: str, epochs: int, lr: float,
                           batch_size: int) -> None:
    """Flags every train command of the sequence tasks shares."""
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    g.add_argument("--patience", type=int, default=None,
                   help="stop when the validation loss has not improved for this many epochs "
                        "and keep the best epoch's weights (needs validation data)")
    g.add_argument("--clip-norm", type=float, default=5.0)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--backend", default="auto",
                   help="recurrent kernel backend (auto, reference, lanes, blas, torch)")
    g.add_argument("--out", default=out, help=f"model directory to write (default {out})")
    add_resume_arg(g)
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    g.add_argument("--json", action="store_true", help="print one JSON object last")


def verbosity(args: argparse.Namespace) -> int:
    """``fit``'s verbose level: progress on stderr (a bar on a terminal) unless --quiet."""
    if args.patience is not None and args.patience < 1:
        raise UserError(f"--patience must be >= 1, got {args.patience}")
    return 0 if args.quiet else 1


def split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle; the first ``round(n * fraction)`` items are held out."""
    if not 0 <= fraction < 1:
        raise UserError(f"--validation-split must be in [0, 1), got {fraction}")
    idx = np.random.default_rng(seed).permutation(len(items))
    k = int(round(len(items) * fraction))
    return [items[i] for i in idx[k:]], [items[i] for i in idx[:k]]


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("seq2seq", help="encoder-decoder translation from sentence pairs",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--file", required=True, help="source<TAB>target[<TAB>attribution] file")
    d.add_argument("--source-col", type=int, default=1,
                   help="column (1-based, tab-separated) of the source sentences")
    d.add_argument("--target-col", type=int, default=2,
                   help="column of the target sentences")
    d.add_argument("--reverse", action="store_true",
                   help="swap the source and target columns (translate the other way)")
    d.add_argument("--max-pairs", type=int, default=None, help="read at most this many pairs")
    d.add_argument("--validation-split", type=float, default=0.1)
    d.add_argument("--level", choices=["subword", "word", "char"], default="subword",
                   help="subword: sentencepiece pieces per side, case kept, translations "
                        "detokenised; word: lowercased words; char: characters")
    d.add_argument("--subword-vocab", type=int, default=4000,
                   help="pieces per side's sentencepiece model (a soft limit)")
    d.add_argument("--num-words", type=int, default=None, help="cap each vocabulary")
    d.add_argument("--max-source-len", type=int, default=None)
    d.add_argument("--max-target-len", type=int, default=None)
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    m.add_argument("--attention", choices=["luong", "bahdanau", "none"], default="luong")
    m.add_argument("--units", type=int, default=128)
    m.add_argument("--embed-dim", type=int, default=64)
    m.add_argument("--dropout", type=float, default=0.2,
                   help="dropout on the embeddings and the decoder's output in training")
    m.add_argument("--beam-width", type=int, default=1, help="decoding for the reported BLEU")
    m.add_argument("--select-by", choices=["bleu", "loss"], default="bleu",
                   help="keep the epoch with the best validation BLEU (greedy, the first "
                        "1,000 validation pairs) or the lowest validation loss; --patience "
                        "counts epochs without improvement of the same")
    add_seq_training_flags(p, out="models/seq2seq", epochs=20, lr=3e-3, batch_size=32)
    p.set_defaults(func=train)

    t = sub.add_parser("translate", help="translate sentences with a saved seq2seq model")
    t.add_argument("model_dir")
    t.add_argument("texts", nargs="*", help="sentences (else --file or stdin)")
    t.add_argument("--file", help="a UTF-8 file with one sentence per line")
    t.add_argument("--beam-width", type=int, default=1, help="1 = greedy")
    t.add_argument("--json", action="store_true", help="print one JSON object last")
    t.set_defaults(func=translate_cmd)

    from . import TASKS
    TASKS["seq2seq"] = {"evaluate": evaluate_cmd, "predict": translate_cmd}


def _columns(args: argparse.Namespace) -> tuple[int, int]:
    """``(source column, target column)``, 1-based, after ``--reverse``."""
    check_positive(source_col=args.source_col, target_col=args.target_col)
    if args.source_col == args.target_col:
        raise UserError(f"--source-col and --target-col are both {args.source_col}")
    cols = (args.source_col, args.target_col)
    return cols[::-1] if args.reverse else cols


def saved_columns(model_dir: str) -> tuple[int, int]:
    """The columns a model was trained on (from its checked config), default (1, 2)."""
    from ..io import read_config

    cols = read_config(model_dir).get("columns", [1, 2])
    if (not isinstance(cols, list) or len(cols) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1000
                       for c in cols) or cols[0] == cols[1]):
        raise UserError(f"{model_dir}/config.json: 'columns' must be two different column "
                        "numbers in [1, 1000]")
    return cols[0], cols[1]


def train(args: argparse.Namespace) -> int:
    from ..tasks.seq2seq import evaluate_translator, read_pairs, train_translator

    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   units=args.units, embed_dim=args.embed_dim, beam_width=args.beam_width)
    cols = _columns(args)
    pairs = read_pairs(args.file, args.max_pairs, *cols)
    train_p, val_p = split(pairs, args.validation_split, args.seed)
    if args.patience is not None and not val_p:
        raise UserError("--patience needs a validation split (--validation-split > 0)")
    if not train_p:
        raise UserError(f"{args.file}: too few pairs to train ({len(pairs)})")
    if args.validation_split > 0 and not val_p:
        print(f"rnnkit: warning: {args.file}: {len(pairs)} pair(s) leave no validation pairs at "
              f"--validation-split {args.validation_split}: no model selection by validation "
              "BLEU, the last epoch is kept; add pairs or raise --validation-split",
              file=sys.stderr)
    tr, hist = train_translator(
        train_p, val_pairs=val_p or None, level=args.level, cell=args.cell,
        attention=None if args.attention == "none" else args.attention,
        embed_dim=args.embed_dim, units=args.units, num_words=args.num_words,
        max_source_len=args.max_source_len, max_target_len=args.max_target_len,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, clip_norm=args.clip_norm,
        seed=args.seed, backend=args.backend, patience=args.patience,
        verbose=verbosity(args), backup=args.backup, select_by=args.select_by,
        subword_vocab=args.subword_vocab, dropout=args.dropout)
    res: dict[str, Any] = {"task": "seq2seq", "model_dir": args.final_out,
                           "train_pairs": len(train_p),
                           "validation_pairs": len(val_p), "loss": hist["loss"][-1]}
    if val_p:
        ev = evaluate_translator(tr, val_p, beam_width=args.beam_width)
        res.update({"val_bleu": ev["bleu"], "val_baseline_bleu": ev["baseline_bleu"],
                    "val_exact_match": ev["exact_match"], "val_perplexity": ev["perplexity"],
                    "examples": ev["examples"]})
    tr.save(args.out, extra={"history": hist, "source_file": Path(args.file).name,
                             "columns": list(cols)})
    atomic_write_json(Path(args.out) / "metrics.json", res)
    if not args.json:
        if val_p:
            print(f"validation BLEU {res['val_bleu']:.1f} (constant baseline "
                  f"{res['val_baseline_bleu']:.1f}), exact match {res['val_exact_match']:.3f}")
        print(f"saved to {args.final_out}")
    else:
        print_json(res)
    return 0


def _load(model_dir: str):
    from ..tasks.seq2seq import Translator

    return Translator.load(model_dir)


def translate_cmd(args: argparse.Namespace) -> int:
    """Translate one input per line, streamed; ``--json``: JSON Lines ``{index, source,
    translation}`` (a blank line gets ``translation: null``)."""
    tr = _load(args.model_dir)
    beam = getattr(args, "beam_width", 1)
    check_positive(beam_width=beam)
    for i, text, out in answer_lines(args.texts, args.file,
                                     lambda ts: tr.translate(ts, beam_width=beam)):
        if args.json:
            print_json({"index": i, "source": text, "translation": out})
        else:
            print(out or "")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from ..tasks.seq2seq import evaluate_translator, read_pairs

    if not args.file:
        raise UserError("evaluate a seq2seq model with --file PAIRS.tsv")
    tr = _load(args.model_dir)
    beam = getattr(args, "beam_width", 1)
    check_positive(beam_width=beam)
    ev = evaluate_translator(tr, read_pairs(args.file, None, *saved_columns(args.model_dir)),
                             beam_width=beam)
    res = {k: v for k, v in ev.items() if k != "examples"}
    if args.json:
        print_json(res)
    else:
        print(f"BLEU {ev['bleu']:.1f} (beam {beam}; constant baseline "
              f"{ev['baseline_bleu']:.1f}), exact "
              f"match {ev['exact_match']:.3f}, perplexity "
              f"{ev['perplexity'] if math.isfinite(ev['perplexity']) else 'inf'} on {ev['n']} "
              "pairs")
    return 0
