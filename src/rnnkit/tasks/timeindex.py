"""Time stamps of a series as written in real files, and the stamps after its end.

Accepted, one kind per column (the kind of the first stamp decides)::

    2024-02-26, 2024-02-26 13:30[:00], 2021-05-01 00:30:00+00:00, ...Z   ISO dates/datetimes
    1991-01                                                             months  (YYYY-MM)
    1970 Q1, 1970-Q1, 1970Q1                                            quarters
    1821                                                                years   (YYYY)
    0, 1, 2 ...                                                         a plain integer index

and, rewritten to those first by :func:`normalize`: dates with the year last and ``/``, ``.``
or ``-`` between the fields (``31.01.2020``, ``1/31/2020``, ``31-01-2020 13:30``), the
order of day and month taken from the column (a first field above 12 makes it day-first, a
second one month-first; when neither occurs ``.`` reads day-first and ``/`` or ``-``
month-first, and the index's ``note`` says so), ``2020/01/31``, and month names
(``Jan 2020``, ``January 2020``, ``Jan-2020``, ``2020 Jan``).

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

_YEAR_LAST = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?")
_SLASHED = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})(?:[ T](\d{1,2}:\d{2}(?::\d{2})?))?")
_MONTH_NAMES = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_NAME_YEAR = re.compile(r"([A-Za-z]{3,9})\.?[ -]?(\d{4})")
_YEAR_NAME = re.compile(r"(\d{4})[ -]([A-Za-z]{3,9})")
#: the spellings :func:`normalize` rewrites, tried in this order on a column's first stamp
_WRITTEN = (_YEAR_LAST, _SLASHED, _NAME_YEAR, _YEAR_NAME)


@dataclass
class TimeIndex:
    """Parsed stamps: ``kind``, ordinals (seconds for date/datetime), the median ``step``
    and the last stamp's text (for :func:`future`)."""

    kind: str
    ordinals: list[float]
    step: float
    last: str
    #: what :func:`normalize` assumed about the column's spelling, when it had to
    note: str | None = None


def _month_number(name: str) -> int | None:
    n = name.lower()
    m = _MONTH_NAMES.get(n[:3])
    full = ("january", "february", "march", "april", "may", "june", "july", "august",
            "september", "october", "november", "december")
    return m if m is not None and (len(n) == 3 or n == full[m - 1] or n == full[m - 1][:4]) \
        else None


def _iso(year: str, month: str | int, day: str | int, clock: str | None) -> str:
    """``YYYY-MM-DD[ HH:MM[:SS]]``."""
    text = f"{year}-{int(month):02d}-{int(day):02d}"
    if clock:
        hour, rest = clock.split(":", 1)
        text += f" {int(hour):02d}:{rest}"
    return text


def _written_match(pattern: re.Pattern[str], stamp: str) -> re.Match[str] | None:
    """``stamp`` matched by one of :data:`_WRITTEN` (a month name must be one)."""
    m = pattern.fullmatch(stamp.strip())
    if m is not None and pattern is not _YEAR_LAST and pattern is not _SLASHED \
            and _month_number(m.group(1 if pattern is _NAME_YEAR else 2)) is None:
        return None
    return m


def normalize(stamps: list[str]) -> tuple[list[str], str | None, int | None]:
    """The column's stamps in an ISO spelling when they are written day-first, month-first,
    with slashes or with month names (see the module docstring), with a note when the order
    of day and month was a guess, and None; other columns come back unchanged, with the
    index of the first stamp not written like the first one when the first is one of these
    spellings (else None)."""
    first = stamps[0].strip() if stamps else ""
    if not first or kind_of(first) is not None:
        return stamps, None, None
    pattern = next((p for p in _WRITTEN if p.fullmatch(first)), None)
    if pattern is None:
        return stamps, None, None
    found = [_written_match(pattern, s) for s in stamps]
    bad = next((i for i, m in enumerate(found) if m is None), None)
    if bad is not None:
        return stamps, None, bad
    ms = [m for m in found if m is not None]
    if pattern is _SLASHED:
        return [_iso(m.group(1), m.group(2), m.group(3), m.group(4)) for m in ms], None, None
    if pattern is not _YEAR_LAST:  # month names
        yi, ni = (2, 1) if pattern is _NAME_YEAR else (1, 2)
        return [f"{m.group(yi)}-{_month_number(m.group(ni)):02d}" for m in ms], None, None
    a = max(int(m.group(1)) for m in ms)
    b = max(int(m.group(3)) for m in ms)
    day_first = a > 12 or (b <= 12 and ms[0].group(2) == ".")
    note = None
    if a <= 12 and b <= 12:
        note = (f"no day or month above 12 in {first!r} and the rest of the column: read as "
                f"{'day.month.year' if day_first else 'month/day/year'}")
    return [_iso(m.group(4), m.group(3) if day_first else m.group(1),
                 m.group(1) if day_first else m.group(3), m.group(5)) for m in ms], note, None


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
    written = stamps
    stamps, note, bad = normalize(stamps)
    first = written[0].strip()
    if bad:  # written like a date, but not every stamp is
        raise UserError(f"{where}:{lines[bad]}: {written[bad].strip()[:30]!r} is not written "
                        f"like the first time stamp ({first[:30]!r})")
    kind = kind_of(stamps[0].strip())
    if kind is None:
        raise UserError(f"{where}:{lines[0]}: {first[:30]!r} is not a time stamp I can read "
                        "(ISO date/datetime, YYYY-MM, YYYY Qn, YYYY, an integer index, "
                        "31.01.2020, 1/31/2020, Jan 2020)")
    ords: list[float] = []
    for s, w, n in zip(stamps, written, lines, strict=True):
        s, w = s.strip(), w.strip()
        try:
            o = _ordinal(kind, s)
        except (ValueError, OverflowError):
            raise UserError(f"{where}:{n}: {w[:30]!r} is not a {kind} stamp like the first "
                            f"one ({first[:30]!r})") from None
        if ords and o <= ords[-1]:
            raise UserError(f"{where}:{n}: time stamps must increase strictly ({w[:30]} "
                            "follows an equal or later one)")
        ords.append(o)
    gaps = sorted(b - a for a, b in zip(ords, ords[1:], strict=False))
    step = gaps[len(gaps) // 2] if gaps else 1.0
    return TimeIndex(kind, ords, step, stamps[-1].strip(), note)


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
