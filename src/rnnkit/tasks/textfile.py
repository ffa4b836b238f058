"""Many-to-one text classification from a labelled file (CSV/TSV or SMS Spam Collection).

Reading. A CSV/TSV file has a header row; ``text_col`` and ``label_col`` name its columns
(or give 0-based indices); quoted fields may contain the delimiter and newlines. The UCI SMS
Spam Collection format has no header: one message per line, ``label<TAB>text``. Every error
names the file and the 1-based line.

Labels. The class names are the distinct label strings, sorted; label ``k`` is class index
``k``. Two classes give a sigmoid output ``p = P(class 1)``, more a softmax
(:mod:`rnnkit.tasks.classify`). The names are saved with the model. Multi-label data (a
label field holding several labels, or several label columns ``label_col="a,b"``): every
example has a set of labels (:func:`label_sets`), the model one sigmoid output per label,
and the report (:func:`evaluate_label_sets`) per-label, macro and micro F1.

Evaluation (:func:`evaluate_texts`): accuracy, precision/recall/F1 per class, macro averages
and the confusion matrix (:func:`rnnkit.metrics.classification_report`), beside the trivial
majority-class baseline ``accuracy = max_k count_k / n``.

Splits (:func:`split_data`): stratified by label -- each label's examples are shuffled
(seeded) and ``round(n_label * test_fraction)`` of them held out as the test set, then
``val_fraction`` of the rest, label by label, for validation -- so every split has the
file's label proportions, and the same file, fractions and seed give the same split again
at evaluation time.
"""

from __future__ import annotations

import csv
import io as _io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import classification_report, precision_recall_f1
from ..nsmc import NSMC_LABELS, NSMCStats, load_nsmc, looks_like_nsmc

__all__ = ["LabelledTexts", "read_labelled", "read_sms_spam", "label_names", "encode_labels",
           "label_sets", "multi_label_names", "encode_label_sets", "evaluate_label_sets",
           "format_label_sets_report", "MULTI_SEP",
           "split_data", "evaluate_texts"]

FORMATS = ("auto", "csv", "tsv", "sms", "nsmc")


@dataclass
class LabelledTexts:
    """Texts with their label strings (aligned) and the file they came from."""

    texts: list[str]
    labels: list[str]
    path: str = ""
    #: a first line that was recognised as a header and skipped (see :func:`read_sms_spam`)
    skipped_header: str | None = None
    #: the file's encoding (:func:`decode_text`; anything but utf-8 is worth a note)
    encoding: str = "utf-8"
    #: a TSV read with double quotes as plain characters (see :class:`RunawayQuote`)
    quotes_literal: bool = False

    def __len__(self) -> int:
        return len(self.texts)


def decode_text(raw: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a data file's bytes: UTF-8 (a BOM is dropped); else CP949 when
    that decodes and at least a tenth of the characters are Hangul syllables (Korean files
    saved by Windows tools); else Windows-1252, the usual encoding of Western CSV exports
    (the Kaggle SMS spam file is one); else Latin-1, which decodes any bytes."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("cp949")
        if sum("\uac00" <= c <= "\ud7a3" for c in text) * 10 >= len(text):
            return text, "cp949"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def _read_text(path: Path) -> tuple[str, str]:
    """A labelled data file's text and the encoding :func:`decode_text` found."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    return decode_text(path.read_bytes())


def read_sms_spam(path: str | Path) -> LabelledTexts:
    """``label<TAB>text`` per line (UCI SMS Spam Collection); blank lines are skipped."""
    path = Path(path)
    return _sms_records(path, *_read_text(path))


def _sms_records(path: Path, raw: str, encoding: str) -> LabelledTexts:
    """:func:`read_sms_spam` on the file's decoded text."""
    texts, labels = [], []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise UserError(f"{path}:{n}: expected 'label<TAB>text' (no tab in the line)")
        label, text = line.split("\t", 1)
        label, text = label.strip(), text.strip()
        if not label:
            raise UserError(f"{path}:{n}: empty label")
        if not text:
            raise UserError(f"{path}:{n}: empty text")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise UserError(f"{path}: no labelled lines")
    header = None
    if len(labels) > 2 and _looks_like_header(labels[0], labels[1:]):
        header = f"{labels[0]}\t{texts[0]}"
        texts, labels = texts[1:], labels[1:]
    return LabelledTexts(texts, labels, str(path), header, encoding)


#: first-column names that mean "this line names the columns"
_HEADER_WORDS = {"label", "labels", "class", "category", "target", "y", "v1", "tag", "type",
                 "sentiment"}


def _looks_like_header(first: str, rest: list[str]) -> bool:
    """Whether the first line's label is a header: it names a column (``Label``, ``class``,
    ...) and is not a label of the rest, or it appears only there while every label of the
    rest repeats (a class seen once in a file of repeating classes is a header, not data)."""
    if first in rest:
        return False
    if first.strip().lower() in _HEADER_WORDS:
        return True
    counts = Counter(rest)
    return len(counts) >= 2 and min(counts.values()) >= 2


def _column(header: list[str], col: str, path: Path, what: str) -> int:
    if col in header:
        return header.index(col)
    if re.fullmatch(r"-?[0-9]+", col) and -len(header) <= int(col) < len(header):
        return int(col) % len(header)
    raise UserError(f"{path}: no {what} column {col!r} (columns: {', '.join(header)})")


class RunawayQuote(UserError):
    """A TSV field opened by a double quote ran over several lines and tabs: the file does
    not quote its fields (quotes are plain characters in it)."""


def csv_records(lines: Iterable[str], delimiter: str, text_col: str, label_col: str,
                path: Path, what: str = "CSV", quoting: bool = True
                ) -> Iterator[tuple[str, str]]:
    """``(text, label)`` of every non-blank record of CSV/TSV ``lines`` (an open file or a
    string buffer; read lazily), columns named or numbered in its header; a malformed
    record, a wrong field count or an empty text or label is a UserError naming the line.
    ``quoting=False``: double quotes are plain characters (one record per line). A TSV field
    that holds both a tab and a line break raises :class:`RunawayQuote` (a quote that opens
    a field in a file that does not quote them swallows the lines after it)."""
    reader = csv.reader(lines, delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path}:1: malformed header ({e})") from None
    ti = _column(header, text_col, path, "text")
    lis = [_column(header, c.strip(), path, "label") for c in label_col.split(",")] \
        if "," in label_col else [_column(header, label_col, path, "label")]
    if ti in lis:
        raise UserError(f"{path}: the text and label columns are the same column")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as e:
            raise UserError(f"{path}:{start}: malformed {what} ({e})") from None
        n = start  # the line where this record begins
        start = reader.line_num + 1
        if delimiter == "\t" and start - n > 1 and any("\t" in c and "\n" in c for c in row):
            raise RunawayQuote(f"{path}:{n}: a double quote opens a field that runs to line "
                               f"{start - 1} over tabs and line breaks (this TSV seems not to "
                               "quote its fields)")
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{path}:{n}: {len(row)} fields, the header has {len(header)} "
                            "(is a field with the delimiter missing its quotes?)")
        t = row[ti].strip()
        if not t:
            raise UserError(f"{path}:{n}: empty text in column {header[ti]!r}")
        for li in lis:
            if not row[li].strip():
                raise UserError(f"{path}:{n}: empty label in column {header[li]!r}")
            if len(lis) > 1 and MULTI_SEP in row[li]:
                raise UserError(f"{path}:{n}: label {row[li].strip()!r} contains "
                                f"{MULTI_SEP!r}, which joins the label columns")
        yield t, MULTI_SEP.join(row[li].strip() for li in lis)


def read_labelled(path: str | Path, text_col: str | None = None, label_col: str | None = None,
                  format: str = "auto", drop_duplicates: bool = False) -> LabelledTexts:
    """Texts and labels of a CSV/TSV file (``text_col``, ``label_col`` from its header) or of
    an SMS-Spam-format file. ``format="auto"``: SMS when no columns are given, else TSV for a
    ``.tsv``/``.tab`` file or a header line with a tab, else CSV. ``format="nsmc"`` (also
    chosen by ``auto`` for the header ``id<TAB>document<TAB>label``): the NSMC format, see
    :mod:`rnnkit.nsmc` (empty documents dropped; ``drop_duplicates`` only applies here)."""
    path = Path(path)
    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    decoded: list[tuple[str, str]] = []  # the file read and decoded once, when first needed

    def content() -> tuple[str, str]:
        if not decoded:
            decoded.append(_read_text(path))
        return decoded[0]

    if format == "auto" and text_col is None and label_col is None:
        if looks_like_nsmc(content()[0].split("\n", 1)[0]):
            format = "nsmc"
    if format == "nsmc":
        if text_col is not None or label_col is not None:
            raise UserError("the NSMC format (id<TAB>document<TAB>label) has fixed columns; "
                            "drop --text-col/--label-col")
        return read_nsmc_labelled(path, drop_duplicates)[0]
    if format == "auto":
        if text_col is None and label_col is None:
            format = "sms"
        elif path.suffix.lower() in (".tsv", ".tab"):
            format = "tsv"
        else:
            first = content()[0].split("\n", 1)[0]
            format = "tsv" if "\t" in first else "csv"
    if format == "sms":
        if text_col is not None or label_col is not None:
            raise UserError("the SMS format (label<TAB>text) has no named columns; drop "
                            "--text-col/--label-col or choose --format csv/tsv")
        return _sms_records(path, *content())
    if text_col is None or label_col is None:
        raise UserError(f"a {format.upper()} file needs both a text column and a label column "
                        "(--text-col, --label-col)")
    raw, encoding = content()
    delim = "\t" if format == "tsv" else ","
    quotes_literal = False
    try:
        records = list(csv_records(_io.StringIO(raw, newline=""), delim, text_col, label_col,
                                   path, format.upper()))
    except RunawayQuote:  # a TSV that does not quote its fields: quotes are characters
        records = list(csv_records(_io.StringIO(raw, newline=""), delim, text_col, label_col,
                                   path, format.upper(), quoting=False))
        quotes_literal = True
    if not records:
        raise UserError(f"{path}: no data rows")
    texts, labels = [t for t, _ in records], [lab for _, lab in records]
    return LabelledTexts(texts, labels, str(path), encoding=encoding,
                         quotes_literal=quotes_literal)


#: joins the labels of one example in multi-label data (and the label columns when several
#: are given): the canonical label of an example is its sorted label names joined by it
MULTI_SEP = "|"


def label_sets(labels: list[str], sep: str = MULTI_SEP, no_label: str = "none") -> list[str]:
    """Multi-label data: each raw label field split on ``sep``, the value ``no_label`` (and
    empty parts) dropped, the rest sorted, unique and joined by :data:`MULTI_SEP` (``""``:
    no label). ``"hate|gender"`` and ``"gender|hate"`` both give ``"gender|hate"``."""
    out = []
    for lab in labels:
        parts = {x.strip() for x in lab.split(sep)} - {"", no_label}
        out.append(MULTI_SEP.join(sorted(parts)))
    return out


def multi_label_names(labels: list[str]) -> list[str]:
    """The distinct label names of canonical multi-label strings (:func:`label_sets`)."""
    return sorted({x for lab in labels for x in lab.split(MULTI_SEP) if x})


def encode_label_sets(labels: list[str], names: list[str]) -> np.ndarray:
    """Canonical multi-label strings -> ``(n, K)`` 0/1 float32 targets; UserError for a
    label the model does not know."""
    index = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(labels), len(names)), np.float32)
    for r, lab in enumerate(labels):
        for x in lab.split(MULTI_SEP):
            if not x:
                continue
            if x not in index:
                raise UserError(f"label {x!r} is not one the model was trained on "
                                f"({', '.join(names)})")
            y[r, index[x]] = 1.0
    return y


def label_names(labels: list[str]) -> list[str]:
    """Sorted distinct labels; at least two are needed."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise UserError(f"need at least 2 distinct labels to train a classifier, found "
                        f"{names}")
    return names


def encode_labels(labels: list[str], names: list[str]) -> np.ndarray:
    """Label strings -> class indices; UserError for a label the model does not know."""
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - index.keys())
    if unknown:
        raise UserError(f"labels not known to the model: {', '.join(unknown[:5])} "
                        f"(known: {', '.join(names)})")
    return np.array([index[x] for x in labels], dtype=np.int64)


def split_data(data: LabelledTexts, test_fraction: float = 0.2, val_fraction: float = 0.1,
               seed: int = 42) -> tuple[LabelledTexts, LabelledTexts, LabelledTexts]:
    """(train, validation, test) by one seeded shuffle each (see the module docstring);
    ``test_fraction=0`` gives an empty test set."""
    for name, v in (("test fraction", test_fraction), ("validation fraction", val_fraction)):
        if not 0 <= v < 1:
            raise UserError(f"{name} must be in [0, 1), got {v}")
    idx = np.arange(len(data))
    test_idx = np.array([], dtype=np.int64)
    if test_fraction > 0:
        idx, test_idx = _stratified(idx, data.labels, test_fraction, seed)
    tr_idx, va_idx = (_stratified(idx, data.labels, val_fraction, seed + 1) if val_fraction > 0
                      else (idx, np.array([], dtype=np.int64)))
    for name, part in (("test", test_idx if test_fraction > 0 else None),
                       ("validation", va_idx if val_fraction > 0 else None), ("training", tr_idx)):
        if part is not None and len(part) == 0:
            raise UserError(f"{data.path}: cannot split {len(data)} examples: the {name} "
                            "part would be empty")

    def take(ix: np.ndarray) -> LabelledTexts:
        return LabelledTexts([data.texts[i] for i in ix], [data.labels[i] for i in ix],
                             data.path)

    return take(tr_idx), take(va_idx), take(test_idx)


def _stratified(idx: np.ndarray, labels: list[str], fraction: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` positions of ``idx``: ``round(n_label * fraction)`` of each
    label's examples held out (chosen by a seeded shuffle); both parts shuffled."""
    rng = np.random.default_rng(seed)
    keep, out = [], []
    by_label: dict[str, list[int]] = {}
    for i in idx:
        by_label.setdefault(labels[i], []).append(int(i))
    for lab in sorted(by_label):
        members = np.asarray(by_label[lab])[rng.permutation(len(by_label[lab]))]
        k = int(round(len(members) * fraction))
        out.extend(members[:k])
        keep.extend(members[k:])
    keep_a, out_a = np.asarray(keep, dtype=np.int64), np.asarray(out, dtype=np.int64)
    return keep_a[rng.permutation(len(keep_a))], out_a[rng.permutation(len(out_a))]


def evaluate_texts(clf: Any, data: LabelledTexts, batch_size: int = 256) -> dict[str, Any]:
    """Classification report of ``clf`` (a :class:`~rnnkit.tasks.classify.TextClassifier`)
    on ``data``, with the majority-class baseline accuracy and the mean loss."""
    y = encode_labels(data.labels, clf.labels)
    probs = clf.predict_proba(data.texts, batch_size=batch_size)
    pred = probs.argmax(axis=1)
    report = classification_report(y, pred, clf.labels)
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    report["loss"] = float(-np.mean(np.log(p_true)))
    counts = Counter(y.tolist())
    report["baseline_majority_accuracy"] = max(counts.values()) / len(y)
    report["baseline_majority_label"] = clf.labels[max(counts, key=lambda k: (counts[k], -k))]
    return report


def evaluate_label_sets(clf: Any, data: LabelledTexts, batch_size: int = 256,
                        threshold: float | None = None) -> dict[str, Any]:
    """Multi-label report of ``clf`` on ``data`` (canonical labels, :func:`label_sets`): per
    label precision/recall/F1/support with ``p >= threshold`` as the prediction (the
    classifier's per-label ``thresholds`` when ``threshold`` is None), macro and
    micro averages, subset accuracy (the whole label set right) and Hamming accuracy (each
    label right), beside the majority-set baseline (the most frequent label set for all)."""
    y = encode_label_sets(data.labels, clf.labels)
    probs = clf.predict_proba(data.texts, batch_size=batch_size)
    cuts = np.asarray(getattr(clf, "thresholds", None) or [0.5] * len(clf.labels)
                      if threshold is None else [threshold] * len(clf.labels))
    pred = (probs >= cuts[None, :]).astype(np.float32)
    def positive(t: np.ndarray, q: np.ndarray) -> dict[str, float]:
        """P/R/F1/support of class 1 of a 0/1 column (metrics.precision_recall_f1)."""
        r = precision_recall_f1(t, q, 2)
        return {m: float(r[m][1]) for m in ("precision", "recall", "f1")} | {
            "support": int(r["support"][1])}

    per = {name: positive(y[:, k], pred[:, k]) for k, name in enumerate(clf.labels)}
    # micro averages: every (example, label) pair as one binary decision
    micro = {m: v for m, v in positive(y.ravel(), pred.ravel()).items() if m != "support"}
    sets = Counter(data.labels)
    majority = max(sorted(sets), key=lambda s: sets[s])
    pe = np.clip(probs, 1e-7, 1 - 1e-7)
    return {
        "multi_label": True, "thresholds": dict(zip(clf.labels, cuts.tolist(), strict=True)),
        "per_label": per,
        "macro": {m: float(np.mean([d[m] for d in per.values()]))
                  for m in ("precision", "recall", "f1")},
        "micro": micro,
        "subset_accuracy": float((pred == y).all(axis=1).mean()),
        "hamming_accuracy": float((pred == y).mean()),
        "loss": float(-np.mean(y * np.log(pe) + (1 - y) * np.log(1 - pe))),
        "baseline_majority_set": majority,
        "baseline_majority_subset_accuracy": sets[majority] / len(data.labels),
        "n": len(data.labels)}


def format_label_sets_report(r: dict[str, Any]) -> str:
    """The report of :func:`evaluate_label_sets` as text."""
    lines = [f"{'label':<16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for name, d in r["per_label"].items():
        lines.append(f"{name[:16]:<16} {d['precision']:>9.3f} {d['recall']:>7.3f} "
                     f"{d['f1']:>7.3f} {d['support']:>8}")
    for avg in ("macro", "micro"):
        d = r[avg]
        lines.append(f"{avg + ' avg':<16} {d['precision']:>9.3f} {d['recall']:>7.3f} "
                     f"{d['f1']:>7.3f}")
    lines.append(f"subset accuracy {r['subset_accuracy']:.4f}, Hamming accuracy "
                 f"{r['hamming_accuracy']:.4f} on {r['n']} examples (thresholds "
                 + ", ".join(f"{k} {v:.2f}" for k, v in r["thresholds"].items()) + ")")
    lines.append(f"majority-set baseline subset accuracy "
                 f"{r['baseline_majority_subset_accuracy']:.4f} "
                 f"({r['baseline_majority_set'] or 'no label'!r})")
    return "\n".join(lines)


def read_nsmc_labelled(path: str | Path, drop_duplicates: bool = False,
                       ) -> tuple[LabelledTexts, NSMCStats]:
    """:func:`rnnkit.nsmc.load_nsmc` as :class:`LabelledTexts` for ``rnnkit train text
    --format nsmc``: label 0 -> ``"negative"``, 1 -> ``"positive"``."""
    texts, labels, stats = load_nsmc(path, drop_duplicates=drop_duplicates)
    names = [NSMC_LABELS.get(y, str(y)) for y in labels]
    return LabelledTexts(texts, names, str(path)), stats
