"""Time stamps of a series as written in real files, and the stamps after its end.

Accepted, one kind per column (the kind of the first stamp decides)::

    2024-02-26, 2024-02-26 13:30[:00], 2021-05-01 00:30:00+00:00, ...Z   ISO dates/datetimes
    1991-01                                                             months  (YYYY-MM)
    1970 Q1, 1970-Q1, 1970Q1                                            quarters
    1821                                                                years   (YYYY)
    0, 1, 2 ...                                                         a plain integer index

:func:`parse` maps each stamp to an ordinal on its kind's own scale (months, quarters and
years count calendar units, so February and March are one month apart whatever their days;
datetimes are POSIX seconds), :func:`infer_step` takes the median gap, and :func:`future`
writes the next stamps in the same style (time zone kept). A stamp of another kind, an
unreadable one, or stamps that do not increase are one-line errors naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import UserError

_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_QUARTER = re.compile(r"(\d{4})\s*-?\s*[Qq]([1-4])")
_YEAR = re.compile(r"\d{4}")
_INT = re.compile(r"-?\d+")

KINDS = ("datetime", "date", "month", "quarter", "year", "index")


@dataclass
class TimeIndex:
    """Parsed stamps: ``kind``, ordinals (seconds for date/datetime), the median ``step``
    and the last stamp's text (for :func:`future`)."""

    kind: str
    ordinals: list[float]
    step: float
    last: str


def kind_of(stamp: str) -> str | None:
    """The kind of one stamp (None when it is none of them)."""
    s = stamp.strip()
    if _QUARTER.fullmatch(s):
        return "quarter"
    if _MONTH.fullmatch(s):
        return "month"
    if _YEAR.fullmatch(s):
        return "year"
    if _INT.fullmatch(s):
        return "index"
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return None
    return "date" if len(s) == 10 and d.hour == d.minute == d.second == 0 else "datetime"


def _ordinal(kind: str, s: str) -> float:
    if kind == "quarter":
        m = _QUARTER.fullmatch(s)
        if m is None:
            raise ValueError
        return int(m.group(1)) * 4 + int(m.group(2)) - 1
    if kind == "month":
        m = _MONTH.fullmatch(s)
        if m is None or not 1 <= int(m.group(2)) <= 12:
            raise ValueError
        return int(m.group(1)) * 12 + int(m.group(2)) - 1
    if kind in ("year", "index"):
        if not _INT.fullmatch(s):
            raise ValueError
        return int(s)
    d = datetime.fromisoformat(s)
    if kind == "date" and len(s) != 10:
        raise ValueError
    return d.timestamp() if d.tzinfo is not None else (d - datetime(1970, 1, 1)).total_seconds()


def parse(stamps: list[str], where: str, lines: list[int] | None = None) -> TimeIndex:
    """Parse a column of stamps (see the module docstring); ``lines`` are their line numbers
    for the error messages."""
    if not stamps:
        raise UserError(f"{where}: no time stamps")
    lines = lines or list(range(1, len(stamps) + 1))
    first = stamps[0].strip()
    kind = kind_of(first)
    if kind is None:
        raise UserError(f"{where}:{lines[0]}: {first[:30]!r} is not a time stamp I can read "
                        "(ISO date/datetime, YYYY-MM, YYYY Qn, YYYY or an integer index)")
    ords: list[float] = []
    for s, n in zip(stamps, lines, strict=True):
        s = s.strip()
        try:
            o = _ordinal(kind, s)
        except (ValueError, OverflowError):
            raise UserError(f"{where}:{n}: {s[:30]!r} is not a {kind} stamp like the first "
                            f"one ({first[:30]!r})") from None
        if ords and o <= ords[-1]:
            raise UserError(f"{where}:{n}: time stamps must increase strictly ({s[:30]} "
                            "follows an equal or later one)")
        ords.append(o)
    gaps = sorted(b - a for a, b in zip(ords, ords[1:], strict=False))
    step = gaps[len(gaps) // 2] if gaps else 1.0
    return TimeIndex(kind, ords, step, stamps[-1].strip())


def future(index: TimeIndex, n: int) -> list[str]:
    """The ``n`` stamps after the last one, one median step apart, in the column's style."""
    k, step, last = index.kind, index.step, index.ordinals[-1]
    out = []
    for i in range(1, n + 1):
        o = last + step * i
        if k == "quarter":
            out.append(f"{int(o) // 4} Q{int(o) % 4 + 1}")
        elif k == "month":
            out.append(f"{int(o) // 12:04d}-{int(o) % 12 + 1:02d}")
        elif k in ("year", "index"):
            out.append(str(int(o)))
        else:
            d = datetime.fromisoformat(index.last) + timedelta(seconds=step * i)
            out.append(d.date().isoformat() if k == "date" else d.isoformat(sep=" "))
    return out
