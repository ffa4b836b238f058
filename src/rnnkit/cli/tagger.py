"""``rnnkit train tagger`` and ``rnnkit tag``: sequence tagging (POS, NER).

    rnnkit train tagger --train train.conllu [--dev dev.conllu] [--test test.conllu]
    rnnkit tag MODEL "A sentence to tag ."

Reads CoNLL-U (tag column selectable with ``--tag-column``, UPOS by default) or
CoNLL-2003-style whitespace columns (``--format conll``, tag = last column by default).
Without ``--dev`` a seeded ``--validation-split`` of the training sentences is held out.
Defaults: BiLSTM 64 units over 64-dim word embeddings, Adam 1e-2, batch 32, 10 epochs,
early stopping on validation loss (patience 3) restoring the best weights.
``evaluate MODEL`` reports masked token accuracy (and entity P/R/F1 for BIO tags) on
``--file`` or on the test file recorded at training time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..datasets import train_val_split
from ..errors import UserError
from ..io import atomic_write_json, file_record
from ..plots import plot_history
from ..tasks.tagging import Tagger, TaggerSpec, read_tagged, tokenize_sentence
from ..train import seed_everything
from .common import (
    add_training_args,
    answer_lines,
    check_positive,
    print_json,
    read_model_json,
)

DATA_JSON = "data.json"


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("tagger", help="sequence tagging (POS, NER) from CoNLL files",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--train", required=True, help="training file (CoNLL-U or CoNLL-2003)")
    d.add_argument("--dev", help="validation file (else --validation-split of --train)")
    d.add_argument("--test", help="test file evaluated after training")
    d.add_argument("--format", choices=["auto", "conllu", "conll"], default="auto")
    d.add_argument("--tag-column", default=None,
                   help="CoNLL-U column name or index (default upos); CoNLL-2003 column "
                        "index (default -1, the last)")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["simple", "lstm", "gru"], default="lstm")
    m.add_argument("--units", type=int, default=64)
    m.add_argument("--embed-dim", type=int, default=64)
    m.add_argument("--layers", type=int, default=1)
    m.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--dropout", type=float, default=0.5,
                   help="dropout on the recurrent layers' inputs")
    m.add_argument("--recurrent-dropout", type=float, default=0.0)
    m.add_argument("--num-words", type=int, default=20000,
                   help="vocabulary size including the ids 0 (pad), 1 (start), 2 (unknown)")
    m.add_argument("--min-count", type=int, default=1)
    m.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                   help="lowercase words before the vocabulary lookup (default: on when the "
                        "character CNN is, which sees the original casing)")
    m.add_argument("--crf", action="store_true",
                   help="a CRF output layer: tags chosen jointly per sentence (Viterbi) "
                        "instead of one softmax per word")
    m.add_argument("--char-filters", type=int, default=200,
                   help="filters of the per-word character CNN, so that unseen words get "
                        "tags from their spelling (0: off)")
    m.add_argument("--maxlen", type=int, default=200, help="truncate longer training sentences")
    add_training_args(p, optimizer="adam", lr=1e-2, batch_size=32, epochs=20, patience=3,
                      validation_split=0.1)
    p.set_defaults(func=train, out_default="models/tagger", clip_norm=5.0)

    t = sub.add_parser("tag", help="tag the tokens of sentences with a saved tagger")
    t.add_argument("model_dir")
    t.add_argument("texts", nargs="*", help="sentences (else --file or stdin)")
    t.add_argument("--file", help="a UTF-8 file with one sentence per line")
    t.add_argument("--json", action="store_true", help="print one JSON object last")
    t.set_defaults(func=tag_cmd)

    from . import TASKS
    TASKS["tagger"] = {"evaluate": evaluate_cmd, "predict": tag_cmd}


def _tag_column(value: str | None) -> str | int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def train(args: argparse.Namespace) -> int:
    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    spec = TaggerSpec(cell=args.cell, bidirectional=args.bidirectional,
                      embed_dim=args.embed_dim, units=args.units, layers=args.layers,
                      dropout=args.dropout, recurrent_dropout=args.recurrent_dropout,
                      num_words=args.num_words, min_count=args.min_count,
                      lowercase=args.lowercase, maxlen=args.maxlen,
                      char_filters=args.char_filters, crf=args.crf)
    col = _tag_column(args.tag_column)
    out = Path(args.out or args.out_default)
    say = (lambda *a: None) if args.json and args.quiet else print

    train_s = read_tagged(args.train, args.format, col)
    if args.dev:
        dev_s = read_tagged(args.dev, args.format, col)
    else:
        if not 0 < args.validation_split < 1:
            raise UserError(f"--validation-split must be in (0, 1), got {args.validation_split}")
        if len(train_s) < 2:
            raise UserError(f"{args.train}: need at least 2 sentences to hold out validation")
        (train_s,), (dev_s,) = train_val_split(train_s, validation_split=args.validation_split,
                                               seed=args.seed)
    test_s = read_tagged(args.test, args.format, col) if args.test else None
    say(f"tagger: {len(train_s)} train / {len(dev_s)} validation"
        f"{f' / {len(test_s)} test' if test_s else ''} sentences")

    seed_everything(args.seed)  # the initial weights too, so a run is reproducible
    tagger = Tagger.create(spec, train_s)
    unseen = sorted({t for s in dev_s for t in s.tags} - set(tagger.tags))
    if unseen:
        raise UserError(f"validation data has tags not in the training data: "
                        f"{', '.join(unseen[:5])}")
    history = tagger.fit(train_s, dev_s, optimizer=args.optimizer, lr=args.lr,
                         batch_size=args.batch_size, epochs=args.epochs,
                         patience=args.patience, seed=args.seed, clip_norm=args.clip_norm,
                         out=out, verbose=0 if args.quiet else 1, backup=args.backup)
    tagger.save(out)
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    data = {"format": args.format, "tag_column": col, "train": file_record(args.train),
            "test": file_record(args.test) if args.test else None}
    atomic_write_json(out / DATA_JSON, data)

    result: dict[str, Any] = {"epochs": len(history.epoch),
                              "train_seconds": round(tagger.train_seconds, 1),
                              "model_dir": args.final_out, "tags": len(tagger.tags) - 1}
    val = tagger.evaluate(dev_s)
    result["val"] = _rounded(val)
    if test_s:
        result["test"] = _rounded(tagger.evaluate(test_s))
    for split in ("val", "test"):
        if split in result:
            say(_summary_line(split, result[split]))
    say(f"model saved to {args.final_out}")
    if args.json:
        print_json(result)
    return 0


def _rounded(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in res.items():
        if isinstance(v, float):
            out[k] = round(v, 4)
        elif isinstance(v, dict):
            out[k] = _rounded(v)
        else:
            out[k] = v
    return out


def _summary_line(name: str, r: dict[str, Any]) -> str:
    line = (f"{name}: token accuracy {r['token_accuracy']:.4f} on {r['tokens']} tokens "
            f"(baselines: most frequent tag per word {r['baseline_word_majority_accuracy']:.4f}"
            f", overall most frequent tag {r['baseline_majority_tag_accuracy']:.4f})")
    if "entity" in r:
        e = r["entity"]
        line += (f"; entities P {e['precision']:.4f} R {e['recall']:.4f} F1 {e['f1']:.4f} "
                 f"(baseline F1 {r['baseline_word_majority_entity_f1']:.4f})")
    return line


def evaluate_cmd(args: argparse.Namespace) -> int:
    tagger = Tagger.load(args.model_dir)
    path = args.file
    data = read_model_json(args.model_dir, DATA_JSON)
    fmt, col = data.get("format", "auto"), data.get("tag_column")
    if fmt not in ("auto", "conllu", "conll", "tsv") or not isinstance(col, (str, int, type(None))):
        raise UserError(f"{args.model_dir}/{DATA_JSON}: corrupt data settings")
    if not path:
        test = data.get("test") if isinstance(data.get("test"), dict) else {}
        raise UserError("pass --file FILE with the tagged test data"
                        + (f" (the model's test file was {test.get('name')})" if test else ""))
    res = _rounded(tagger.evaluate(read_tagged(path, fmt, col)))
    if args.json:
        print_json({**res, "file": str(path), "model_dir": args.model_dir})
    else:
        print(_summary_line("test", res))
    return 0


def tag_cmd(args: argparse.Namespace) -> int:
    """Tag sentences, one answer per input line, streamed (``--json``: JSON Lines
    ``{index, tokens: [{token, tag}]}``; a line without tokens gets ``error``)."""
    tagger = Tagger.load(args.model_dir)

    def tag(texts: list[str]) -> list[list[tuple[str, str]] | None]:
        toks = [tokenize_sentence(t) for t in texts]
        empty = next((k for k, t in enumerate(toks) if not t), None)
        if args.texts and empty is not None:
            raise UserError(f"sentence {args.texts.index(texts[empty]) + 1} has no tokens")
        full = [t for t in toks if t]
        tagged = iter(tagger.predict(full) if full else [])
        return [list(zip(t, next(tagged), strict=True)) if t else None for t in toks]

    for i, _, pairs in answer_lines(args.texts, args.file, tag):
        if args.json:
            print_json({"index": i, "tokens": [{"token": w, "tag": g} for w, g in pairs]}
                       if pairs is not None else {"index": i, "tokens": [],
                                                  "error": "no tokens"})
        else:
            print(" ".join(f"{w}/{g}" for w, g in pairs or []))
    return 0
