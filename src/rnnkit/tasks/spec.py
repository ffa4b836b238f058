"""Task specs: small dataclasses of hyper-parameters, saved in a model's ``config.json``.

:class:`Spec` gives every task's spec the same JSON round trip and the same one-line
:class:`~rnnkit.errors.UserError` for a value out of range (named as its CLI flag).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any, Self

from ..errors import UserError
from ..io import same_kind


def _flag(name: str) -> str:
    return name.replace("_", "-")


class Spec:
    """Mixin for ``@dataclass`` specs: ``to_dict``/``from_dict`` and range checks."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from a saved dict, ignoring keys this version does not know; a value of the
        wrong type or range (e.g. from a tampered config) is a one-line UserError."""
        if not isinstance(d, dict):
            raise UserError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in d and not same_kind(f.default, d[f.name]):
                raise UserError(f"{cls.__name__}: {_flag(f.name)} must be a "
                                f"{type(f.default).__name__}, got {d[f.name]!r:.40}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{cls.__name__}: bad saved value ({e})") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def check_choice(self, name: str, choices: Iterable[str]) -> None:
        v, choices = getattr(self, name), sorted(choices)
        if v not in choices:
            raise UserError(f"{_flag(name)} must be one of {choices}, got {v!r}")

    def check_positive_ints(self, *names: str) -> None:
        for name in names:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise UserError(f"{_flag(name)} must be a positive integer, got {v!r}")

    def check_rates(self, *names: str) -> None:
        """Dropout-like rates must lie in [0, 1)."""
        for name in names:
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UserError(f"{_flag(name)} must be in [0, 1), got {v}")

    def check_num_words(self, name: str = "num_words") -> None:
        v = getattr(self, name)
        if v is not None and v < 4:
            raise UserError(f"{_flag(name)} must be at least 4 (3 ids are reserved), got {v}")
