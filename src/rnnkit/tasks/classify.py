"""Many-to-one text classification: a review in, a label out.

The model (the seed's, generalised)::

    ids  = TextEncoder(text)                     # (maxlen,) token ids, 0 = padding
    e_t  = Embedding(ids)_t  or  onehot(ids_t)   # (maxlen, embed_dim | num_words)
    h_T  = RNN_L(... RNN_1(e))                   # SimpleRNN/LSTM/GRU, maybe bidirectional
    p    = sigmoid(h_T w + b)                    # two classes: P(label = labels[1])
    p    = softmax(h_T W + b)                    # more classes
    p_k  = sigmoid(h_T W + b)_k                  # multi-label: P(label k is one of the text's)

:class:`TextClassifier` bundles the model with its :class:`~rnnkit.text.TextEncoder` and the
label names, trains it (early stopping, best-only checkpoints), predicts raw texts and saves
everything to one directory (``weights.safetensors``, ``config.json``, ``text.json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .. import io
from ..callbacks import stop_and_checkpoint
from ..errors import UserError
from ..layers import Dense, Embedding, OneHot, Sequential
from ..metrics import precision_recall_f1
from ..recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from ..text import TextEncoder
from ..train import evaluate, fit, predict
from .spec import Spec

if TYPE_CHECKING:
    from ..backup import Backup

RNN_LAYERS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}


@dataclass
class ClassifierSpec(Spec):
    """Shape of a recurrent text classifier (defaults: the seed's IMDB model)."""

    cell: str = "simple"
    encoding: str = "embedding"
    num_words: int = 500
    embed_dim: int = 16
    units: int = 8
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    mask: bool = False
    maxlen: int = 100

    def __post_init__(self) -> None:
        self.check_choice("cell", RNN_LAYERS)
        self.check_choice("encoding", ("onehot", "embedding"))
        self.check_positive_ints("num_words", "embed_dim", "units", "layers", "maxlen")
        self.check_num_words()
        self.check_rates("dropout", "recurrent_dropout")


def build_model(spec: ClassifierSpec, num_classes: int = 2, multi_label: bool = False
                ) -> Sequential:
    """The Sequential model described by ``spec`` (see the module docstring)."""
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 {'labels' if multi_label else 'classes'}"
                        f", got {num_classes}")
    layers: list[nn.Module] = [
        Embedding(spec.num_words, spec.embed_dim, mask_zero=spec.mask)
        if spec.encoding == "embedding" else OneHot(spec.num_words, mask_zero=spec.mask)
    ]
    for i in range(spec.layers):
        rnn = RNN_LAYERS[spec.cell](spec.units, return_sequences=i < spec.layers - 1,
                                    dropout=spec.dropout,
                                    recurrent_dropout=spec.recurrent_dropout)
        layers.append(Bidirectional(rnn) if spec.bidirectional else rnn)
    if multi_label:
        layers.append(Dense(num_classes, "sigmoid"))
    else:
        layers.append(Dense(1, "sigmoid") if num_classes == 2 else
                      Dense(num_classes, "softmax"))
    return Sequential(*layers, input_shape=(spec.maxlen,))


class TextClassifier:
    """A text classifier ready to train, predict raw texts, and save/load itself."""

    def __init__(self, model: Sequential, encoder: TextEncoder, labels: list[str],
                 spec: ClassifierSpec, task: str = "text", multi_label: bool = False):
        self.model, self.encoder, self.labels, self.spec, self.task = (
            model, encoder, list(labels), spec, task)
        self.multi_label = bool(multi_label)
        #: multi-label: the probability at or above which each label is predicted (0.5 until
        #: :meth:`calibrate_thresholds` chooses them on validation data)
        self.thresholds: list[float] = [0.5] * len(self.labels)
        self.train_ids: torch.Tensor | None = None  # set by create()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, spec: ClassifierSpec, train_texts: list[str], labels: list[str],
               tokenizer: str | Any = "basic", padding: str = "pre", truncating: str = "pre",
               task: str = "text", auto_maxlen: tuple[float, int, int] | None = None,
               multi_label: bool = False) -> TextClassifier:
        """Fit the text encoder on ``train_texts`` and build an untrained model.

        ``auto_maxlen=(q, low, high)``: ``spec.maxlen`` is replaced by the ``q``-th
        percentile of the training texts' lengths, clipped to ``[low, high]`` (see
        :meth:`TextEncoder.fit_encode`). The encoded training texts are kept in
        ``train_ids`` (tokenized once)."""
        encoder = TextEncoder(tokenizer, maxlen=spec.maxlen, padding=padding,
                              truncating=truncating)
        train_ids = encoder.fit_encode(train_texts, num_words=spec.num_words,
                                       auto_maxlen=auto_maxlen)
        if auto_maxlen is not None:
            assert encoder.maxlen is not None
            spec = replace(spec, maxlen=encoder.maxlen)
        clf = cls(build_model(spec, len(labels), multi_label), encoder, labels, spec, task,
                  multi_label)
        clf.train_ids = train_ids
        return clf

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2 and not self.multi_label

    @property
    def loss(self) -> str:
        return "binary_crossentropy" if self.binary or self.multi_label \
            else "sparse_categorical_crossentropy"

    def targets(self, y: list[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class indices -> the tensor the loss expects ((n, 1) floats when binary); for a
        multi-label classifier ``(n, K)`` 0/1 targets, returned as floats."""
        if self.multi_label:
            t = torch.as_tensor(np.asarray(y, dtype=np.float32))
            if t.dim() != 2 or t.shape[1] != len(self.labels) or bool(((t != 0) & (t != 1)).any()):
                raise UserError(f"multi-label targets must be (n, {len(self.labels)}) 0/1")
            return t
        y = torch.as_tensor(np.asarray(y)).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.labels)):
            raise UserError(f"labels must be class indices in [0, {len(self.labels)})")
        return y.float().unsqueeze(-1) if self.binary else y

    # -- training --------------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y, *, validation_data=None, optimizer: str = "rmsprop",
            lr: float = 1e-4, batch_size: int = 64, epochs: int = 100, patience: int = 3,
            seed: int | None = 42, out: str | Path | None = None, clip_norm: float | None = None,
            verbose: int = 1, backup: Backup | None = None):
        """Train on encoded ids ``x`` and class indices ``y``; returns the History.

        Early stopping on validation loss restores the best epoch's weights; with ``out``,
        every improvement is checkpointed there (model, text encoder, labels). ``backup``: see
        :func:`rnnkit.train.fit` (resumable runs)."""
        callbacks = stop_and_checkpoint(validation_data is not None, patience, out, self.save)
        val = None
        if validation_data is not None:
            val = (validation_data[0], self.targets(validation_data[1]))
        start = time.perf_counter()
        history = fit(self.model, x, self.targets(y), validation_data=val, loss=self.loss,
                      metrics=("accuracy",), optimizer=optimizer, lr=lr, batch_size=batch_size,
                      epochs=epochs, callbacks=callbacks, seed=seed, clip_norm=clip_norm,
                      verbose=verbose, backup=backup)
        self.train_seconds = time.perf_counter() - start
        return history

    def fit_batches(self, batches: Any, *, validation_data=None, optimizer: str = "adam",
                    lr: float = 3e-3, epochs: int = 20, patience: int = 3,
                    seed: int | None = 42, out: str | Path | None = None,
                    clip_norm: float | None = None, verbose: int = 1,
                    backup: Backup | None = None):
        """:meth:`fit` on a re-iterable of ``(ids, targets)`` batches made by the caller (a
        ``DataLoader`` over data that does not fit in memory, see
        :mod:`rnnkit.tasks.textstream`); ``validation_data`` as in :meth:`fit`."""
        callbacks = stop_and_checkpoint(validation_data is not None, patience, out, self.save)
        val = None
        if validation_data is not None:
            val = (validation_data[0], self.targets(validation_data[1]))
        start = time.perf_counter()
        history = fit(self.model, train_data=batches, validation_data=val, loss=self.loss,
                      metrics=("accuracy",), optimizer=optimizer, lr=lr, epochs=epochs,
                      callbacks=callbacks, seed=seed, clip_norm=clip_norm, verbose=verbose,
                      backup=backup)
        self.train_seconds = time.perf_counter() - start
        return history

    def evaluate_ids(self, x: torch.Tensor, y, batch_size: int = 256) -> dict[str, float]:
        return evaluate(self.model, x, self.targets(y), loss=self.loss, metrics=("accuracy",),
                        batch_size=batch_size)

    # -- prediction ------------------------------------------------------------------------
    def predict_proba(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """``(n, num_classes)`` class probabilities for raw texts (multi-label: each label's
        own probability)."""
        out = predict(self.model, self.encoder.encode(texts), batch_size=batch_size)
        p = out.detach().cpu().double().numpy()
        return np.concatenate([1 - p, p], axis=1) if self.binary else p

    def calibrate_thresholds(self, x: torch.Tensor, y: np.ndarray) -> list[float]:
        """Multi-label: each label's threshold chosen on validation ids ``x`` and ``(n, K)``
        0/1 targets ``y`` as the one of 0.05, 0.10, ..., 0.95 with the best F1 for that label
        (ties: the one nearest 0.5; 0.5 for a label without validation examples). One
        independent sigmoid per label rarely puts a rare label above 0.5; this moves its
        threshold to where its F1 is best."""
        probs = predict(self.model, x, batch_size=256).detach().cpu().double().numpy()
        self.thresholds = best_thresholds(probs, np.asarray(y))
        return self.thresholds

    def predict(self, texts: list[str], threshold: float | None = None
                ) -> list[dict[str, Any]]:
        """For each text: the predicted label, its probability, and all class probabilities.
        Multi-label: ``labels``, those whose probability reaches their threshold
        (:attr:`thresholds`, or ``threshold`` for all when given; ``label`` is them joined by
        ``|``, empty for none; ``probability`` the highest one)."""
        cut = self.thresholds if threshold is None else [threshold] * len(self.labels)
        for i, t in enumerate(texts, 1):
            if not isinstance(t, str) or not t.strip():
                raise UserError(f"text {i} is empty")
        probs = self.predict_proba(texts)
        result = []
        for row in probs:
            if self.multi_label:
                chosen = [lab for lab, p, c in zip(self.labels, row, cut, strict=True) if p >= c]
                result.append({"label": "|".join(chosen), "labels": chosen,
                               "probability": round(float(row.max()), 6),
                               "probabilities": {lab: round(float(p), 6) for lab, p in
                                                 zip(self.labels, row, strict=True)}})
                continue
            k = int(row.argmax())
            result.append({"label": self.labels[k], "probability": round(float(row[k]), 6),
                           "probabilities": {lab: round(float(p), 6)
                                             for lab, p in zip(self.labels, row, strict=True)}})
        return result

    # -- persistence -----------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        """Weights, config (spec, labels, task) and the text encoder into ``model_dir``."""
        model_dir = Path(model_dir)
        self.encoder.save(model_dir)
        io.save_model(model_dir, self.model, task=self.task,
                      extra={"labels": self.labels, "classifier": self.spec.to_dict(),
                             "multi_label": self.multi_label,
                             **({"thresholds": self.thresholds} if self.multi_label else {})})
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> TextClassifier:
        encoder = TextEncoder.load(model_dir)
        model, cfg = io.load_model(model_dir, device=device)
        try:
            labels = list(cfg["labels"])
            spec = ClassifierSpec.from_dict(cfg["classifier"])
            multi = cfg.get("multi_label", False)
            if not isinstance(multi, bool):
                raise ValueError(f"multi_label must be true or false, got {multi!r:.40}")
            cuts = cfg.get("thresholds", [0.5] * len(labels)) if multi else None
            if multi and (not isinstance(cuts, list) or len(cuts) != len(labels) or not all(
                    isinstance(c, int | float) and not isinstance(c, bool) and 0 < c < 1
                    for c in cuts)):
                raise ValueError(f"thresholds must be {len(labels)} numbers in (0, 1), got "
                                 f"{cuts!r:.60}")
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{model_dir}: config.json is not a text classifier's ({e})") from None
        _check_consistent(model_dir, model, encoder, labels, multi)
        clf = cls(model, encoder, labels, spec, cfg.get("task", "text"), multi)
        if cuts is not None:
            clf.thresholds = [float(c) for c in cuts]
        return clf


def best_thresholds(probs: np.ndarray, y: np.ndarray) -> list[float]:
    """Per column ``k``: the threshold of 0.05, 0.10, ..., 0.95 whose predictions
    ``probs[:, k] >= t`` have the best F1 against ``y[:, k]`` (ties: nearest 0.5; 0.5 when
    the column has no positive)."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    out = []
    for k in range(y.shape[1]):
        pos = y[:, k] > 0.5
        if not pos.any():
            out.append(0.5)
            continue
        best, best_t = -1.0, 0.5
        for t in sorted(grid, key=lambda v: abs(v - 0.5)):
            f1 = float(precision_recall_f1(pos, probs[:, k] >= t, 2)["f1"][1])
            if f1 > best + 1e-12:
                best, best_t = f1, float(t)
        out.append(best_t)
    return out


def _check_consistent(model_dir: str | Path, model: nn.Module, encoder: TextEncoder,
                      labels: list, multi_label: bool = False) -> None:
    """UserError unless the saved labels, the model's head and input and the vocabulary fit
    together (a directory whose parts disagree would predict silently wrong)."""
    where = f"{model_dir}/config.json"
    if (len(labels) < 2 or not all(isinstance(x, str) for x in labels)
            or len(set(labels)) != len(labels)):
        raise UserError(f"{where}: labels must be at least 2 distinct strings, got "
                        f"{labels!r:.80}")
    if not isinstance(model, Sequential) or not len(model):
        raise UserError(f"{where}: the model is not a text classifier")
    head = model[-1]
    want = 1 if len(labels) == 2 and not multi_label else len(labels)
    if multi_label and getattr(head, "activation", None) != "sigmoid":
        raise UserError(f"{where}: a multi-label classifier needs a sigmoid output, the model "
                        f"has {getattr(head, 'activation', '?')!r}")
    if getattr(head, "units", None) != want:
        raise UserError(f"{where}: {len(labels)} labels need an output of {want} unit(s), the "
                        f"model has {getattr(head, 'units', '?')}")
    try:
        with torch.no_grad():
            shape = tuple(model(torch.ones((1, 1), dtype=torch.long)).shape)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise UserError(f"{where}: the model cannot run ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if shape != (1, want):
        raise UserError(f"{where}: the model gives outputs of shape {shape} for one text, a "
                        f"classifier of {len(labels)} labels needs (1, {want})")
    first = model[0]
    width = getattr(first, "input_dim", getattr(first, "num_classes", None))
    ids = encoder.vocab.num_words or len(encoder.vocab)
    if width is None or ids > width:
        raise UserError(f"{model_dir}: the vocabulary has ids up to {ids - 1}, the model's "
                        f"input takes {width}")
