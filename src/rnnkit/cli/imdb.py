"""``rnnkit train imdb`` (placeholder until the IMDB issue lands)."""

from __future__ import annotations

import argparse

from ..errors import UserError


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("imdb", help="sentiment of IMDB movie reviews (not yet available)")
    p.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise UserError("rnnkit train imdb is not implemented yet")
