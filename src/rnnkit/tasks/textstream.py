"""Text classification on a file larger than memory (``rnnkit train text --stream``).

The file (CSV or TSV with a header, ``--text-col``/``--label-col``) is never held whole:

1. :func:`scan` reads it once, streaming: the vocabulary counts of the training rows, the
   label set, a reservoir of lengths for ``maxlen``, and the held-out rows. Row ``i``
   (0-based, data rows only) is a validation row when ``i % 10 == 0`` and a test row when
   ``i % 10 == 1`` (without a separate test file), each kept up to ``max_held`` rows; the
   rest train. Memory holds the counts (bounded by the vocabulary, not the file) and the
   held-out rows.
2. :class:`StreamedBatches` (a ``torch.utils.data.IterableDataset``) re-reads the training
   rows every epoch, shuffles them in a buffer of ``buffer`` rows (seeded per epoch and
   worker), encodes each batch on the fly and yields ``(ids, targets)``; with DataLoader
   workers, worker ``w`` of ``W`` takes the training rows ``j`` with ``j % W == w``.

Bad rows are the same one-line errors as :func:`rnnkit.tasks.textfile.read_labelled` gives,
found during the scan before training starts.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..text import TextEncoder, Vocabulary
from .textfile import LabelledTexts, csv_records

#: every HOLD_OUT-th row is validation (offset 0) or test (offset 1)
HOLD_OUT = 10


def _delimiter(path: Path, fmt: str) -> str:
    if fmt in ("csv", "tsv"):
        return "\t" if fmt == "tsv" else ","
    if fmt != "auto":
        raise UserError(f"--stream reads CSV or TSV files with a header, not --format {fmt}")
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with open(path, encoding="utf-8", errors="replace") as f:
        return "\t" if "\t" in f.readline() else ","


def iter_rows(path: str | Path, text_col: str | None, label_col: str | None,
              fmt: str = "auto") -> Iterator[tuple[int, str, str]]:
    """``(row index, text, label)`` of every data row, read line by line."""
    path = Path(path)
    if text_col is None or label_col is None:
        raise UserError("--stream needs --text-col and --label-col")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, encoding="utf-8", newline="") as f:
        for i, (text, lab) in enumerate(csv_records(f, _delimiter(path, fmt), text_col,
                                                    label_col, path)):
            yield i, text, lab


def split_of(i: int, use_test: bool) -> str:
    r = i % HOLD_OUT
    return "val" if r == 0 else ("test" if use_test and r == 1 else "train")


@dataclass
class StreamScan:
    """What one streaming pass over the file found (see :func:`scan`)."""

    vocabulary: Vocabulary
    labels: list[str]
    train_rows: int
    validation: LabelledTexts
    test: LabelledTexts
    lengths: list[int] = field(default_factory=list)

    def maxlen(self, q: float = 90.0, low: int = 8, high: int = 256) -> int:
        if not self.lengths:
            return low
        return int(min(max(int(np.ceil(np.percentile(self.lengths, q))), low), high))


def scan(path: str | Path, text_col: str | None, label_col: str | None, fmt: str,
         tokenizer: Any, num_words: int | None, use_test: bool = True, max_held: int = 10_000,
         chunk: int = 2_000, progress: bool = False, seed: int = 0) -> StreamScan:
    """One streaming pass: vocabulary (of the training rows), labels, held-out rows and a
    reservoir of 10,000 training lengths (start id included)."""
    counts: Counter[str] = Counter()
    labels: set[str] = set()
    held: dict[str, tuple[list[str], list[str]]] = {"val": ([], []), "test": ([], [])}
    reservoir: list[int] = []
    rng = random.Random(seed)
    n_train, seen = 0, 0
    buf: list[str] = []
    t0, last = time.perf_counter(), 0.0

    def flush() -> None:
        nonlocal n_train
        for toks in tokenizer.tokenize_many(buf):
            counts.update(toks)
            n_train += 1
            if len(reservoir) < 10_000:
                reservoir.append(len(toks) + 1)
            else:
                k = rng.randrange(n_train)
                if k < 10_000:
                    reservoir[k] = len(toks) + 1
        buf.clear()

    for i, text, lab in iter_rows(path, text_col, label_col, fmt):
        seen += 1
        labels.add(lab)
        part = split_of(i, use_test)
        if part == "train":
            buf.append(text)
            if len(buf) >= chunk:
                flush()
        elif len(held[part][0]) < max_held:
            held[part][0].append(text)
            held[part][1].append(lab)
        now = time.perf_counter() - t0
        if progress and now > 1.0 and now - last > 1.0:
            print(f"\rscanning {path}: {seen:,} rows", end="", file=sys.stderr, flush=True)
            last = now
    if buf:
        flush()
    if progress and last:
        print(f"\rscanning {path}: {seen:,} rows, done", file=sys.stderr)
    if n_train == 0:
        raise UserError(f"{path}: no training rows")
    items = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    if num_words is not None:
        items = items[: max(num_words - 3, 0)]
    vocab = Vocabulary([w for w, _ in items], [c for _, c in items], num_words=num_words)
    return StreamScan(vocab, sorted(labels), n_train,
                      LabelledTexts(*held["val"], str(path)),
                      LabelledTexts(*held["test"], str(path)), reservoir)


class StreamedBatches(torch.utils.data.IterableDataset):
    """The training rows of ``path`` as shuffled, encoded batches, re-read every epoch."""

    def __init__(self, path: str | Path, text_col: str, label_col: str, fmt: str,
                 encoder: TextEncoder, labels: list[str], targets: Any, batch_size: int,
                 use_test: bool = True, buffer: int = 10_000, seed: int = 0,
                 limit: int | None = None) -> None:
        super().__init__()
        #: at most this many training rows per epoch and worker (benchmarks), None: all
        self.limit = limit
        self.path, self.text_col, self.label_col, self.fmt = path, text_col, label_col, fmt
        self.encoder, self.index = encoder, {n: k for k, n in enumerate(labels)}
        self.targets, self.batch_size, self.use_test = targets, batch_size, use_test
        self.buffer, self.seed, self.epoch = buffer, seed, 0

    def _rows(self, worker: int, workers: int) -> Iterator[tuple[str, int]]:
        j = 0
        taken = 0
        for i, text, lab in iter_rows(self.path, self.text_col, self.label_col, self.fmt):
            if split_of(i, self.use_test) != "train":
                continue
            if self.limit is not None and taken >= self.limit:
                return
            if j % workers == worker:
                taken += 1
                if lab not in self.index:
                    raise UserError(f"{self.path}: label {lab!r} changed since the scan")
                yield text, self.index[lab]
            j += 1

    def _batch(self, rows: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.encoder.encode([t for t, _ in rows])
        return ids, self.targets(np.array([y for _, y in rows]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = random.Random(hash((self.seed, self.epoch, worker)) & 0xFFFFFFFF)
        self.epoch += 1
        pool: list[tuple[str, int]] = []
        out: list[tuple[str, int]] = []
        for row in self._rows(worker, workers):
            pool.append(row)
            if len(pool) >= self.buffer:
                k = rng.randrange(len(pool))
                pool[k], pool[-1] = pool[-1], pool[k]
                out.append(pool.pop())
                if len(out) == self.batch_size:
                    yield self._batch(out)
                    out = []
        rng.shuffle(pool)
        for row in pool:
            out.append(row)
            if len(out) == self.batch_size:
                yield self._batch(out)
                out = []
        if out:
            yield self._batch(out)
