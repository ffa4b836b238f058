"""Generation: a character- or word-level language model, and conditional generation of a
sequence from a feature vector (the image-captioning shape).

Language model over tokens ``w_1..w_N`` of a text (``w_0`` = start id 1)::

    h_t, s_t = RNN(Embed(w_{t-1}), s_{t-1}),   p(w_t | w_<t) = softmax(W h_t + b)
    loss       = mean_t -log p(w_t | w_<t)       (windows of ``seq_len`` tokens)
    perplexity = exp(mean over every token of a held-out text of -log p(w_t | w_<t)),
                 computed in chunks of ``seq_len`` with the state carried across chunks.

The trivial baseline is the unigram model fitted on the training text with add-one smoothing,
``p(w) = (count(w) + 1) / (N + V)``. Sampling feeds a prompt, then draws each next token from
``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens (``temperature
0`` = argmax); padding, start and unknown ids are never drawn.

Conditional generation from features ``f`` (e.g. an 8x8 digit image, 64 values in [0, 1])::

    h_0 = tanh(f W_h + b_h)    (and c_0 = tanh(f W_c + b_c) for an LSTM)
    h_t, s_t = RNN(Embed(y_{t-1}), s_{t-1}),   p(y_t | y_<t, f) = softmax(W h_t + b)

trained with teacher forcing on ``<start> y_1 .. y_T <end>`` and decoded greedily until
``<end>``. :func:`load_digit_names` gives scikit-learn's bundled digits with each digit's
English name as the caption.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..io import load_model, register_model, save_model
from ..layers import Dense, Embedding
from ..recurrent import GRU, LSTM
from ..text import OOV, PAD, START, Vocabulary, pad_sequences
from ._seqtools import (
    END,
    Batches,
    check_end_vocabulary,
    detokenize,
    minibatches,
    read_lines,
    seed_everything,
    token_cross_entropy,
    tokenize,
    train,
    vocabulary_with_end,
)
from ._seqtools import (
    check_task as _check_task,
)

if TYPE_CHECKING:
    from ..backup import Backup

__all__ = ["read_text", "LanguageModel", "TextLM", "train_lm", "unigram_perplexity",
           "sample_next", "ConditionalGenerator", "Captioner", "train_captioner",
           "load_digit_names", "DIGIT_NAMES", "TASK"]

TASK = "lm"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _rnn(cell: str) -> type:
    if cell not in ("lstm", "gru"):
        raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
    return LSTM if cell == "lstm" else GRU


def read_text(path: str | Path, max_chars: int | None = None) -> str:
    """A UTF-8 text file (line endings normalised to ``\\n``); UserError naming the file and
    line for bad bytes, and for a file without any text."""
    lines, size = [], 0
    for _, line in read_lines(path, "text file"):
        lines.append(line)
        size += len(line) + 1
        if max_chars is not None and size >= max_chars:
            break
    text = "\n".join(lines) + ("\n" if lines else "")
    if max_chars is not None:
        text = text[:max_chars]
    if not text.strip():
        raise UserError(f"{path}: the file has no text")
    return text


# --------------------------------------------------------------------------- language model

@register_model("LanguageModel")
class LanguageModel(nn.Module):
    """``Embedding -> LSTM/GRU -> Dense`` next-token model (module docstring equations).

    ``forward(ids, state=None)`` -> ``(logits (B, T, V), final state)``.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, units: int = 128,
                 cell: str = "lstm", backend: str = "auto"):
        super().__init__()
        self.vocab_size, self.embed_dim, self.units, self.cell = vocab_size, embed_dim, units, cell
        self.backend = backend
        self.embed = Embedding(vocab_size, embed_dim)
        self.rnn = _rnn(cell)(units, input_size=embed_dim, return_sequences=True,
                              return_state=True, backend=backend)
        self.out = Dense(vocab_size, input_size=units)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "units": self.units,
                "cell": self.cell, "backend": self.backend}

    def forward(self, ids: Tensor, state: tuple[Tensor, ...] | None = None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
        h, *st = self.rnn(self.embed(ids), initial_state=state)
        return self.out.logits(h), tuple(st)


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None,
                forbid: Sequence[int] = (PAD, START, OOV)) -> Tensor:
    """Next ids ``(B,)`` from logits ``(B, V)``: argmax when ``temperature == 0``, else a draw
    from ``softmax(logits / temperature)`` over the ``top_k`` largest logits."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    logits = logits.detach().clone().float()
    logits[:, list(forbid)] = float("-inf")
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@dataclass
class TextLM:
    """A trained :class:`LanguageModel` with its vocabulary and tokenization level."""

    model: LanguageModel
    vocab: Vocabulary
    level: str = "char"
    seq_len: int = 100

    def ids(self, text: str) -> list[int]:
        return self.vocab.encode(tokenize(text, self.level, lowercase=False), add_start=False)

    @torch.no_grad()
    def generate(self, prompt: str = "", length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> str:
        """``prompt`` followed by ``length`` sampled tokens (characters or words)."""
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.model.eval()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = [START, *self.ids(prompt)]
        logits, state = self.model(torch.tensor([ids]))
        last = logits[:, -1]
        out: list[int] = []
        for _ in range(length):
            nxt = sample_next(last, temperature, top_k, gen)
            out.append(int(nxt[0]))
            logits, state = self.model(nxt[:, None], state)
            last = logits[:, -1]
        words = self.vocab.decode(out, skip_special=True)
        sep = "" if self.level == "char" or not prompt else " "
        return prompt + sep + detokenize(words, self.level)

    @torch.no_grad()
    def perplexity(self, text: str) -> float:
        """Perplexity of ``text`` (see the module docstring); unknown tokens count as id 2."""
        self.model.eval()
        ids = self.ids(text)
        if not ids:
            raise ValueError("perplexity needs a non-empty text")
        seq = torch.tensor([START, *ids])
        state = None
        nll, n = 0.0, 0
        for i in range(0, len(ids), self.seq_len):
            y = seq[i + 1:i + 1 + self.seq_len][None]
            x = seq[i:i + y.shape[1]][None]
            logits, state = self.model(x, state)
            nll += float(nn.functional.cross_entropy(logits[0], y[0], reduction="sum"))
            n += y.shape[1]
        return math.exp(min(nll / n, 700))

    def save(self, model_dir: str | Path, extra: dict | None = None) -> Path:
        return save_model(model_dir, self.model, task=TASK, extra={
            "vocabulary": self.vocab.to_json(), "level": self.level, "seq_len": self.seq_len,
            **(extra or {})})

    @classmethod
    def load(cls, model_dir: str | Path) -> TextLM:
        _check_task(model_dir, TASK)
        model, cfg = load_model(model_dir)
        if cfg.get("task") != TASK or not isinstance(model, LanguageModel):
            raise UserError(f"{model_dir} holds a {cfg.get('task')!r} model, not {TASK!r}")
        try:
            if cfg["level"] not in ("char", "word"):
                raise ValueError(f"level must be 'char' or 'word', got {cfg['level']!r:.20}")
            if isinstance(cfg["seq_len"], bool) or not 1 <= int(cfg["seq_len"]) <= 100_000:
                raise ValueError(f"seq_len must be in [1, 100000], got {cfg['seq_len']!r:.20}")
            return cls(model, Vocabulary.from_json(cfg["vocabulary"]), cfg["level"],
                       int(cfg["seq_len"]))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{Path(model_dir) / 'config.json'}: corrupt language-model "
                            f"settings ({e})") from None


def unigram_perplexity(train_text: str, test_text: str, level: str, vocab: Vocabulary) -> float:
    """Perplexity of the add-one-smoothed unigram model (the trivial baseline)."""
    train = Counter(vocab.encode(tokenize(train_text, level, lowercase=False), add_start=False))
    test = vocab.encode(tokenize(test_text, level, lowercase=False), add_start=False)
    total, v = sum(train.values()), len(vocab)
    nll = -sum(math.log((train[i] + 1) / (total + v)) for i in test) / max(len(test), 1)
    return math.exp(nll)


def train_lm(text: str, *, level: str = "char", val_text: str | None = None,
             num_words: int | None = None, embed_dim: int = 32, units: int = 128,
             cell: str = "lstm", seq_len: int = 64, batch_size: int = 32, epochs: int = 5,
             batches_per_epoch: int | None = None, lr: float = 3e-3, clip_norm: float = 5.0,
             seed: int = 0, backend: str = "auto", patience: int | None = None,
             verbose: int = 0, backup: Backup | None = None
             ) -> tuple[TextLM, dict[str, list[float]]]:
    """Fit a vocabulary on ``text`` and train a language model on windows of it
    (:func:`rnnkit.train.fit`, Adam).

    Each epoch cuts the token stream into windows of ``seq_len + 1`` tokens from a random
    offset, shuffles them, and uses at most ``batches_per_epoch`` batches (all when None).
    ``num_words`` caps the vocabulary (ids 0-2 included). ``val_text`` adds a per-epoch
    ``val_loss``, the log perplexity of the whole held-out text (:meth:`TextLM.perplexity`);
    ``patience`` stops when it has not improved for that many epochs and keeps the best
    epoch's weights.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    seed_everything(seed)
    tokens = tokenize(text, level, lowercase=False)
    vocab = Vocabulary.fit([tokens], num_words)
    ids = np.asarray([START, *vocab.encode(tokens, add_start=False)], dtype=np.int64)
    if len(ids) < seq_len + 2:
        raise UserError(f"the training text has {len(ids) - 1} tokens; need more than "
                        f"seq_len={seq_len} (use a longer text or a smaller --seq-len)")
    model = LanguageModel(len(vocab), embed_dim, units, cell, backend)
    lm = TextLM(model, vocab, level, seq_len)
    w = seq_len + 1

    def batches(rng: np.random.Generator):
        start = int(rng.integers(0, seq_len))
        n = (len(ids) - start) // w
        windows = torch.from_numpy(ids[start:start + n * w].reshape(n, w))
        for k, idx in enumerate(minibatches(n, batch_size, rng)):
            if batches_per_epoch is not None and k >= batches_per_epoch:
                break
            win = windows[torch.from_numpy(idx)]
            yield win[:, :-1], win[:, 1:]

    steps = math.ceil(len(ids) // w / batch_size)
    if batches_per_epoch is not None:
        steps = min(steps, batches_per_epoch)
    val = (lambda: math.log(lm.perplexity(val_text))) if val_text else None
    history = train(model, Batches(batches, seed, steps), token_cross_entropy, epochs=epochs,
                    lr=lr, clip_norm=clip_norm, seed=seed, validation_fn=val,
                    patience=patience, verbose=verbose, backup=backup)
    return lm, history


# --------------------------------------------------------------------------- conditional

@register_model("ConditionalGenerator")
class ConditionalGenerator(nn.Module):
    """Sequence decoder whose initial state is computed from a feature vector (module
    docstring equations). ``forward(features (B, F), tgt_in (B, T))`` -> logits ``(B, T, V)``.
    """

    def __init__(self, feature_dim: int, vocab_size: int, embed_dim: int = 16,
                 units: int = 64, cell: str = "lstm", backend: str = "auto"):
        super().__init__()
        self.feature_dim, self.vocab_size = feature_dim, vocab_size
        self.embed_dim, self.units, self.cell, self.backend = embed_dim, units, cell, backend
        self.init_h = Dense(units, "tanh", input_size=feature_dim)
        self.init_c = Dense(units, "tanh", input_size=feature_dim) if cell == "lstm" else None
        self.embed = Embedding(vocab_size, embed_dim)
        self.rnn = _rnn(cell)(units, input_size=embed_dim, return_sequences=True,
                              return_state=True, backend=backend)
        self.out = Dense(vocab_size, input_size=units)

    def get_config(self) -> dict:
        return {"feature_dim": self.feature_dim, "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim, "units": self.units, "cell": self.cell,
                "backend": self.backend}

    def initial_state(self, features: Tensor) -> tuple[Tensor, ...]:
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (batch, {self.feature_dim}), got "
                             f"{tuple(features.shape)}")
        h = self.init_h(features)
        return (h, self.init_c(features)) if self.init_c is not None else (h,)

    def decode(self, tgt_in: Tensor, state: tuple[Tensor, ...]
               ) -> tuple[Tensor, tuple[Tensor, ...]]:
        h, *st = self.rnn(self.embed(tgt_in), initial_state=state)
        return self.out.logits(h), tuple(st)

    def forward(self, features: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, self.initial_state(features))[0]


@dataclass
class Captioner:
    """A trained :class:`ConditionalGenerator` with its character vocabulary."""

    model: ConditionalGenerator
    vocab: Vocabulary
    max_len: int = 20

    def targets(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        rows = [[START, *self.vocab.encode(list(c), add_start=False)[: self.max_len], END]
                for c in captions]
        x = pad_sequences([r[:-1] for r in rows], padding="post")
        y = pad_sequences([r[1:] for r in rows], padding="post")
        return torch.from_numpy(x), torch.from_numpy(y)

    @torch.no_grad()
    def generate(self, features: Tensor | np.ndarray, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None) -> list[str]:
        """One caption per feature row (greedy by default), stopping at ``<end>``."""
        self.model.eval()
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        state = self.model.initial_state(f)
        y = torch.full((f.shape[0],), START, dtype=torch.long)
        out: list[list[int]] = [[] for _ in range(f.shape[0])]
        done = np.zeros(f.shape[0], dtype=bool)
        for _ in range(self.max_len + 1):
            logits, state = self.model.decode(y[:, None], state)
            y = sample_next(logits[:, 0], temperature, top_k, gen)
            for i, t in enumerate(y.tolist()):
                if not done[i]:
                    if t == END:
                        done[i] = True
                    else:
                        out[i].append(t)
            if done.all():
                break
        return ["".join(self.vocab.decode(r, skip_special=True)) for r in out]

    def save(self, model_dir: str | Path, extra: dict | None = None) -> Path:
        return save_model(model_dir, self.model, task="captions", extra={
            "vocabulary": self.vocab.to_json(), "max_len": self.max_len, **(extra or {})})

    @classmethod
    def load(cls, model_dir: str | Path) -> Captioner:
        _check_task(model_dir, "captions")
        model, cfg = load_model(model_dir)
        if not isinstance(model, ConditionalGenerator):
            raise UserError(f"{model_dir} does not hold a conditional generator")
        try:
            vocab = Vocabulary.from_json(cfg["vocabulary"])
            c = cls(model, vocab, int(cfg["max_len"]))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{Path(model_dir) / 'config.json'}: corrupt settings ({e})"
                            ) from None
        check_end_vocabulary(vocab, str(Path(model_dir) / "config.json"))
        return c


def train_captioner(features: np.ndarray, captions: Sequence[str], *, embed_dim: int = 16,
                    units: int = 64, cell: str = "lstm", epochs: int = 10,
                    batch_size: int = 32, lr: float = 1e-2, clip_norm: float = 5.0,
                    seed: int = 0, backend: str = "auto",
                    validation: tuple[np.ndarray, Sequence[str]] | None = None,
                    patience: int | None = None, verbose: int = 0
                    ) -> tuple[Captioner, dict[str, list[float]]]:
    """Train a character-level :class:`ConditionalGenerator` on (features, caption) pairs
    (:func:`rnnkit.train.fit`, Adam). ``validation=(features, captions)`` adds a per-epoch
    ``val_loss`` (teacher-forced cross-entropy per character); ``patience`` stops when it has
    not improved for that many epochs and keeps the best epoch's weights."""
    f = _features(features, len(captions))
    seed_everything(seed)
    vocab = vocabulary_with_end([list(c) for c in captions])
    max_len = max(len(c) for c in captions)
    model = ConditionalGenerator(f.shape[1], len(vocab), embed_dim, units, cell, backend)
    cap = Captioner(model, vocab, max_len)

    def batches(feats: Tensor, caps: Sequence[str], rng: np.random.Generator | None):
        x, y = cap.targets(caps)
        for idx in minibatches(len(caps), batch_size, rng):
            t = torch.from_numpy(idx)
            yield (feats[t], x[t]), y[t]

    val = None
    if validation is not None:
        vf, vc = validation
        val = list(batches(_features(vf, len(vc)), vc, None))
    history = train(model, Batches(lambda rng: batches(f, captions, rng), seed,
                                   math.ceil(len(captions) / batch_size)),
                    token_cross_entropy, epochs=epochs, lr=lr, clip_norm=clip_norm, seed=seed,
                    validation_data=val, patience=patience, verbose=verbose)
    return cap, history


def _features(features: np.ndarray | Tensor, n: int) -> Tensor:
    f = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if f.dim() != 2 or f.shape[0] != n:
        raise ValueError(f"features must be (n, F) with n = {n} captions, got "
                         f"{tuple(f.shape)}")
    return f


def load_digit_names() -> tuple[np.ndarray, list[str], np.ndarray]:
    """scikit-learn's bundled 8x8 digits: ``(features (1797, 64) in [0, 1], English names,
    digit labels)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("the digits example needs scikit-learn: pip install "
                        "'rnnkit[tasks]'") from None
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return x, [DIGIT_NAMES[int(t)] for t in d.target], d.target.astype(np.int64)


def caption_accuracy(cap: Captioner, features: np.ndarray, captions: Sequence[str],
                     train_captions: Sequence[str]) -> dict[str, Any]:
    """Exact-match rate of greedy captions, beside the constant most-frequent-caption
    baseline."""
    pred = cap.generate(features)
    common = Counter(train_captions).most_common(1)[0][0]
    return {"accuracy": float(np.mean([p == c for p, c in zip(pred, captions, strict=True)])),
            "baseline_accuracy": float(np.mean([c == common for c in captions])),
            "n": len(captions), "examples": list(zip(captions[:5], pred[:5], strict=True))}
