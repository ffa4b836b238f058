"""``rnnkit train siamese`` and ``rnnkit match``: similarity with twin encoders.

    rnnkit train siamese --file pairs.tsv --out DIR
    rnnkit match DIR "123 bakr st" --against references.txt [--top-k 5]
    rnnkit evaluate DIR --file pairs.tsv

Pairs: ``text_a<TAB>text_b[<TAB>label]`` (label 1 similar / 0 dissimilar; without labels every
line is a similar pair and random dissimilar pairs are drawn each epoch). ``evaluate`` reports
on labelled pairs the probability that a similar pair outscores a dissimilar one (AUC), and
on unlabelled pairs the rate at which each ``text_a`` finds its own ``text_b`` among all.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_json
from .common import answer_lines, check_positive, print_json
from .seq2seq import add_seq_training_flags, split, verbosity


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("siamese", help="twin-encoder similarity from text pairs",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--file", required=True, help="text_a<TAB>text_b[<TAB>label] file")
    d.add_argument("--validation-split", type=float, default=0.1)
    d.add_argument("--max-len", type=int, default=40, help="characters kept per text")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    m.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--units", type=int, default=32)
    m.add_argument("--embed-dim", type=int, default=16)
    m.add_argument("--out-dim", type=int, default=32)
    m.add_argument("--pooling", choices=["meanmax", "last"], default="meanmax")
    m.add_argument("--loss", choices=["margin", "contrastive", "triplet", "softmax"],
                   default="margin", help="triplet/softmax: rank against in-batch negatives")
    m.add_argument("--margin", type=float, default=0.0)
    add_seq_training_flags(p, out="models/siamese", epochs=10, lr=5e-3, batch_size=64)
    p.set_defaults(func=train)

    mt = sub.add_parser("match", help="nearest references of queries by a siamese model")
    mt.add_argument("model_dir")
    mt.add_argument("texts", nargs="*", help="queries (else --file or stdin)")
    mt.add_argument("--against", required=True, help="reference file, one text per line")
    mt.add_argument("--file", help="a UTF-8 file with one query per line")
    mt.add_argument("--top-k", type=int, default=5)
    mt.add_argument("--json", action="store_true", help="print one JSON object last")
    mt.set_defaults(func=match_cmd)

    from . import TASKS
    TASKS["siamese"] = {"evaluate": evaluate_cmd}


def _scores(m: Any, pairs: list, labels: list | None) -> dict[str, float]:
    from ..tasks.siamese import char_ngram_baseline, match_accuracy, pair_auc

    if labels is not None:
        return {"auc": pair_auc(m, pairs, labels), "pairs": len(pairs)}
    refs = list(dict.fromkeys(b for _, b in pairs))
    vecs = m.embed(refs)

    def best(qs: list[str]) -> list[str]:
        return [r[0][0] for r in m.match(qs, refs, 1, ref_vectors=vecs)]

    qs, truth = [a for a, _ in pairs], [b for _, b in pairs]
    return {"match_accuracy": match_accuracy(best, qs, truth),
            "bigram_baseline_accuracy": match_accuracy(char_ngram_baseline(refs), qs, truth),
            "random_baseline_accuracy": 1.0 / len(refs), "pairs": len(pairs)}


def train(args: argparse.Namespace) -> int:
    from ..tasks.siamese import read_pairs, train_matcher

    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   units=args.units, embed_dim=args.embed_dim, out_dim=args.out_dim,
                   max_len=args.max_len)
    pairs, labels = read_pairs(args.file)
    rows = list(zip(pairs, labels or [None] * len(pairs), strict=True))
    tr_rows, val_rows = split(rows, args.validation_split, args.seed)
    tr_pairs = [p for p, _ in tr_rows]
    tr_labels = None if labels is None else [y for _, y in tr_rows]
    if labels is not None and len(set(tr_labels)) < 2:
        raise UserError(f"{args.file}: the training split has only one label")
    val_pairs = [p for p, _ in val_rows]
    val_labels = None if labels is None else [y for _, y in val_rows]
    if args.patience is not None and not val_pairs:
        raise UserError("--patience needs a validation split (--validation-split > 0)")
    m, hist = train_matcher(tr_pairs, tr_labels, loss=args.loss, margin=args.margin,
                            embed_dim=args.embed_dim, units=args.units, out_dim=args.out_dim,
                            cell=args.cell, bidirectional=args.bidirectional,
                            pooling=args.pooling, max_len=args.max_len, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, clip_norm=args.clip_norm,
                            seed=args.seed, backend=args.backend,
                            val_pairs=val_pairs or None, val_labels=val_labels,
                            patience=args.patience, verbose=verbosity(args),
                            backup=args.backup)
    res: dict[str, Any] = {"task": "siamese", "model_dir": args.final_out,
                           "train_pairs": len(tr_pairs), "loss": hist["loss"][-1]}
    if val_rows:
        vl = None if labels is None else [y for _, y in val_rows]
        if vl is None or len(set(vl)) == 2:
            res.update({f"val_{k}": v for k, v in
                        _scores(m, [p for p, _ in val_rows], vl).items()})
    m.save(args.out, extra={"history": hist, "source_file": Path(args.file).name})
    atomic_write_json(Path(args.out) / "metrics.json", res)
    if args.json:
        print_json(res)
    else:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in res.items() if k.startswith("val_")))
        print(f"saved to {args.final_out}")
    return 0


def _load(model_dir: str):
    from ..tasks.siamese import Matcher

    return Matcher.load(model_dir)


def match_cmd(args: argparse.Namespace) -> int:
    """The ``--top-k`` references nearest to each query line, streamed; ``--json``: JSON
    Lines ``{index, query, top: [{text, cosine}]}`` (a blank line gets an empty ``top``)."""
    from ..tasks.siamese import read_references

    check_positive(top_k=args.top_k)
    m = _load(args.model_dir)
    refs = read_references(args.against)
    for i, q, found in answer_lines(args.texts, args.file,
                                    lambda qs: m.match(qs, refs, args.top_k)):
        r = found or []
        if args.json:
            print_json({"index": i, "query": q, "top": [{"text": t, "cosine": s} for t, s in r]})
        else:
            print(q)
            for t, s in r:
                print(f"  {s:.4f}  {t}")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from ..tasks.siamese import read_pairs

    if not args.file:
        raise UserError("evaluate a siamese model with --file PAIRS.tsv")
    m = _load(args.model_dir)
    pairs, labels = read_pairs(args.file)
    res = _scores(m, pairs, labels)
    if args.json:
        print_json(res)
    else:
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in res.items()))
    return 0
