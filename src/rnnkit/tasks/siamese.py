"""Siamese similarity: twin recurrent encoders with shared weights and cosine similarity.

For two strings ``a`` and ``b`` (characters -> ids, padding masked)::

    u = f(a), v = f(b)      f = Embedding -> Bidirectional(LSTM) -> pool -> Dense  (ONE set)
    s(a, b) = cos(u, v) = u . v / (|u| |v|)                              in [-1, 1]

Losses on pairs with label ``y`` (1 = same entity, 0 = different), margin ``m``::

    "margin"      L = y (1 - s) + (1 - y) max(0, s - m)        (= torch CosineEmbeddingLoss)
    "contrastive" L = y (1 - s)^2 + (1 - y) max(0, s - m)^2

In-batch losses on similar pairs ``(a_i, b_i)``, ``i = 1..P`` of a batch, with
``S_ij = s(a_i, c_j)`` over the candidates ``c = (b_1..b_P, hard negatives of the batch)``::

    "triplet"     L = mean_i max(0, m - S_ii + max_{j != i} S_ij)     (hardest in-batch negative)
    "softmax"     L = mean_i -log softmax_j(S_ij / tau)_i              (tau = 0.05)

A labelled dissimilar pair ``(a, c)`` whose ``a`` also has a similar pair makes ``c`` a hard
negative candidate in that pair's batch. Pooling of the recurrent outputs ``o_t`` (real steps
only): ``"last"`` the final state, ``"meanmax"`` ``[mean_t o_t ; max_t o_t]``.

Matching: the ``top_k`` references with the largest ``s(query, reference)``.

Pairs file: ``text_a<TAB>text_b[<TAB>label]`` per line, label 1/0 (or ``similar``/
``dissimilar``); a file without labels holds only similar pairs, and each epoch adds as many
dissimilar pairs by pairing every ``text_a`` with the ``text_b`` of another random line.

Address example (after the classic TensorFlow cookbook demo): addresses ``<number> <street>
<suffix>`` from fixed street-name and suffix lists and numbers 1-9999; a query is an address
with exactly one character replaced by a different random lowercase letter or digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..io import load_model, register_model, save_model
from ..layers import Dense, Embedding
from ..recurrent import GRU, LSTM, Bidirectional
from ..text import PAD, Vocabulary, pad_sequences
from ._seqtools import Batches, minibatches, read_lines, seed_everything, train
from ._seqtools import check_task as _check_task

if TYPE_CHECKING:
    from ..backup import Backup

__all__ = ["SiameseEncoder", "Matcher", "margin_loss", "contrastive_loss", "read_pairs",
           "read_references", "train_matcher", "generate_addresses", "make_typo",
           "address_pairs", "address_triplets", "triplet_loss", "softmax_loss",
           "match_accuracy", "char_ngram_baseline", "pair_auc", "TASK"]

TASK = "siamese"
STREET_NAMES = ("abbey", "baker", "canal", "donner", "elm", "fifth", "grandvia", "hollywood",
                "interstate", "jay", "kings")
STREET_SUFFIXES = ("rd", "st", "ln", "pass", "ave", "hwy", "cir", "dr", "jct")
_TYPO_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_LABELS = {"1": 1, "0": 0, "-1": 0, "similar": 1, "dissimilar": 0, "same": 1, "different": 0}


# --------------------------------------------------------------------------- losses

def margin_loss(s: Tensor, y: Tensor, margin: float = 0.0) -> Tensor:
    """Mean of ``y (1 - s) + (1 - y) max(0, s - margin)``."""
    y = y.to(s.dtype)
    return (y * (1 - s) + (1 - y) * torch.clamp(s - margin, min=0)).mean()


def contrastive_loss(s: Tensor, y: Tensor, margin: float = 0.0) -> Tensor:
    """Mean of ``y (1 - s)^2 + (1 - y) max(0, s - margin)^2``."""
    y = y.to(s.dtype)
    return (y * (1 - s) ** 2 + (1 - y) * torch.clamp(s - margin, min=0) ** 2).mean()


LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "margin": margin_loss, "contrastive": contrastive_loss}
TEMPERATURE = 0.05


def triplet_loss(sims: Tensor, margin: float = 0.2) -> Tensor:
    """``sims`` ``(P, C)``, ``C >= P``, positives on the diagonal: mean over rows of
    ``max(0, margin - S_ii + max_{j != i} S_ij)``."""
    p = sims.shape[0]
    pos = sims.diagonal()
    neg = sims.masked_fill(torch.eye(p, sims.shape[1], dtype=torch.bool), float("-inf"))
    return torch.clamp(margin - pos + neg.max(dim=1).values, min=0).mean()


def softmax_loss(sims: Tensor, margin: float = 0.0) -> Tensor:
    """Mean over rows of ``-log softmax_j(S_ij / tau)_i`` (``margin`` unused)."""
    return nn.functional.cross_entropy(sims / TEMPERATURE, torch.arange(sims.shape[0]))


IN_BATCH_LOSSES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "triplet": triplet_loss, "softmax": softmax_loss}


# --------------------------------------------------------------------------- model

@register_model("SiameseEncoder")
class SiameseEncoder(nn.Module):
    """The shared encoder ``f`` (module docstring); ``forward(ids)`` -> ``(B, out_dim)``.

    ``similarity(a, b)`` applies the *same* module to both inputs and returns ``cos(f(a),
    f(b))``. Ids are padded with 0 (masked in the recurrence).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 16, units: int = 32,
                 out_dim: int = 32, cell: str = "lstm", bidirectional: bool = True,
                 backend: str = "auto", pooling: str = "last"):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if pooling not in ("last", "meanmax"):
            raise ValueError(f"pooling must be 'last' or 'meanmax', got {pooling!r}")
        self.pooling = pooling
        self.vocab_size, self.embed_dim, self.units, self.out_dim = (vocab_size, embed_dim,
                                                                     units, out_dim)
        self.cell, self.bidirectional, self.backend = cell, bidirectional, backend
        self.embed = Embedding(vocab_size, embed_dim, mask_zero=True)
        layer = (LSTM if cell == "lstm" else GRU)(units, input_size=embed_dim, backend=backend,
                                                  return_sequences=pooling == "meanmax")
        self.rnn: nn.Module = Bidirectional(layer) if bidirectional else layer
        width = units * (2 if bidirectional else 1) * (2 if pooling == "meanmax" else 1)
        self.proj = Dense(out_dim, input_size=width)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                "units": self.units, "out_dim": self.out_dim, "cell": self.cell,
                "bidirectional": self.bidirectional, "backend": self.backend,
                "pooling": self.pooling}

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != PAD
        h = self.rnn(self.embed(ids), mask=mask)
        if self.pooling == "meanmax":
            m = mask[..., None].to(h.dtype)
            mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
            mx = h.masked_fill(~mask[..., None], torch.finfo(h.dtype).min).amax(1)
            h = torch.cat([mean, mx], dim=-1)
        return self.proj(h)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        return nn.functional.cosine_similarity(self(a), self(b), dim=-1)


# --------------------------------------------------------------------------- data

def read_pairs(path: str | Path) -> tuple[list[tuple[str, str]], list[int] | None]:
    """``(pairs, labels)`` from ``a<TAB>b[<TAB>label]``; labels None when no line has one.

    UserError naming file and line for a missing tab, an empty side, an unknown label, or a
    mix of labelled and unlabelled lines.
    """
    pairs: list[tuple[str, str]] = []
    labels: list[int | None] = []
    for n, line in read_lines(path, "pairs file"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3):
            raise UserError(f"{path}:{n}: expected 'text_a<TAB>text_b[<TAB>label]', found "
                            f"{len(parts)} tab-separated field(s)")
        a, b = parts[0].strip(), parts[1].strip()
        if not a or not b:
            raise UserError(f"{path}:{n}: empty text")
        lab = None
        if len(parts) == 3:
            key = parts[2].strip().lower()
            if key not in _LABELS:
                raise UserError(f"{path}:{n}: label must be 1/0 (or similar/dissimilar), "
                                f"got {parts[2].strip()!r}")
            lab = _LABELS[key]
        if labels and (labels[0] is None) != (lab is None):
            raise UserError(f"{path}:{n}: some lines have a label and some do not")
        pairs.append((a, b))
        labels.append(lab)
    if not pairs:
        raise UserError(f"{path}: no pairs found")
    if labels[0] is None:
        return pairs, None
    if len(set(labels)) < 2:
        raise UserError(f"{path}: all pairs have label {labels[0]}; need both similar (1) and "
                        "dissimilar (0) pairs, or leave the label column out")
    return pairs, [int(x) for x in labels]  # type: ignore[arg-type]


def read_references(path: str | Path) -> list[str]:
    """One reference text per non-blank line (UserError for a missing/empty/non-UTF-8 file)."""
    refs = [line.strip() for _, line in read_lines(path, "reference file") if line.strip()]
    if not refs:
        raise UserError(f"{path}: no reference lines")
    return refs


def generate_addresses(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct addresses ``"<1-9999> <street> <suffix>"``."""
    out: list[str] = []
    seen: set[str] = set()
    if n > 9999 * len(STREET_NAMES) * len(STREET_SUFFIXES) // 2:
        raise ValueError(f"too many addresses requested: {n}")
    while len(out) < n:
        a = (f"{int(rng.integers(1, 10000))} {STREET_NAMES[int(rng.integers(len(STREET_NAMES)))]}"
             f" {STREET_SUFFIXES[int(rng.integers(len(STREET_SUFFIXES)))]}")
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def make_typo(text: str, rng: np.random.Generator) -> str:
    """``text`` with one non-space character replaced by a different letter or digit."""
    pos = [i for i, c in enumerate(text) if c != " "]
    if not pos:
        return text
    i = pos[int(rng.integers(len(pos)))]
    choices = [c for c in _TYPO_CHARS if c != text[i]]
    return text[:i] + choices[int(rng.integers(len(choices)))] + text[i + 1:]


def _near_miss(address: str, rng: np.random.Generator) -> str:
    """A different address sharing two of the three parts (a hard negative)."""
    num, street, suffix = address.split(" ")
    part = int(rng.integers(3))
    while True:
        if part == 0:
            num = str(int(rng.integers(1, 10000)))
        elif part == 1:
            street = STREET_NAMES[int(rng.integers(len(STREET_NAMES)))]
        else:
            suffix = STREET_SUFFIXES[int(rng.integers(len(STREET_SUFFIXES)))]
        new = f"{num} {street} {suffix}"
        if new != address:
            return new


def address_pairs(references: Sequence[str], n: int, rng: np.random.Generator
                  ) -> tuple[list[tuple[str, str]], list[int]]:
    """``n`` labelled pairs: half (typo'd address, its address, 1); a quarter (typo'd address,
    another random reference, 0); a quarter (typo'd address, a near miss, 0)."""
    pairs, labels = [], []
    m = len(references)
    for k in range(n):
        ref = references[int(rng.integers(m))]
        q = make_typo(ref, rng)
        if k % 2 == 0:
            pairs.append((q, ref))
            labels.append(1)
        elif k % 4 == 1:
            other = references[int(rng.integers(m))]
            while other == ref and m > 1:
                other = references[int(rng.integers(m))]
            pairs.append((q, other))
            labels.append(0)
        else:
            pairs.append((q, _near_miss(ref, rng)))
            labels.append(0)
    return pairs, labels


def address_triplets(references: Sequence[str], n: int, rng: np.random.Generator
                     ) -> tuple[list[tuple[str, str]], list[int]]:
    """For ``n`` random references ``r``, a fresh one-typo query ``q`` and two lines:
    ``(q, r, 1)`` and ``(q, x, 0)`` with ``x`` a hard negative -- half the time a near miss
    sharing two of the three parts, half the time ``r`` with one digit of its number
    changed (a different address one character away from ``r``)."""
    pairs, labels = [], []
    for k in range(n):
        ref = references[int(rng.integers(len(references)))]
        q = make_typo(ref, rng)
        neg = _near_miss(ref, rng) if k % 2 else _number_typo(ref, rng)
        pairs += [(q, ref), (q, neg)]
        labels += [1, 0]
    return pairs, labels


def _number_typo(address: str, rng: np.random.Generator) -> str:
    num, rest = address.split(" ", 1)
    while True:
        i = int(rng.integers(len(num)))
        new = num[:i] + str(int(rng.integers(10))) + num[i + 1:]
        if new != num and not new.startswith("0"):
            return f"{new} {rest}"


# --------------------------------------------------------------------------- matcher

@dataclass
class Matcher:
    """A trained :class:`SiameseEncoder` with its character vocabulary."""

    model: SiameseEncoder
    vocab: Vocabulary
    max_len: int = 40

    def ids(self, texts: Sequence[str]) -> Tensor:
        rows = []
        for t in texts:
            r = self.vocab.encode(list(t.lower()), add_start=False)[: self.max_len]
            if not r:
                raise UserError(f"empty text {t!r}")
            rows.append(r)
        return torch.from_numpy(pad_sequences(rows, padding="post", truncating="post"))

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 512) -> Tensor:
        """Unit-length vectors ``(n, out_dim)`` (cosine similarity = dot product)."""
        self.model.eval()
        out = [self.model(self.ids(texts[i:i + batch_size]))
               for i in range(0, len(texts), batch_size)]
        return nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def similarity(self, a: Sequence[str], b: Sequence[str]) -> Tensor:
        self.model.eval()
        return self.model.similarity(self.ids(a), self.ids(b))

    def match(self, queries: Sequence[str] | str, references: Sequence[str], top_k: int = 5,
              ref_vectors: Tensor | None = None) -> list[list[tuple[str, float]]]:
        """For each query the ``top_k`` references ``(text, cosine)``, best first."""
        if isinstance(queries, str):
            queries = [queries]
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        refs = ref_vectors if ref_vectors is not None else self.embed(references)
        sims = self.embed(queries) @ refs.T
        top = torch.topk(sims, min(top_k, len(references)), dim=-1)
        return [[(references[j], float(v)) for v, j in zip(vals.tolist(), idx.tolist(),
                                                             strict=True)]
                for vals, idx in zip(top.values, top.indices, strict=True)]

    def save(self, model_dir: str | Path, extra: dict | None = None) -> Path:
        return save_model(model_dir, self.model, task=TASK, extra={
            "vocabulary": self.vocab.to_json(), "max_len": self.max_len, **(extra or {})})

    @classmethod
    def load(cls, model_dir: str | Path) -> Matcher:
        _check_task(model_dir, TASK)
        model, cfg = load_model(model_dir)
        if cfg.get("task") != TASK or not isinstance(model, SiameseEncoder):
            raise UserError(f"{model_dir} holds a {cfg.get('task')!r} model, not {TASK!r}")
        try:
            return cls(model, Vocabulary.from_json(cfg["vocabulary"]), int(cfg["max_len"]))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{Path(model_dir) / 'config.json'}: corrupt settings ({e})"
                            ) from None


def train_matcher(pairs: Sequence[tuple[str, str]], labels: Sequence[int] | None = None, *,
                  loss: str = "margin", margin: float = 0.0, embed_dim: int = 16,
                  units: int = 32, out_dim: int = 32, cell: str = "lstm",
                  bidirectional: bool = True, pooling: str = "meanmax", max_len: int = 40,
                  epochs: int = 10,
                  batch_size: int = 64, lr: float = 3e-3, clip_norm: float = 5.0,
                  seed: int = 0, backend: str = "auto",
                  val_pairs: Sequence[tuple[str, str]] | None = None,
                  val_labels: Sequence[int] | None = None, patience: int | None = None,
                  verbose: int = 0, backup: Backup | None = None
                  ) -> tuple[Matcher, dict[str, list[float]]]:
    """Train the twin encoder on labelled pairs (or similar-only pairs plus fresh random
    negatives each epoch when ``labels`` is None) with :func:`rnnkit.train.fit` (Adam).

    ``val_pairs`` (labelled like ``pairs``) adds a per-epoch ``val_loss`` (unlabelled
    validation pairs get one fixed random negative each); ``patience`` stops when it has not
    improved for that many epochs and keeps the best epoch's weights.

    ``loss`` ``"margin"``/``"contrastive"`` score pairs; ``"triplet"``/``"softmax"`` rank each
    similar pair's ``b`` against the batch's other candidates (module docstring), with
    ``batch_size`` similar pairs per batch."""
    if loss not in LOSSES and loss not in IN_BATCH_LOSSES:
        raise ValueError(f"loss must be one of {sorted([*LOSSES, *IN_BATCH_LOSSES])}, "
                         f"got {loss!r}")
    if not pairs:
        raise ValueError("no training pairs")
    if labels is not None and len(labels) != len(pairs):
        raise ValueError(f"{len(labels)} labels for {len(pairs)} pairs")
    if val_pairs and (val_labels is None) != (labels is None):
        raise ValueError("val_labels must be given exactly when labels are")
    seed_everything(seed)
    vocab = Vocabulary.fit([list((a + b).lower()) for a, b in pairs])
    model = SiameseEncoder(len(vocab), embed_dim, units, out_dim, cell, bidirectional, backend,
                           pooling)
    m = Matcher(model, vocab, max_len)
    if loss in IN_BATCH_LOSSES:
        return m, _train_in_batch(m, pairs, labels, IN_BATCH_LOSSES[loss], margin,
                                  val_pairs, val_labels, epochs=epochs, batch_size=batch_size,
                                  lr=lr, clip_norm=clip_norm, seed=seed, patience=patience,
                                  verbose=verbose, backup=backup)
    fn = LOSSES[loss]

    def batches(ps: Sequence[tuple[str, str]], ys: Sequence[int] | None,
                rng: np.random.Generator | None):
        a_ids, b_ids = m.ids([a for a, _ in ps]), m.ids([b for _, b in ps])
        n = len(ps)
        if ys is not None:
            y_all = torch.as_tensor(list(ys))
            for idx in minibatches(n, batch_size, rng):
                t = torch.from_numpy(idx)
                yield (_trim(a_ids[t]), _trim(b_ids[t])), y_all[t]
            return
        r = rng if rng is not None else np.random.default_rng(0)
        shift = torch.from_numpy((np.arange(n) + r.integers(1, max(n, 2), n)) % n)
        for idx in minibatches(n, max(batch_size // 2, 1), rng):
            t = torch.from_numpy(idx)
            a = torch.cat([a_ids[t], a_ids[t]])
            b = torch.cat([b_ids[t], b_ids[shift[t]]])
            y = torch.cat([torch.ones(len(t)), torch.zeros(len(t))])
            yield (_trim(a), _trim(b)), y

    def loss_fn(s: Tensor, y: Tensor) -> Tensor:
        return fn(s, y, margin)

    val = list(batches(val_pairs, val_labels, None)) if val_pairs else None
    history = train(_PairSimilarity(model),
                    Batches(lambda rng: batches(pairs, labels, rng), seed,
                            math.ceil(len(pairs) / batch_size)),
                    loss_fn, epochs=epochs, lr=lr, clip_norm=clip_norm, seed=seed,
                    validation_data=val, patience=patience, verbose=verbose, backup=backup)
    return m, history


def _train_in_batch(m: Matcher, pairs: Sequence[tuple[str, str]], labels: Sequence[int] | None,
                    fn: Callable[[Tensor, float], Tensor], margin: float,
                    val_pairs: Sequence[tuple[str, str]] | None,
                    val_labels: Sequence[int] | None, *, epochs: int, batch_size: int,
                    lr: float, clip_norm: float, seed: int, patience: int | None,
                    verbose: int, backup: Backup | None = None) -> dict[str, list[float]]:
    def prepare(ps: Sequence[tuple[str, str]], ys: Sequence[int] | None):
        ys = [1] * len(ps) if ys is None else list(ys)
        pos = [p for p, y in zip(ps, ys, strict=True) if y == 1]
        if not pos:
            raise ValueError("the in-batch losses need similar pairs (label 1)")
        hard: dict[str, list[str]] = {}
        for (a, c), y in zip(ps, ys, strict=True):
            if y == 0:
                hard.setdefault(a, []).append(c)
        return pos, hard

    def batches(pos: list[tuple[str, str]], hard: dict[str, list[str]],
                rng: np.random.Generator | None):
        r = rng if rng is not None else np.random.default_rng(0)
        for idx in minibatches(len(pos), batch_size, rng):
            a = [pos[i][0] for i in idx]
            cands = [pos[i][1] for i in idx]
            cands += [h[int(r.integers(len(h)))] for x in a if (h := hard.get(x))]
            yield (_trim(m.ids(a)), _trim(m.ids(cands))), torch.arange(len(a))

    def loss_fn(sims: Tensor, _: Tensor) -> Tensor:
        return fn(sims, margin)

    pos, hard = prepare(pairs, labels)
    val = list(batches(*prepare(val_pairs, val_labels), None)) if val_pairs else None
    return train(InBatchSimilarity(m.model),
                 Batches(lambda rng: batches(pos, hard, rng), seed,
                         math.ceil(len(pos) / batch_size)),
                 loss_fn, epochs=epochs, lr=lr, clip_norm=clip_norm, seed=seed,
                 validation_data=val, patience=patience, verbose=verbose, backup=backup)


class InBatchSimilarity(nn.Module):
    """``(a (P, T), candidates (C, T)) -> cos(f(a_i), f(c_j))`` ``(P, C)``."""

    def __init__(self, encoder: SiameseEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, a: Tensor, c: Tensor) -> Tensor:
        u = nn.functional.normalize(self.encoder(a), dim=-1)
        v = nn.functional.normalize(self.encoder(c), dim=-1)
        return u @ v.T


class _PairSimilarity(nn.Module):
    """``(a, b) -> cos(f(a), f(b))`` with the shared encoder ``f`` (what ``fit`` trains)."""

    def __init__(self, encoder: SiameseEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.encoder.similarity(a, b)


def _trim(ids: Tensor) -> Tensor:
    return ids[:, :max(int((ids != PAD).sum(1).max()), 1)]


# --------------------------------------------------------------------------- evaluation

def match_accuracy(match_fn: Callable[[Sequence[str]], list[str]], queries: Sequence[str],
                   truth: Sequence[str]) -> float:
    """Fraction of queries whose best match is the true reference."""
    best = match_fn(queries)
    return float(np.mean([b == t for b, t in zip(best, truth, strict=True)]))


def char_ngram_baseline(references: Sequence[str], n: int = 2) -> Callable[[Sequence[str]],
                                                                            list[str]]:
    """A non-learned comparison: cosine of character ``n``-gram count vectors."""
    grams: dict[str, int] = {}

    def vec(texts: Sequence[str], grow: bool) -> np.ndarray:
        rows = []
        for t in texts:
            t = f" {t.lower()} "
            row: dict[int, float] = {}
            for i in range(len(t) - n + 1):
                g = t[i:i + n]
                if g not in grams:
                    if not grow:
                        continue
                    grams[g] = len(grams)
                row[grams[g]] = row.get(grams[g], 0.0) + 1.0
            rows.append(row)
        out = np.zeros((len(texts), len(grams)))
        for i, row in enumerate(rows):
            for j, v in row.items():
                out[i, j] = v
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    ref_vec = vec(references, True)

    def match(queries: Sequence[str]) -> list[str]:
        q = vec(queries, False)
        return [references[int(j)] for j in np.argmax(q @ ref_vec.T, axis=1)]

    return match


def evaluate_addresses(m: Matcher, references: Sequence[str], n_queries: int,
                       rng: np.random.Generator) -> dict[str, Any]:
    """Match accuracy of one-typo queries against ``references``, with the random and
    character-bigram baselines."""
    truth = [references[int(i)] for i in rng.integers(len(references), size=n_queries)]
    queries = [make_typo(t, rng) for t in truth]
    vecs = m.embed(references)

    def model_best(qs: Sequence[str]) -> list[str]:
        return [r[0][0] for r in m.match(qs, references, 1, ref_vectors=vecs)]

    return {"accuracy": match_accuracy(model_best, queries, truth),
            "bigram_baseline_accuracy": match_accuracy(char_ngram_baseline(references),
                                                       queries, truth),
            "random_baseline_accuracy": 1.0 / len(references), "n_queries": n_queries,
            "n_references": len(references)}


def pair_auc(m: Matcher, pairs: Sequence[tuple[str, str]], labels: Sequence[int]) -> float:
    """Probability that a similar pair scores above a dissimilar one (ties count half)."""
    s = m.similarity([a for a, _ in pairs], [b for _, b in pairs]).numpy()
    y = np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        raise ValueError("pair_auc needs similar and dissimilar pairs")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())
