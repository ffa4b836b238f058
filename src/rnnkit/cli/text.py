"""``rnnkit train text``: text classification from a labelled file.

    rnnkit train text --file spam.tsv                                  # SMS: label<TAB>text
    rnnkit train text --file news.csv --text-col headline --label-col topic
    rnnkit train text --file ratings_train.txt --format nsmc --lang ko  # Korean NSMC reviews
    rnnkit evaluate MODEL [--file other.csv]
    rnnkit predict MODEL "some text"

Two labels train a sigmoid output, more a softmax. Multi-label data (``--label-sep '|'`` for
fields like ``sports|politics``, or several columns ``--label-col hate,bias``; the value of
``--no-label`` means none) train one sigmoid per label and report per-label, macro and micro
F1. A seeded ``--test-fraction`` of the file
is held out as the test set (or give ``--test-file``), then ``--validation-split`` of the rest
for early stopping. Reports accuracy, precision/recall/F1 per class and the confusion matrix
beside the majority-class baseline. ``evaluate`` re-creates the same held-out split from the
file recorded at training time (or evaluates on all of ``--file``). A file that is not UTF-8
is read as CP949 (Korean) or Windows-1252, and a note says which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_json, file_record, same_file
from ..metrics import format_classification_report
from ..plots import plot_history
from ..tasks.classify import TextClassifier
from ..tasks.textfile import (
    FORMATS,
    LabelledTexts,
    encode_label_sets,
    encode_labels,
    evaluate_label_sets,
    evaluate_texts,
    format_label_sets_report,
    label_names,
    label_sets,
    multi_label_names,
    read_labelled,
    read_nsmc_labelled,
    split_data,
)
from ..text import set_progress
from ..train import seed_everything
from .common import (
    add_model_args,
    add_training_args,
    check_positive,
    classifier_spec,
    predict_texts_cmd,
    print_json,
    read_model_json,
)
from .tokenizer_args import add_tokenizer_args, make_tokenizer

DATA_JSON = "data.json"
#: ``--maxlen`` when not given: the 90th percentile of the training lengths, within [8, 256]
AUTO_MAXLEN = (90.0, 8, 256)


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("text", help="text classification from a CSV/TSV or SMS-spam file",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--file", required=True, help="labelled data file")
    d.add_argument("--text-col", help="text column name (or 0-based index) of a CSV/TSV")
    d.add_argument("--label-col", help="label column name (or 0-based index) of a CSV/TSV; "
                                       "several, comma-separated: multi-label")
    d.add_argument("--label-sep", help="multi-label: the labels of one field are separated by "
                                       "this string (e.g. '|')")
    d.add_argument("--no-label", default="none",
                   help="multi-label: this label value means no label")
    d.add_argument("--format", choices=FORMATS, default="auto",
                   help="auto: nsmc for an 'id<TAB>document<TAB>label' header, sms without "
                        "columns, else tsv/csv by suffix or first line")
    d.add_argument("--drop-duplicates", action="store_true",
                   help="nsmc: drop reviews whose document repeats an earlier one")
    d.add_argument("--test-file", help="separate labelled test file (same format)")
    d.add_argument("--stream", action="store_true",
                   help="a CSV/TSV larger than memory: one streaming pass builds the "
                        "vocabulary, then batches are read and encoded on the fly each epoch "
                        "(every 10th row validates, the next one tests)")
    d.add_argument("--workers", type=int, default=1,
                   help="--stream: DataLoader worker processes reading the file")
    d.add_argument("--test-fraction", type=float, default=0.2,
                   help="held-out test share of --file when there is no --test-file")
    # chosen on real data (docs/results.md): Adam 1e-2 without dropout was best at epoch 1
    # and then overfitted (Korean comments: macro F1 0.54 against 0.59 with these)
    add_model_args(p, cell="gru", units=32, embed_dim=32, num_words=10000, maxlen=None,
                   dropout=0.3)
    add_training_args(p, optimizer="adam", lr=3e-3, batch_size=32, epochs=20, patience=3,
                      validation_split=0.1)
    add_tokenizer_args(p)
    p.set_defaults(func=train, out_default="models/text")

    from . import TASKS
    TASKS["text"] = {"evaluate": evaluate_cmd, "predict": predict_texts_cmd}


def multi_label_mode(label_col: str | None, label_sep: str | None) -> bool:
    """Several label columns, or a separator of labels within a field."""
    return bool(label_sep) or (label_col is not None and "," in label_col)


def _as_sets(d: LabelledTexts, label_sep: str | None, no_label: str) -> LabelledTexts:
    """``d`` with its labels as canonical label sets (:func:`label_sets`)."""
    return LabelledTexts(d.texts, label_sets(d.labels, label_sep or "|", no_label), d.path,
                         d.skipped_header, d.encoding, d.quotes_literal)


def train(args: argparse.Namespace) -> int:
    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    multi = multi_label_mode(args.label_col, args.label_sep)
    if multi and (args.stream or args.format in ("sms", "nsmc")):
        raise UserError("multi-label data needs a CSV/TSV file read whole (not --stream, "
                        "not the SMS or NSMC formats)")
    if args.stream:
        return train_stream(args)
    spec = classifier_spec(args)
    out = Path(args.out or args.out_default)
    say = (lambda *a: None) if args.json and args.quiet else print

    set_progress(not args.quiet)  # a progress line when tokenizing takes over a second
    tokenizer = make_tokenizer(args)  # before reading: a missing extra fails fast
    stats = None
    if args.format == "nsmc":
        data, stats = read_nsmc_labelled(args.file, args.drop_duplicates)
        say(f"{args.file}: {stats.summary()}")
    else:
        data = read_labelled(args.file, args.text_col, args.label_col, args.format,
                             drop_duplicates=args.drop_duplicates)
    if multi:
        data = _as_sets(data, args.label_sep, args.no_label)
    test_fraction = 0.0 if args.test_file else args.test_fraction
    tr, va, te = split_data(data, test_fraction, args.validation_split, args.seed)
    if args.test_file:
        te = read_labelled(args.test_file, args.text_col, args.label_col, args.format,
                           drop_duplicates=args.drop_duplicates)
        if multi:
            te = _as_sets(te, args.label_sep, args.no_label)
    for d, f in ((data, args.file), (te, args.test_file)):
        _notes(d, f)
    names = multi_label_names(data.labels) if multi else label_names(data.labels)
    _warn_near_duplicate_labels(names, args.file)
    if multi and len(names) < 2:
        raise UserError(f"{args.file}: multi-label data needs at least 2 labels besides "
                        f"{args.no_label!r}, found {names}")
    encode = encode_label_sets if multi else encode_labels
    missing = sorted(set(names) - set(tr.labels))
    if missing:
        raise UserError(f"{args.file}: no training examples left for label(s) "
                        f"{', '.join(missing)}; add data or lower the held-out fractions")
    if multi:
        missing = sorted(set(names) - set(multi_label_names(tr.labels)))
        if missing:
            raise UserError(f"{args.file}: no training examples left for label(s) "
                            f"{', '.join(missing)}; add data or lower the held-out fractions")
    say(f"text: {len(tr)} train / {len(va)} validation / {len(te)} test examples, "
        f"{len(names)} labels{' (multi-label)' if multi else ''}: {', '.join(names)}")

    seed_everything(args.seed)  # the initial weights too, so a run is reproducible
    auto = AUTO_MAXLEN if args.maxlen is None else None
    clf = TextClassifier.create(spec, tr.texts, names, tokenizer=tokenizer,
                                padding=args.padding, truncating=args.truncating, task="text",
                                auto_maxlen=auto, multi_label=multi)
    if auto is not None:
        say(f"maxlen {clf.spec.maxlen} (the {auto[0]:.0f}th percentile of the training texts' "
            f"lengths, within [{auto[1]}, {auto[2]}]; set --maxlen to choose)")
    enc = clf.encoder
    history = clf.fit(clf.train_ids, encode(tr.labels, names),
                      validation_data=(enc.encode(va.texts), encode(va.labels, names)),
                      optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                      epochs=args.epochs, patience=args.patience, seed=args.seed, out=out,
                      backup=args.backup,
                      clip_norm=args.clip_norm, verbose=0 if args.quiet else 1)
    if multi and len(va):
        cuts = clf.calibrate_thresholds(enc.encode(va.texts), encode(va.labels, names))
        say("label thresholds (best F1 on the validation part): "
            + ", ".join(f"{n} {c:.2f}" for n, c in zip(names, cuts, strict=True)))
    clf.save(out)
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    atomic_write_json(out / DATA_JSON, {
        "file": file_record(args.file), "format": args.format,
        "text_col": args.text_col, "label_col": args.label_col,
        "multi_label": multi, "label_sep": args.label_sep, "no_label": args.no_label,
        "test_file": file_record(args.test_file) if args.test_file else None,
        "test_fraction": test_fraction, "validation_split": args.validation_split,
        "seed": args.seed, "drop_duplicates": args.drop_duplicates})
    result: dict[str, Any] = {"labels": names, "epochs": len(history.epoch),
                              "train_seconds": round(clf.train_seconds, 1),
                              "model_dir": args.final_out}
    if stats is not None:
        result["data_stats"] = stats.as_dict()
    if len(te):
        report, text = _evaluate(clf, te)
        say(text)
        if not multi:
            say(f"majority-class baseline accuracy {report['baseline_majority_accuracy']:.4f} "
                f"({report['baseline_majority_label']})")
        result["test"] = _compact(report)
    say(f"model saved to {args.final_out}")
    if args.json:
        print_json(result)
    return 0


def _warn_near_duplicate_labels(names: list[str], f: str) -> None:
    """Labels that differ only in case (``Spam`` / ``spam``) train as different classes: say
    so on stderr, since it is rarely meant."""
    by_key: dict[str, list[str]] = {}
    for n in names:
        by_key.setdefault(n.casefold(), []).append(n)
    same = [v for v in by_key.values() if len(v) > 1]
    if same:
        print(f"rnnkit: warning: {f}: labels differing only in case are different classes: "
              + "; ".join(" / ".join(repr(x) for x in v) for v in same)
              + " (make them the same in the file if they mean one class)", file=sys.stderr)


def _notes(d: LabelledTexts, f: str | None) -> None:
    """What reading ``f`` assumed, on stderr: a skipped header line, an encoding not UTF-8."""
    if d.skipped_header:
        print(f"rnnkit: note: {f}:1 ({d.skipped_header[:60]!r}) looks like a header line, "
              "not an example: skipped", file=sys.stderr)
    if d.encoding != "utf-8":
        print(f"rnnkit: note: {f} is not UTF-8 text: read as {d.encoding}", file=sys.stderr)
    if d.quotes_literal:
        print(f"rnnkit: note: {f}: a double quote opened a field that ran over tabs and line "
              "breaks, so this TSV does not quote its fields: read with quotes as plain "
              "characters, one example per line", file=sys.stderr)


def _evaluate(clf: TextClassifier, data: LabelledTexts, batch_size: int = 256
              ) -> tuple[dict[str, Any], str]:
    """The test report of ``clf`` on ``data`` and its text: multi-label or per class."""
    if clf.multi_label:
        report = evaluate_label_sets(clf, data, batch_size=batch_size)
        return report, format_label_sets_report(report)
    report = evaluate_texts(clf, data, batch_size=batch_size)
    return report, format_classification_report(report)


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _compact(report: dict[str, Any]) -> dict[str, Any]:
    if report.get("multi_label"):
        return _round(report)
    r = dict(report)
    for k in ("accuracy", "loss", "baseline_majority_accuracy"):
        r[k] = round(r[k], 4)
    r["macro"] = {k: round(v, 4) for k, v in r["macro"].items()}
    r["per_class"] = {n: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
                      for n, d in r["per_class"].items()}
    return r


def evaluate_cmd(args: argparse.Namespace) -> int:
    clf = TextClassifier.load(args.model_dir)
    d = read_model_json(args.model_dir, DATA_JSON)
    fmt, tcol, lcol = d.get("format", "auto"), d.get("text_col"), d.get("label_col")
    dedup = bool(d.get("drop_duplicates", False))
    if not args.file:
        trained = d.get("file", {}).get("name") if isinstance(d.get("file"), dict) else None
        raise UserError("pass --file FILE with the labelled data to evaluate on"
                        + (f" (the model was trained on {trained}; giving that file "
                           "evaluates its held-out test part)" if trained else ""))
    full = read_labelled(args.file, tcol, lcol, fmt, dedup)
    _notes(full, args.file)
    if clf.multi_label:
        sep, none = d.get("label_sep"), d.get("no_label", "none")
        if not (sep is None or isinstance(sep, str)) or not isinstance(none, str):
            raise UserError(f"{args.model_dir}/{DATA_JSON}: corrupt label settings")
        full = _as_sets(full, sep, none)
    fraction = d.get("test_fraction")
    if (isinstance(fraction, float) and 0 < fraction < 1 and same_file(args.file, d.get("file"))):
        split, seed = d.get("validation_split", 0.1), d.get("seed", 42)
        if not (isinstance(split, float) and 0 <= split < 1 and isinstance(seed, int)):
            raise UserError(f"{args.model_dir}/{DATA_JSON}: corrupt split settings")
        _, _, data = split_data(full, fraction, split, seed)
        where = f"the held-out {fraction:.0%} of {args.file} (the training file)"
    else:
        data, where = full, args.file
    report, text = _evaluate(clf, data, args.batch_size)
    if args.json:
        print_json({**_compact(report), "model_dir": args.model_dir, "data": str(where)})
    else:
        print(f"evaluated on {where}")
        print(text)
        if not clf.multi_label:
            print(f"majority-class baseline accuracy "
                  f"{report['baseline_majority_accuracy']:.4f}")
    return 0


def train_stream(args: argparse.Namespace) -> int:
    """``train text --stream``: see :mod:`rnnkit.tasks.textstream`."""
    from dataclasses import replace

    import torch

    from ..tasks.classify import build_model
    from ..tasks.textstream import StreamedBatches, scan
    from ..text import TextEncoder

    if not 0 <= args.workers <= 64:
        raise UserError(f"--workers must be in [0, 64], got {args.workers}")
    tokenizer = make_tokenizer(args)
    tok = TextEncoder(tokenizer).tokenizer
    if tok.needs_fit:
        raise UserError("--stream needs a tokenizer without training (not sentencepiece)")
    say = (lambda *a: None) if args.json and args.quiet else print
    use_test = not args.test_file
    sc = scan(args.file, args.text_col, args.label_col, args.format, tok, args.num_words,
              use_test=use_test, progress=not args.quiet, seed=args.seed)
    names = sc.labels
    if len(names) < 2:
        raise UserError(f"{args.file}: a classifier needs at least 2 labels, found {names}")
    maxlen = args.maxlen if args.maxlen is not None else sc.maxlen()
    spec = replace(classifier_spec(args), maxlen=maxlen)
    encoder = TextEncoder(tok, maxlen=maxlen, padding=args.padding, truncating=args.truncating)
    encoder.vocabulary = sc.vocabulary
    seed_everything(args.seed)
    clf = TextClassifier(build_model(spec, len(names)), encoder, names, spec, task="text")
    te = (read_labelled(args.test_file, args.text_col, args.label_col, args.format)
          if args.test_file else sc.test)
    say(f"text --stream: {sc.train_rows} train rows read per epoch, {len(sc.validation)} "
        f"validation, {len(te)} test; {len(names)} labels; maxlen {maxlen}")
    data = StreamedBatches(args.file, args.text_col, args.label_col, args.format, encoder,
                           names, clf.targets, args.batch_size, use_test=use_test,
                           seed=args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    val = (encoder.encode(sc.validation.texts), encode_labels(sc.validation.labels, names)) \
        if len(sc.validation) else None
    out = Path(args.out or args.out_default)
    history = clf.fit_batches(loader, validation_data=val, optimizer=args.optimizer,
                              lr=args.lr, epochs=args.epochs, patience=args.patience,
                              seed=args.seed, out=out, clip_norm=args.clip_norm,
                              verbose=0 if args.quiet else 1, backup=args.backup)
    clf.save(out)
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    atomic_write_json(out / DATA_JSON, {
        "file": file_record(args.file), "format": args.format, "text_col": args.text_col,
        "label_col": args.label_col, "stream": True,
        "test_file": file_record(args.test_file) if args.test_file else None,
        "seed": args.seed})
    result: dict[str, Any] = {"labels": names, "epochs": len(history.epoch),
                              "train_rows": sc.train_rows,
                              "train_seconds": round(clf.train_seconds, 1),
                              "model_dir": args.final_out}
    if len(te):
        report, text = _evaluate(clf, te)
        say(text)
        result["test"] = _compact(report)
    say(f"model saved to {args.final_out}")
    if args.json:
        print_json(result)
    return 0
