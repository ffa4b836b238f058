"""The header-then-data layout shared by the sktime/aeon ``.ts`` and the Monash ``.tsf``
formats: ``#`` comment lines, ``@key value`` header lines, ``@data``, then one record per
line. :func:`read_at_file` splits a file into the two parts, with line numbers for errors;
each format reads its own keys and records."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path`` (a BOM dropped); one-line UserErrors otherwise."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_at_file(path: Path) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """``(header, records)``: header lines as ``(line, lower-case key, value)`` and the
    non-blank lines after ``@data`` as ``(line, text)``."""
    header: list[tuple[int, str, str]] = []
    records: list[tuple[int, str]] = []
    in_data = False
    for n, raw in enumerate(read_text_file(path).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if in_data:
            records.append((n, line))
            continue
        if not line.startswith("@"):
            raise UserError(f"{path}:{n}: expected a @ header line or @data")
        key, _, value = line[1:].partition(" ")
        if key.lower() == "data":
            in_data = True
        else:
            header.append((n, key.lower(), value.strip()))
    if not in_data:
        raise UserError(f"{path}: no @data line")
    return header, records
