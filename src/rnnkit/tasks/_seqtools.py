"""Small helpers shared by the sequence tasks (seq2seq, generation, siamese).

* :func:`read_lines` -- a UTF-8 text file as ``(line_number, line)`` pairs; a missing file or
  bad bytes raise :class:`~rnnkit.errors.UserError` naming the file (and the line).
* :func:`char_vocabulary` / :func:`word_tokens` -- the character and word tokenizations used
  by these tasks, and the reserved end-of-sequence token ``<end>``: it is stored as the first
  word of a :class:`rnnkit.text.Vocabulary`, so its id is ``INDEX_FROM`` (3) while the shared
  convention 0 pad, 1 start, 2 unknown is unchanged.
* :func:`fit_loop` -- the minimal training loop these tasks use: Adam on
  ``loss_fn(batch)``, gradient clipping by global norm, per-epoch mean loss and optional
  validation loss::

      for epoch: for batch in batches(rng): theta <- Adam(theta, grad loss(batch))
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..layers import clip_gradients
from ..text import INDEX_FROM, Vocabulary

END_TOKEN = "<end>"
#: id of the end-of-sequence token in vocabularies built by :func:`vocabulary_with_end`
END = INDEX_FROM

_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; returns a numpy generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def read_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of a UTF-8 file, 1-based, newline stripped.

    UserError when the file is missing or a line is not valid UTF-8 (naming file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {path}")
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{n}: not UTF-8 text (byte {e.start} of the line)"
                                ) from None
            if n == 1:
                line = line.lstrip("\ufeff")
            yield n, line.rstrip("\r\n")


def word_tokens(text: str, lowercase: bool = True) -> list[str]:
    """Words (with inner apostrophes, e.g. ``don't``) and single punctuation marks."""
    return _WORD_RE.findall(text.lower() if lowercase else text)


def tokenize(text: str, level: str, lowercase: bool = True) -> list[str]:
    """``level="char"``: the characters; ``"word"``: :func:`word_tokens`."""
    if level == "char":
        return list(text.lower() if lowercase else text)
    if level == "word":
        return word_tokens(text, lowercase)
    raise ValueError(f"level must be 'char' or 'word', got {level!r}")


def detokenize(tokens: Sequence[str], level: str) -> str:
    return "".join(tokens) if level == "char" else " ".join(tokens)


def vocabulary_with_end(token_lists: Iterable[Sequence[str]], num_words: int | None = None
                        ) -> Vocabulary:
    """A :class:`Vocabulary` whose first word is ``<end>`` (id 3), then tokens by frequency."""
    base = Vocabulary.fit(token_lists, None if num_words is None else num_words - 1)
    words = [w for w in base.words if w != END_TOKEN]
    counts = [c for w, c in zip(base.words, base.counts or [], strict=False) if w != END_TOKEN]
    vocab = Vocabulary([END_TOKEN, *words], [0, *counts] if counts else None, num_words=num_words)
    return vocab


def check_task(model_dir: str | Path, task: str) -> None:
    """UserError unless ``model_dir/config.json`` records ``task`` (checked before the model
    is rebuilt, so the message names the task rather than an unknown model type)."""
    from ..io import read_config

    found = read_config(model_dir).get("task")
    if found != task:
        raise UserError(f"{model_dir} holds a {found!r} model, not a {task!r} model")


def check_end_vocabulary(vocab: Vocabulary, where: str) -> None:
    if not vocab.words or vocab.words[0] != END_TOKEN:
        raise UserError(f"{where}: vocabulary does not start with {END_TOKEN!r}")


def fit_loop(model: nn.Module, batches: Callable[[np.random.Generator], Iterable[Any]],
             loss_fn: Callable[[Any], Tensor], *, epochs: int, lr: float = 1e-3,
             clip_norm: float | None = 5.0, seed: int = 0,
             val_loss: Callable[[], float] | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Train ``model`` with Adam; returns ``{"loss": [...], "val_loss": [...]}`` per epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": []}
    if val_loss is not None:
        history["val_loss"] = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for batch in batches(rng):
            opt.zero_grad()
            loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}")
            loss.backward()
            if clip_norm is not None:
                clip_gradients(model.parameters(), max_norm=clip_norm)
            opt.step()
            total += float(loss.detach())
            n += 1
        history["loss"].append(total / max(n, 1))
        msg = f"epoch {epoch}/{epochs} loss {history['loss'][-1]:.4f}"
        if val_loss is not None:
            model.eval()
            with torch.no_grad():
                history["val_loss"].append(float(val_loss()))
            msg += f" val_loss {history['val_loss'][-1]:.4f}"
        if log is not None:
            log(msg)
    model.eval()
    return history


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(n)`` (shuffled when ``rng`` is given)."""
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield idx[i:i + batch_size]


def safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
