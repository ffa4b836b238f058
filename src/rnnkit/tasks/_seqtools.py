"""Small helpers shared by the sequence tasks (seq2seq, generation, siamese).

* :func:`read_lines` -- a UTF-8 text file as ``(line_number, line)`` pairs; a missing file or
  bad bytes raise :class:`~rnnkit.errors.UserError` naming the file (and the line).
* :func:`char_vocabulary` / :func:`word_tokens` -- the character and word tokenizations used
  by these tasks, and the reserved end-of-sequence token ``<end>``: it is stored as the first
  word of a :class:`rnnkit.text.Vocabulary`, so its id is ``INDEX_FROM`` (3) while the shared
  convention 0 pad, 1 start, 2 unknown is unchanged.
* :func:`train` -- how these tasks call the shared trainer :func:`rnnkit.train.fit`: Keras
  Adam on a task loss ``loss(outputs, targets)``, gradient clipping by global norm, batches
  from :class:`Batches` (re-drawn every epoch from a seeded generator), optional validation
  (``val_loss``) and early stopping on it with the best weights restored::

      for epoch: for (inputs, targets) in make_batches(rng): theta <- Adam(theta, grad loss)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..callbacks import Callback
from ..errors import UserError
from ..text import INDEX_FROM, PAD, Vocabulary
from ..train import seed_everything

if TYPE_CHECKING:
    from ..backup import Backup

__all__ = ["END", "END_TOKEN", "Batches", "EpochValue", "train", "token_cross_entropy",
           "seed_everything", "read_lines", "tokenize", "detokenize", "word_tokens",
           "vocabulary_with_end", "check_task", "check_end_vocabulary", "minibatches"]

END_TOKEN = "<end>"
#: id of the end-of-sequence token in vocabularies built by :func:`vocabulary_with_end`
END = INDEX_FROM

_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


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


class Batches:
    """Re-iterable ``(inputs, targets)`` batches for :func:`rnnkit.train.fit`: every iteration
    (epoch) calls ``make(rng)`` with one generator seeded once from ``seed``, so each epoch
    draws a new order (and any fresh random negatives) and the run is reproducible. ``steps``
    (an estimate is fine) is only used by the progress bar."""

    def __init__(self, make: Callable[[np.random.Generator], Iterable[Any]], seed: int,
                 steps: int) -> None:
        self.make, self.rng, self.steps = make, np.random.default_rng(seed), max(int(steps), 1)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make(self.rng))

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, so a resumed run draws the same batches."""
        return dict(self.rng.bit_generator.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def __len__(self) -> int:
        return self.steps


class EpochValue(Callback):
    """Adds ``logs[name] = fn()`` (model in eval mode, no gradients) at the end of each epoch;
    list it before the callbacks that read ``name`` (History, EarlyStopping)."""

    def __init__(self, name: str, fn: Callable[[], float]) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        assert self.model is not None and logs is not None
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            logs[self.name] = float(self.fn())
        self.model.train(was)


def train(model: nn.Module, batches: Batches, loss: Callable[[Any, Any], Tensor], *,
          epochs: int, lr: float = 1e-3, clip_norm: float | None = 5.0, seed: int = 0,
          validation_data: Iterable[Any] | None = None,
          validation_fn: Callable[[], float] | None = None, patience: int | None = None,
          verbose: int = 0, backup: Backup | None = None,
          score: tuple[str, Callable[[], float]] | None = None) -> dict[str, list[float]]:
    """Train ``model`` with :func:`rnnkit.train.fit` (Adam, ``clip_norm``); returns the
    per-epoch history ``{"loss": [...], "val_loss": [...]}``.

    Validation loss comes from ``validation_data`` (batches scored with ``loss``) or from
    ``validation_fn()`` (e.g. a log perplexity). ``patience``: stop once ``val_loss`` has not
    improved for that many epochs and restore the weights of the best epoch (needs
    validation). ``score=(name, fn)``: a higher-is-better validation score ``fn()`` logged
    as ``name`` each epoch (e.g. ``val_bleu``) that selects the model instead of
    ``val_loss``: the weights of its best epoch are restored at the end, and ``patience``
    counts epochs without a better score. UserError when the loss becomes NaN or infinite.
    ``backup``: see :func:`rnnkit.train.fit`.
    """
    from ..callbacks import EarlyStopping, History, TerminateOnNaN
    from ..train import fit

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    has_val = validation_data is not None or validation_fn is not None
    if patience is not None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not has_val:
            raise UserError("early stopping (patience) needs validation data")
    history = History()
    cbs: list[Callback] = [TerminateOnNaN()]
    if validation_fn is not None:
        cbs.append(EpochValue("val_loss", validation_fn))
    if score is not None:
        cbs.append(EpochValue(*score))
    cbs.append(history)
    if score is not None:  # select by the score: restore its best epoch even without patience
        cbs.append(EarlyStopping(score[0], patience=patience or epochs, mode="max",
                                 restore_best_weights=True, verbose=verbose))
    elif patience is not None:
        cbs.append(EarlyStopping("val_loss", patience=patience, restore_best_weights=True,
                                 verbose=verbose))
    fit(model, train_data=batches, validation_data=validation_data, loss=loss, metrics=None,
        optimizer="adam", lr=lr, epochs=epochs, clip_norm=clip_norm, seed=seed,
        callbacks=cbs, verbose=verbose, backup=backup)
    out = history.history
    if not all(math.isfinite(v) for v in out.get("loss", [])):
        raise UserError(f"training diverged (loss {out['loss'][-1]} in epoch "
                        f"{len(out['loss'])}); try a lower learning rate")
    return out


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the non-padding target tokens (``targets != 0``)."""
    if isinstance(logits, tuple):  # (logits, state) from a language model
        logits = logits[0]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       targets.reshape(-1), ignore_index=PAD)


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(n)`` (shuffled when ``rng`` is given)."""
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        yield idx[i:i + batch_size]


def safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
