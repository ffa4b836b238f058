"""Loader for the NSMC (Naver sentiment movie corpus) file format.

Format of ``ratings_train.txt`` / ``ratings_test.txt``: UTF-8 text (a BOM is allowed), one
review per line, three tab-separated fields and a header line::

    id<TAB>document<TAB>label
    9976970<TAB>아 더빙.. 진짜 짜증나네요 목소리<TAB>0

Contract of :func:`load_nsmc`:

* the header ``id document label`` is skipped when present (it is optional);
* blank lines are ignored;
* ``id<TAB><TAB>label`` or a document of only spaces is an *empty* document, and a line
  ``id<TAB>label`` (two fields) a *missing* document: both are dropped and counted;
* ``label`` must be an integer (NSMC: 0 negative, 1 positive) and ``id`` non-empty; any other
  line (wrong number of fields, bad label) raises :class:`rnnkit.errors.UserError` naming the
  file and the line number;
* with ``drop_duplicates`` a document equal (after stripping spaces) to an earlier one is
  dropped and counted (the first occurrence is kept, whatever its label); duplicates whose
  labels disagree are counted separately in ``conflicting_duplicates``.

Documents are returned stripped of surrounding spaces, otherwise unchanged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["NSMC_HEADER", "NSMC_LABELS", "NSMCStats", "load_nsmc", "read_nsmc_lines",
           "looks_like_nsmc"]

NSMC_HEADER = ("id", "document", "label")


@dataclass
class NSMCStats:
    """Counts from one :func:`load_nsmc` call."""

    lines: int = 0                   #: data lines read (header and blank lines excluded)
    kept: int = 0                    #: reviews returned
    empty: int = 0                   #: dropped: document empty or only spaces
    missing: int = 0                 #: dropped: no document field at all (``id<TAB>label``)
    duplicates: int = 0              #: dropped: same document as an earlier line
    conflicting_duplicates: int = 0  #: of those, how many had a different label

    @property
    def dropped(self) -> int:
        return self.empty + self.missing + self.duplicates

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}

    def summary(self) -> str:
        """One line for the CLI."""
        s = (f"{self.kept} reviews kept of {self.lines} lines; dropped {self.empty} empty, "
             f"{self.missing} missing")
        if self.duplicates or self.conflicting_duplicates:
            s += (f", {self.duplicates} duplicate ({self.conflicting_duplicates} with a "
                  "different label)")
        return s


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"NSMC file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None


def read_nsmc_lines(path: str | os.PathLike) -> list[tuple[int, str, str, str | None]]:
    """``(line_number, id, label, document or None)`` for each data line, validated."""
    path = Path(path)
    rows: list[tuple[int, str, str, str | None]] = []
    for lineno, raw in enumerate(_read_text(path).split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if lineno == 1 and tuple(f.strip().lower() for f in fields) == NSMC_HEADER:
            continue
        doc: str | None
        if len(fields) == 3:
            rid, doc, label = fields
        elif len(fields) == 2:
            rid, label = fields
            doc = None
        else:
            raise UserError(f"{path}:{lineno}: expected 3 tab-separated fields "
                            f"(id, document, label), found {len(fields)}")
        rid, label = rid.strip(), label.strip()
        if not rid:
            raise UserError(f"{path}:{lineno}: empty id")
        try:
            int(label)
        except ValueError:
            raise UserError(f"{path}:{lineno}: label must be an integer (0 negative, "
                            f"1 positive), got {label[:30]!r}") from None
        rows.append((lineno, rid, label, doc))
    return rows


def load_nsmc(path: str | os.PathLike, drop_duplicates: bool = False,
              ) -> tuple[list[str], list[int], NSMCStats]:
    """Reviews and integer labels of an NSMC-format file, and what was dropped (see module)."""
    stats = NSMCStats()
    texts: list[str] = []
    labels: list[int] = []
    first_label: dict[str, int] = {}
    for _, _, label_s, doc in read_nsmc_lines(path):
        stats.lines += 1
        label = int(label_s)
        if doc is None:
            stats.missing += 1
            continue
        doc = doc.strip()
        if not doc:
            stats.empty += 1
            continue
        if drop_duplicates:
            if doc in first_label:
                stats.duplicates += 1
                if first_label[doc] != label:
                    stats.conflicting_duplicates += 1
                continue
            first_label[doc] = label
        texts.append(doc)
        labels.append(label)
    stats.kept = len(texts)
    if not texts:
        raise UserError(f"{path}: no reviews (after dropping {stats.dropped} lines)")
    return texts, labels, stats


#: NSMC's integer labels as class names (other integers keep their digits)
NSMC_LABELS = {0: "negative", 1: "positive"}


def looks_like_nsmc(first_line: str) -> bool:
    """True when ``first_line`` is the NSMC header ``id<TAB>document<TAB>label``."""
    fields = first_line.lstrip("\ufeff").rstrip("\r\n").split("\t")
    return tuple(f.strip().lower() for f in fields) == NSMC_HEADER
