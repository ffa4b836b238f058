"""Encoder-decoder translation with optional attention.

Data: tab-separated sentence pairs in the Tatoeba/ManyThings format
``source<TAB>target[<TAB>attribution]``, one pair per line (blank lines and ``#`` comments are
skipped). Sentences are split into subword pieces of a sentencepiece model trained on each
side's training sentences, case kept (``level="subword"``, the default: translations come out
cased and detokenised, as written), or into lowercased words and punctuation marks
(``"word"``) or characters (``"char"``); source and target have separate vocabularies (0 pad,
1 start, 2 unknown, 3 end). Model, with ``x_1..x_S`` the source ids and ``y_0 = <start>``::

    e_s, s_S     = Encoder(Embed_src(x_1..x_S))                  (LSTM or GRU, padding masked)
    s_0          = s_S                                           (encoder final state)
    attention None:      h_t, s_t = Dec(Embed_tgt(y_{t-1}), s_{t-1});  o_t = h_t
    attention "luong":   h_t, s_t = Dec(Embed_tgt(y_{t-1}), s_{t-1})
                         c_t = sum_s a_ts e_s,  a_t = softmax_s(h_t^T W_a e_s)
                         o_t = tanh(W_c [c_t; h_t])
    attention "bahdanau": c_t = sum_s a_ts e_s,  a_t = softmax_s(v^T tanh(W_q h_{t-1} + W_k e_s))
                         h_t, s_t = Dec([Embed_tgt(y_{t-1}); c_t], s_{t-1});  o_t = h_t
    p(y_t | y_<t, x) = softmax(W_o o_t + b_o)

With ``dropout`` p > 0, training zeroes each unit of the two embeddings and of ``o_t`` with
probability p (inverted dropout, scaled by ``1/(1-p)``); evaluation and decoding use none.

Training is teacher forcing: ``y_{t-1}`` is the reference token, loss the mean cross-entropy
over real (non-pad) target tokens including ``<end>``. Decoding runs the decoder one step at a
time from the encoder's final state: greedy (argmax) or beam search (score = sum of log
probabilities, finished hypotheses ranked by ``score / length**length_penalty``); it stops at
``<end>`` or ``max_target_len`` tokens. BLEU is sacrebleu's corpus BLEU (its 13a tokenizer,
cased): with subwords on the detokenised translation against the reference as written; with
words or characters on the token sequences joined by spaces against the reference put
through the same tokenization (lowercased).
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
from ..text import PAD, START, Vocabulary, pad_sequences
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

__all__ = ["read_pairs", "BahdanauAttention", "LuongAttention", "Seq2Seq", "Translator",
           "train_translator", "bleu", "TASK"]

TASK = "seq2seq"
_ATTENTIONS = (None, "bahdanau", "luong")
#: validation pairs whose greedy BLEU selects the epoch (``select_by="bleu"``)
BLEU_PROBE_PAIRS = 1000


# --------------------------------------------------------------------------- data

def read_pairs(path: str | Path, max_pairs: int | None = None, source_col: int = 1,
               target_col: int = 2) -> list[tuple[str, str]]:
    """``(source, target)`` pairs from a tab-separated file, the source in column
    ``source_col`` and the target in ``target_col`` (1-based; default
    ``source<TAB>target[<TAB>attribution]``, as in the Tatoeba/ManyThings files).

    UserError naming the file and line for a line with too few columns or an empty side.
    """
    if source_col < 1 or target_col < 1 or source_col == target_col:
        raise UserError(f"source and target columns must be two different positive column "
                        f"numbers, got {source_col} and {target_col}")
    need = max(source_col, target_col)
    pairs: list[tuple[str, str]] = []
    for n, line in read_lines(path, "pairs file"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < need:
            raise UserError(f"{path}:{n}: expected 'source<TAB>target[<TAB>attribution]' "
                            f"with the source in column {source_col} and the target in "
                            f"{target_col}, found {len(parts)} column(s) in {line[:40]!r}")
        src, tgt = parts[source_col - 1].strip(), parts[target_col - 1].strip()
        if not src or not tgt:
            side = "source" if not src else "target"
            raise UserError(f"{path}:{n}: empty {side} sentence")
        pairs.append((src, tgt))
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
    if not pairs:
        raise UserError(f"{path}: no sentence pairs found")
    return pairs


# --------------------------------------------------------------------------- attention

def _masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """softmax over the last axis, masked positions (False) get weight 0."""
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


class BahdanauAttention(nn.Module):
    """Additive attention (Bahdanau et al., 2015)::

        score(q_t, k_s) = v^T tanh(q_t W_q + k_s W_k)
        a_t = softmax_s(score(q_t, k_s))  (masked keys excluded),   c_t = sum_s a_ts k_s

    ``query`` ``(B, T, Dq)``, ``keys`` ``(B, S, Dk)``, ``mask`` ``(B, S)`` bool (True = real);
    returns ``(context (B, T, Dk), weights (B, T, S))``.
    """

    def __init__(self, query_dim: int, key_dim: int, units: int):
        super().__init__()
        self.query_dim, self.key_dim, self.units = query_dim, key_dim, units
        self.w_q = Dense(units, input_size=query_dim, use_bias=False)
        self.w_k = Dense(units, input_size=key_dim, use_bias=True)
        self.v = Dense(1, input_size=units, use_bias=False)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        hidden = torch.tanh(self.w_q(query)[:, :, None, :] + self.w_k(keys)[:, None, :, :])
        scores = self.v(hidden).squeeze(-1)  # (B, T, S)
        weights = _masked_softmax(scores, mask)
        return weights @ keys, weights


class LuongAttention(nn.Module):
    """Multiplicative ("general") attention (Luong et al., 2015)::

        score(q_t, k_s) = q_t W_a k_s^T
        a_t = softmax_s(score(q_t, k_s))  (masked keys excluded),   c_t = sum_s a_ts k_s

    Shapes as :class:`BahdanauAttention`.
    """

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.w_a = Dense(key_dim, input_size=query_dim, use_bias=False)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        scores = self.w_a(query) @ keys.transpose(1, 2)  # (B, T, S)
        weights = _masked_softmax(scores, mask)
        return weights @ keys, weights


# --------------------------------------------------------------------------- model

@register_model("Seq2Seq")
class Seq2Seq(nn.Module):
    """Encoder-decoder over token ids (equations in the module docstring).

    ``forward(src, tgt_in)`` -> logits ``(B, T, tgt_vocab_size)`` with teacher forcing;
    :meth:`encode` + :meth:`decode_step` for step-by-step decoding. Source ids are padded at
    the end with 0; ``tgt_in`` starts with the start id 1.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, embed_dim: int = 64,
                 units: int = 128, cell: str = "lstm", attention: str | None = None,
                 backend: str = "auto", dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if attention not in _ATTENTIONS:
            raise ValueError(f"attention must be one of {list(_ATTENTIONS)}, got {attention!r}")
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.embed_dim, self.units, self.cell, self.attention_kind = embed_dim, units, cell, \
            attention
        self.backend, self.dropout = backend, float(dropout)
        self.drop = nn.Dropout(self.dropout)
        rnn = LSTM if cell == "lstm" else GRU
        self.src_embed = Embedding(src_vocab_size, embed_dim, mask_zero=True)
        self.tgt_embed = Embedding(tgt_vocab_size, embed_dim, mask_zero=True)
        self.encoder = rnn(units, input_size=embed_dim, return_sequences=True,
                           return_state=True, backend=backend)
        dec_in = embed_dim + (units if attention == "bahdanau" else 0)
        self.decoder = rnn(units, input_size=dec_in, return_sequences=True, return_state=True,
                           backend=backend)
        self.attention: nn.Module | None = None
        self.combine: Dense | None = None
        if attention == "bahdanau":
            self.attention = BahdanauAttention(units, units, units)
        elif attention == "luong":
            self.attention = LuongAttention(units, units)
            self.combine = Dense(units, "tanh", input_size=2 * units)
        self.out = Dense(tgt_vocab_size, input_size=units)
        #: attention weights ``(B, T, S)`` of the last decoder call (None without attention)
        self.last_attention: Tensor | None = None

    def get_config(self) -> dict:
        return {"src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size,
                "embed_dim": self.embed_dim, "units": self.units, "cell": self.cell,
                "attention": self.attention_kind, "backend": self.backend,
                "dropout": self.dropout}

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """``(encoder outputs (B, S, H), source mask (B, S), final state)``."""
        mask = src != PAD
        enc_out, *state = self.encoder(self.drop(self.src_embed(src)), mask=mask)
        return enc_out, mask, tuple(state)

    def decode(self, tgt_in: Tensor, state: tuple[Tensor, ...], enc_out: Tensor,
               src_mask: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Logits ``(B, T, V)`` for decoder inputs ``tgt_in`` ``(B, T)`` and the new state."""
        emb = self.drop(self.tgt_embed(tgt_in))
        if self.attention_kind == "bahdanau":
            logits, weights = [], []
            for t in range(tgt_in.shape[1]):
                ctx, w = self.attention(state[0][:, None, :], enc_out, src_mask)
                h, *st = self.decoder(torch.cat([emb[:, t:t + 1], ctx], dim=-1),
                                      initial_state=state)
                state = tuple(st)
                logits.append(self.out.logits(self.drop(h)))
                weights.append(w)
            self.last_attention = torch.cat(weights, dim=1)
            return torch.cat(logits, dim=1), state
        h, *st = self.decoder(emb, initial_state=state)
        if self.attention_kind == "luong":
            ctx, self.last_attention = self.attention(h, enc_out, src_mask)
            h = self.combine(torch.cat([ctx, h], dim=-1))
        return self.out.logits(self.drop(h)), tuple(st)

    def decode_step(self, y_prev: Tensor, state: tuple[Tensor, ...], enc_out: Tensor,
                    src_mask: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One decoder step: ``y_prev`` ``(B,)`` -> logits ``(B, V)`` and the new state."""
        logits, state = self.decode(y_prev[:, None], state, enc_out, src_mask)
        return logits[:, 0], state

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        enc_out, mask, state = self.encode(src)
        return self.decode(tgt_in, state, enc_out, mask)[0]


def _forbid_specials(logits: Tensor) -> Tensor:
    """Padding and start are never produced by the decoder."""
    logits = logits.clone()
    logits[:, PAD] = float("-inf")
    logits[:, START] = float("-inf")
    return logits


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src: Tensor, max_len: int) -> list[list[int]]:
    """Argmax decoding of a batch; each result is the ids before ``<end>``."""
    model.eval()
    enc_out, mask, state = model.encode(src)
    b = src.shape[0]
    y = torch.full((b,), START, dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    for _ in range(max_len):
        logits, state = model.decode_step(y, state, enc_out, mask)
        y = _forbid_specials(logits).argmax(-1)
        for i in range(b):
            if not done[i]:
                if int(y[i]) == END:
                    done[i] = True
                else:
                    out[i].append(int(y[i]))
        if bool(done.all()):
            break
    return out


@torch.no_grad()
def beam_decode(model: Seq2Seq, src: Tensor, max_len: int, beam_width: int = 4,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search, one source sentence at a time (see the module docstring)."""
    model.eval()
    results = []
    for i in range(src.shape[0]):
        enc_out, mask, state = model.encode(src[i:i + 1])
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_len):
            n = len(beams)
            last = torch.tensor([b[0][-1] if b[0] else START for b in beams])
            logits, new_state = model.decode_step(
                last, state, enc_out.expand(n, -1, -1), mask.expand(n, -1))
            logp = torch.log_softmax(_forbid_specials(logits), dim=-1)
            scores = torch.tensor([b[1] for b in beams])[:, None] + logp
            top = torch.topk(scores.flatten(), min(beam_width, scores.numel()))
            alive, keep = [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                bi, tok = divmod(flat, logp.shape[1])
                toks = beams[bi][0]
                if tok == END:
                    finished.append((toks, score))
                else:
                    alive.append((toks + [tok], score))
                    keep.append(bi)
            if len(finished) >= beam_width or not alive:
                break
            beams = alive
            idx = torch.tensor(keep)
            state = tuple(s[idx] for s in new_state)
        pool = finished or beams

        def rank(h: tuple[list[int], float]) -> float:
            return h[1] / max(len(h[0]) + 1, 1) ** length_penalty

        results.append(max(pool, key=rank)[0])
    return results


# --------------------------------------------------------------------------- translator

@dataclass
class Translator:
    """A trained :class:`Seq2Seq` with its vocabularies and text settings."""

    model: Seq2Seq
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary
    level: str = "word"
    max_source_len: int = 20
    max_target_len: int = 20
    #: the two sentencepiece models of ``level="subword"`` (source, target)
    subwords: tuple[Any, Any] | None = None

    def tokens(self, text: str, side: int) -> list[str]:
        """The tokens of ``text`` on side 0 (source) or 1 (target)."""
        if self.level == "subword":
            assert self.subwords is not None
            return self.subwords[side].tokenize(text)
        return tokenize(text, self.level)

    def source_ids(self, texts: Sequence[str]) -> Tensor:
        rows = []
        for t in texts:
            ids = self.src_vocab.encode(self.tokens(t, 0), add_start=False)
            if not ids:
                raise UserError(f"nothing to translate in {t!r} (no tokens)")
            rows.append(ids[: self.max_source_len])
        return torch.from_numpy(pad_sequences(rows, padding="post", truncating="post"))

    def target_ids(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(decoder inputs [start, y..], decoder targets [y.., end])``, padded at the end."""
        rows = [[START, *self.tgt_vocab.encode(self.tokens(t, 1),
                                               add_start=False)[: self.max_target_len], END]
                for t in texts]
        x = pad_sequences([r[:-1] for r in rows], padding="post")
        y = pad_sequences([r[1:] for r in rows], padding="post")
        return torch.from_numpy(x), torch.from_numpy(y)

    def loss(self, src_texts: Sequence[str], tgt_texts: Sequence[str]) -> Tensor:
        return self.loss_ids(self.source_ids(src_texts), *self.target_ids(tgt_texts))

    def loss_ids(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        return token_cross_entropy(self.model(src, tgt_in), tgt_out)

    def _words(self, ids: list[int]) -> str:
        if self.level == "subword":
            assert self.subwords is not None
            return self.subwords[1].detokenize(self.tgt_vocab.decode(ids, skip_special=True))
        return detokenize(self.tgt_vocab.decode(ids, skip_special=False), self.level)

    def translate(self, texts: Sequence[str] | str, beam_width: int = 1,
                  length_penalty: float = 1.0, batch_size: int = 64) -> list[str]:
        """Translations: detokenised text for ``level="subword"``, tokens joined by spaces
        for ``"word"``, characters for ``"char"``."""
        if isinstance(texts, str):
            texts = [texts]
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        out: list[str] = []
        for i in range(0, len(texts), batch_size):
            src = self.source_ids(texts[i:i + batch_size])
            if beam_width == 1:
                ids = greedy_decode(self.model, src, self.max_target_len + 1)
            else:
                ids = beam_decode(self.model, src, self.max_target_len + 1, beam_width,
                                  length_penalty)
            out.extend(self._words(r) for r in ids)
        return out

    def reference_text(self, text: str) -> str:
        """A reference sentence as BLEU compares it: as written (subwords), or tokenized
        and re-joined as the model writes it (words, characters)."""
        if self.level == "subword":
            return " ".join(text.split())
        return detokenize(tokenize(text, self.level), self.level)

    # persistence --------------------------------------------------------------------------
    def save(self, model_dir: str | Path, extra: dict | None = None) -> Path:
        sub: dict[str, Any] = {}
        if self.subwords is not None:
            from ..io import atomic_write_bytes

            Path(model_dir).mkdir(parents=True, exist_ok=True)
            for side, sp in zip(("source", "target"), self.subwords, strict=True):
                name = f"{side}_sentencepiece.model"
                assert sp._proto is not None
                atomic_write_bytes(Path(model_dir) / name, sp._proto)
                sub[side] = {**sp.get_config(), "model_file": name}
        return save_model(model_dir, self.model, task=TASK, extra={
            "source_vocabulary": self.src_vocab.to_json(),
            "target_vocabulary": self.tgt_vocab.to_json(), "level": self.level,
            "max_source_len": self.max_source_len, "max_target_len": self.max_target_len,
            **({"subwords": sub} if sub else {}), **(extra or {})})

    @classmethod
    def load(cls, model_dir: str | Path) -> Translator:
        _check_task(model_dir, TASK)
        model, cfg = load_model(model_dir)
        if cfg.get("task") != TASK or not isinstance(model, Seq2Seq):
            raise UserError(f"{model_dir} holds a {cfg.get('task')!r} model, not {TASK!r}")
        where = f"{Path(model_dir) / 'config.json'}"
        try:
            if cfg["level"] not in LEVELS:
                raise ValueError(f"level must be one of {', '.join(LEVELS)}, got "
                                 f"{cfg['level']!r:.20}")
            subwords = _load_subwords(model_dir, cfg) if cfg["level"] == "subword" else None
            for key in ("max_source_len", "max_target_len"):
                v = cfg[key]
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
                    raise ValueError(f"{key} must be an integer in [1, 10000], got {v!r:.20}")
            src = Vocabulary.from_json(cfg["source_vocabulary"])
            tgt = Vocabulary.from_json(cfg["target_vocabulary"])
            t = cls(model, src, tgt, cfg["level"], int(cfg["max_source_len"]),
                    int(cfg["max_target_len"]), subwords)
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{where}: corrupt translation settings ({e})") from None
        check_end_vocabulary(tgt, where)
        return t


def _load_subwords(model_dir: str | Path, cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The two sentencepiece models a subword translator saved (names and SHA-256 checked
    by :meth:`SentencePieceTokenizer.from_config`; only its known options are passed)."""
    from ..text_subword import SentencePieceTokenizer

    sub = cfg["subwords"]
    out = []
    for side in ("source", "target"):
        c = sub[side]
        if not isinstance(c, dict):
            raise ValueError(f"subwords.{side} must be an object")
        keep = {k: c[k] for k in ("vocab_size", "model_type", "character_coverage",
                                  "lowercase", "model_file", "sha256") if k in c}
        if keep.get("model_file") != f"{side}_sentencepiece.model":
            raise ValueError(f"subwords.{side}.model_file must be {side}_sentencepiece.model")
        out.append(SentencePieceTokenizer.from_config(keep, model_dir))
    return out[0], out[1]


LEVELS = ("subword", "word", "char")


def _fit_subwords(pairs: Sequence[tuple[str, str]], vocab_size: int) -> tuple[Any, Any]:
    """A sentencepiece model per side (unigram, case kept, full character coverage)."""
    from ..text_subword import SentencePieceTokenizer

    return tuple(SentencePieceTokenizer(vocab_size, "unigram", 1.0, lowercase=False)
                 .fit([p[i] for p in pairs]) for i in (0, 1))  # type: ignore[return-value]


# --------------------------------------------------------------------------- training

def train_translator(pairs: Sequence[tuple[str, str]], *, val_pairs: Sequence[tuple[str, str]]
                     | None = None, level: str = "subword", cell: str = "lstm",
                     attention: str | None = "luong", embed_dim: int = 64, units: int = 128,
                     num_words: int | None = None, max_source_len: int | None = None,
                     max_target_len: int | None = None, epochs: int = 20,
                     batch_size: int = 32, lr: float = 3e-3, clip_norm: float = 5.0,
                     seed: int = 0, backend: str = "auto", patience: int | None = None,
                     verbose: int = 0, backup: Backup | None = None, select_by: str = "bleu",
                     subword_vocab: int = 4000, dropout: float = 0.2
                     ) -> tuple[Translator, dict[str, list[float]]]:
    """Fit vocabularies on ``pairs`` and train a :class:`Seq2Seq` with teacher forcing
    (:func:`rnnkit.train.fit`, Adam).

    ``max_*_len`` default to the longest tokenized sentence of ``pairs`` (capped at 50).
    ``dropout`` (see :class:`Seq2Seq`): 0.2 by default, chosen on Tatoeba English-French,
    where it raised cased BLEU from 24.0 to 31.5 (docs/results.md).
    ``val_pairs`` adds a per-epoch ``val_loss`` (teacher-forced cross-entropy per target
    token, averaged over validation batches of ``batch_size`` sentences); ``patience`` stops
    when it has not improved for that many epochs and keeps the best epoch's weights.
    ``select_by="bleu"`` (default, with ``val_pairs``): the model is selected by the greedy
    BLEU of the first :data:`BLEU_PROBE_PAIRS` validation pairs, logged as ``val_bleu``
    each epoch (the lowest validation loss is often not the best translator); ``"loss"``:
    by ``val_loss``.
    Returns ``(translator, history)`` with per-epoch ``loss`` (and ``val_loss``,
    ``val_bleu``).
    """
    if select_by not in ("bleu", "loss"):
        raise ValueError(f"select_by must be 'bleu' or 'loss', got {select_by!r}")
    if not pairs:
        raise ValueError("no training pairs")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    seed_everything(seed)
    subwords = _fit_subwords(pairs, subword_vocab) if level == "subword" else None
    if subwords is not None:
        src_tok = subwords[0].tokenize_many([s for s, _ in pairs])
        tgt_tok = subwords[1].tokenize_many([t for _, t in pairs])
    else:
        src_tok = [tokenize(s, level) for s, _ in pairs]
        tgt_tok = [tokenize(t, level) for _, t in pairs]
    src_vocab = vocabulary_with_end(src_tok, num_words)
    tgt_vocab = vocabulary_with_end(tgt_tok, num_words)
    if max_source_len is None:
        max_source_len = min(max(len(t) for t in src_tok), 50)
    if max_target_len is None:
        max_target_len = min(max(len(t) for t in tgt_tok), 50)
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), embed_dim, units, cell, attention, backend,
                    dropout)
    tr = Translator(model, src_vocab, tgt_vocab, level, max_source_len, max_target_len,
                    subwords)

    def tensors(ps: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor]:
        return (tr.source_ids([s for s, _ in ps]), *tr.target_ids([t for _, t in ps]))

    def batches(data: tuple[Tensor, Tensor, Tensor], rng: np.random.Generator | None):
        for idx in minibatches(len(data[0]), batch_size, rng):
            src, tgt_in, tgt_out = _trim(*(d[torch.from_numpy(idx)] for d in data))
            yield (src, tgt_in), tgt_out

    data = tensors(pairs)
    val = list(batches(tensors(val_pairs), None)) if val_pairs else None
    score = None
    if val_pairs and select_by == "bleu":
        probe = list(val_pairs)[:BLEU_PROBE_PAIRS]
        refs = [tr.reference_text(t) for _, t in probe]

        def val_bleu() -> float:
            return bleu(tr.translate([s for s, _ in probe]), refs)

        score = ("val_bleu", val_bleu)
    history = train(model, Batches(lambda rng: batches(data, rng), seed,
                                   math.ceil(len(pairs) / batch_size)),
                    token_cross_entropy, epochs=epochs, lr=lr, clip_norm=clip_norm, seed=seed,
                    validation_data=val, patience=patience, verbose=verbose, backup=backup,
                    score=score)
    return tr, history


def _trim(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Drop all-padding columns at the end of a batch (shorter time loops)."""
    s = int((src != PAD).sum(1).max())
    t = int((tgt_out != PAD).sum(1).max())
    return src[:, :max(s, 1)], tgt_in[:, :max(t, 1)], tgt_out[:, :max(t, 1)]


# --------------------------------------------------------------------------- evaluation

def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of hypotheses against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], force=True).score)


def evaluate_translator(tr: Translator, pairs: Sequence[tuple[str, str]], beam_width: int = 1,
                        ) -> dict[str, Any]:
    """BLEU, exact-match rate and teacher-forced loss/perplexity on ``pairs``, next to the
    baseline of answering every sentence with the most frequent training-style target."""
    srcs = [s for s, _ in pairs]
    refs = [tr.reference_text(t) for _, t in pairs]
    hyps = tr.translate(srcs, beam_width=beam_width)
    with torch.no_grad():
        tr.model.eval()
        loss = float(tr.loss(srcs, [t for _, t in pairs]))
    common = Counter(refs).most_common(1)[0][0]
    return {"bleu": bleu(hyps, refs), "exact_match": float(np.mean([h == r for h, r in
                                                                   zip(hyps, refs,
                                                                       strict=True)])),
            "loss": loss, "perplexity": math.exp(min(loss, 700)),
            "baseline_bleu": bleu([common] * len(refs), refs), "n": len(pairs),
            "beam_width": beam_width, "examples": list(zip(srcs[:3], hyps[:3], strict=True))}
