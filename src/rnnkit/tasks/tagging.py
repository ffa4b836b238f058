"""Many-to-many sequence tagging (POS, NER): one label per token.

The model, for a sentence of word ids ``w_1 .. w_T`` (0 = padding)::

    e_t   = E[w_t]                                   # Embedding(mask_zero=True)
    h_t   = RNN_L(... RNN_1(e))_t                    # (Bi)LSTM/GRU/SimpleRNN, all steps
    z_t   = h_t W + b                                # logits over K tags (tag 0 = padding)
    P(tag_t = k | w) = softmax(z_t)_k

trained with the masked cross-entropy ``L = -(1/N) sum_{t: y_t != 0} log P(y_t | w)`` where
``N`` is the number of real (unpadded) tokens; the masked token accuracy counts the same
positions. For BIO tag sets, entity-level precision/recall/F1 follow ``conlleval``
(:func:`rnnkit.metrics.entity_scores`).

Readers (each error names the file and the 1-based line):

* :func:`read_conllu` -- Universal Dependencies CoNLL-U: 10 tab-separated columns
  ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``; ``#`` comment lines; a blank line
  ends a sentence; multi-word token ranges (``3-4``) and empty nodes (``5.1``) are skipped, so
  the tagged units are the syntactic words. The tag column is selectable (UPOS by default).
* :func:`read_conll` -- CoNLL-2003 style: whitespace-separated columns ``word ... tag``
  (token column 0 and tag column -1 by default); ``-DOCSTART-`` lines are skipped.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import io
from ..crf import CRF
from ..errors import UserError
from ..io import atomic_write_text
from ..layers import Dense, Embedding
from ..metrics import entity_scores
from ..recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from ..text import OOV, Vocabulary
from .spec import Spec

if TYPE_CHECKING:
    from ..backup import Backup

__all__ = [
    "Sentence", "CONLLU_COLUMNS", "read_conllu", "read_conll", "read_tagged", "tokenize_sentence",
    "TaggerSpec", "SequenceTaggerModel", "Tagger", "masked_cross_entropy",
]

RNN_LAYERS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}
CONLLU_COLUMNS = ["id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps",
                  "misc"]
TAGS_JSON = "tags.json"


@dataclass
class Sentence:
    """Tokens and their tags (equal lengths); ``line`` is where the sentence starts."""

    tokens: list[str]
    tags: list[str]
    line: int = 0


# --------------------------------------------------------------------------- readers

def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_conllu(path: str | Path, tag_column: str | int = "upos") -> list[Sentence]:
    """Sentences of a CoNLL-U file; ``tag_column`` is a column name (``upos``, ``xpos``,
    ``deprel``, ...) or a 0-based index."""
    if isinstance(tag_column, str):
        if tag_column.lower() not in CONLLU_COLUMNS:
            raise UserError(f"unknown CoNLL-U column {tag_column!r} (one of "
                            f"{', '.join(CONLLU_COLUMNS)})")
        col = CONLLU_COLUMNS.index(tag_column.lower())
    else:
        col = int(tag_column)
        if not 0 <= col < 10:
            raise UserError(f"CoNLL-U tag column must be in 0..9, got {col}")
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    expect = 1
    for n, raw in enumerate(_read_lines(path), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tokens, tags, start))
            tokens, tags, expect = [], [], 1
            continue
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 10:
            raise UserError(f"{path}:{n}: expected 10 tab-separated CoNLL-U columns, got "
                            f"{len(parts)}")
        tid = parts[0]
        if re.fullmatch(r"\d+-\d+", tid) or re.fullmatch(r"\d+\.\d+", tid):
            continue  # multi-word token range or empty node
        if not re.fullmatch(r"[0-9]+", tid):
            raise UserError(f"{path}:{n}: bad token ID {tid!r} (expected an integer, a range "
                            "like 3-4, or a decimal like 5.1)")
        if int(tid) != expect:
            raise UserError(f"{path}:{n}: token ID {tid} out of order (expected {expect}; "
                            "is a blank line missing between sentences?)")
        expect += 1
        form, tag = parts[1], parts[col]
        if not form:
            raise UserError(f"{path}:{n}: empty FORM column")
        if tag in ("", "_"):
            raise UserError(f"{path}:{n}: no tag in column {CONLLU_COLUMNS[col].upper()} "
                            f"(got {tag!r})")
        if not tokens:
            start = n
        tokens.append(form)
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags, start))
    if not sentences:
        raise UserError(f"{path}: no sentences found")
    return sentences


def read_conll(path: str | Path, token_column: int = 0, tag_column: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL-2003-style file (whitespace-separated columns, blank-line separated
    sentences, ``-DOCSTART-`` lines skipped). Every token line must have the same number of
    columns."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    ncols: int | None = None
    for n, raw in enumerate(_read_lines(path), 1):
        parts = raw.split()
        if not parts:
            if tokens:
                sentences.append(Sentence(tokens, tags, start))
            tokens, tags = [], []
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if ncols is None:
            ncols = len(parts)
            for c in (token_column, tag_column):
                if not -ncols <= c < ncols:
                    raise UserError(f"{path}:{n}: column {c} does not exist (the line has "
                                    f"{ncols} columns)")
            if ncols < 2:
                raise UserError(f"{path}:{n}: expected at least 2 columns (word and tag), "
                                f"got 1")
        elif len(parts) != ncols:
            raise UserError(f"{path}:{n}: expected {ncols} columns like the first token line, "
                            f"got {len(parts)}")
        if not tokens:
            start = n
        tokens.append(parts[token_column])
        tags.append(parts[tag_column])
    if tokens:
        sentences.append(Sentence(tokens, tags, start))
    if not sentences:
        raise UserError(f"{path}: no sentences found")
    return sentences


def read_tagged(path: str | Path, format: str = "auto", tag_column: str | int | None = None
                ) -> list[Sentence]:
    """Read ``conllu`` or ``conll`` (CoNLL-2003) files; ``auto`` picks CoNLL-U for a
    ``.conllu`` suffix or when the first token line has 10 tab-separated columns whose first
    is an integer ID."""
    if format == "auto":
        format = "conll"
        if str(path).endswith(".conllu"):
            format = "conllu"
        else:
            for line in _read_lines(path):
                if line.strip() and not line.startswith("#"):
                    parts = line.split("\t")
                    if len(parts) == 10 and re.fullmatch(r"\d+(-\d+|\.\d+)?", parts[0]):
                        format = "conllu"
                    break
    if format == "conllu":
        return read_conllu(path, "upos" if tag_column is None else tag_column)
    if format == "conll":
        col = -1 if tag_column is None else tag_column
        if isinstance(col, str):
            try:
                col = int(col)
            except ValueError:
                raise UserError(f"CoNLL-2003 tag column must be an integer index, "
                                f"got {col!r}") from None
        return read_conll(path, 0, col)
    raise UserError(f"format must be 'auto', 'conllu' or 'conll', got {format!r}")


_TOKEN_RE = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)


def tokenize_sentence(text: str) -> list[str]:
    """Split a raw sentence into words and punctuation, keeping case
    (``"Don't stop, U.S.A."`` -> ``["Don't", "stop", ",", "U.S.A", "."]``)."""
    return _TOKEN_RE.findall(text)


# --------------------------------------------------------------------------- model

@dataclass
class TaggerSpec(Spec):
    """Shape of a recurrent tagger."""

    cell: str = "lstm"
    bidirectional: bool = True
    embed_dim: int = 64
    units: int = 64
    layers: int = 1
    #: dropout on each recurrent layer's inputs (the word and character features)
    dropout: float = 0.5
    recurrent_dropout: float = 0.0
    num_words: int | None = 20000
    min_count: int = 1
    #: lowercase words before the vocabulary lookup; None: lowercase exactly when the
    #: character CNN is on, since it sees the original casing (resolved at construction)
    lowercase: bool | None = None
    maxlen: int = 200
    #: filters of the per-word character CNN (0: word embeddings only)
    char_filters: int = 200
    #: a linear-chain CRF over the tag scores (trained on the sentence likelihood, decoded
    #: by Viterbi) instead of one independent softmax per word
    crf: bool = False

    def __post_init__(self) -> None:
        self.check_choice("cell", RNN_LAYERS)
        self.check_positive_ints("embed_dim", "units", "layers", "maxlen", "min_count")
        if isinstance(self.char_filters, bool) or not isinstance(self.char_filters, int) \
                or not 0 <= self.char_filters <= 4096:
            raise UserError(f"char-filters must be an integer in [0, 4096], got "
                            f"{self.char_filters!r}")
        self.check_num_words()
        self.check_rates("dropout", "recurrent_dropout")
        if self.lowercase is None:
            self.lowercase = self.char_filters > 0
        elif not isinstance(self.lowercase, bool):
            raise UserError(f"lowercase must be true or false, got {self.lowercase!r}")


#: characters per word the character CNN reads, and the size of its character vocabulary
MAX_WORD_CHARS, MAX_CHARS = 20, 1000


@io.register_model("SequenceTagger")
class SequenceTaggerModel(nn.Module):
    """Per word ``[E_w[id]; max_k ReLU(conv_3(E_c[chars]))_k]`` -> stacked (Bi)RNN returning
    sequences -> Dense logits per step.

    ``forward(ids, chars=None)``: word ids ``(batch, time)`` and, when the model has the
    character CNN (``char_vocab > 0``), each word's character ids ``(batch, time, C)``
    (0 = padding); returns logits ``(batch, time, num_tags)``. Padded positions (word id 0)
    do not update the recurrent state. The character CNN gives unseen words (id 2) a
    representation from their spelling: suffixes, capitals, digits, hyphens.
    """

    def __init__(self, vocab_size: int, num_tags: int, embed_dim: int = 64, units: int = 64,
                 cell: str = "lstm", layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, char_vocab: int = 0,
                 char_embed: int = 16, char_filters: int = 200, crf: bool = False):
        super().__init__()
        self.cfg = {"vocab_size": vocab_size, "num_tags": num_tags, "embed_dim": embed_dim,
                    "units": units, "cell": cell, "layers": layers,
                    "bidirectional": bidirectional, "dropout": dropout,
                    "recurrent_dropout": recurrent_dropout, "char_vocab": char_vocab,
                    "char_embed": char_embed, "char_filters": char_filters, "crf": crf}
        #: the CRF over the logits (tag 0, padding, is never decoded), or None
        self.crf = CRF(num_tags) if crf else None
        self.embedding = Embedding(vocab_size, embed_dim, mask_zero=True)
        size = embed_dim
        self.char_embedding = self.char_conv = None
        if char_vocab > 0 and char_filters > 0:
            self.char_embedding = nn.Embedding(char_vocab, char_embed, padding_idx=0)
            self.char_conv = nn.Conv1d(char_embed, char_filters, 3, padding=1)
            size += char_filters
        rnns = []
        for _ in range(layers):
            rnn = RNN_LAYERS[cell](units, input_size=size, return_sequences=True,
                                   dropout=dropout, recurrent_dropout=recurrent_dropout)
            layer = Bidirectional(rnn) if bidirectional else rnn
            rnns.append(layer)
            size = layer.output_size()
        self.rnns = nn.ModuleList(rnns)
        self.out = Dense(num_tags, input_size=size)

    def forward(self, ids: Tensor, chars: Tensor | None = None) -> Tensor:
        mask = ids != 0
        x = self.embedding(ids)
        if self.char_conv is not None:
            if chars is None:
                raise ValueError("this tagger needs the words' character ids")
            b, t, c = chars.shape
            e = self.char_embedding(chars.reshape(b * t, c)).transpose(1, 2)  # (BT, E, C)
            h = torch.relu(self.char_conv(e))
            h = h.masked_fill((chars.reshape(b * t, 1, c) == 0), 0.0).amax(-1)
            x = torch.cat([x, h.reshape(b, t, -1)], dim=-1)
        for rnn in self.rnns:
            x = rnn(x, mask=mask)
        return self.out.logits(x)

    def get_config(self) -> dict:
        return dict(self.cfg)


def tag_loss(model: SequenceTaggerModel) -> Callable[[Tensor, Tensor], Tensor]:
    """The model's training loss: the CRF's negative log-likelihood per real token, or the
    masked per-token cross-entropy."""
    crf = model.crf
    if crf is None:
        return masked_cross_entropy

    def nll(logits: Tensor, targets: Tensor) -> Tensor:
        return crf.nll(logits, targets.long(), targets != 0)

    return nll


def masked_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over positions whose target tag is not 0 (padding)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       targets.reshape(-1).long(), ignore_index=0)


def _masked_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    m = targets != 0
    hit = (logits.argmax(-1) == targets) & m
    return hit.sum().float() / m.sum().clamp(min=1).float()


class Tagger:
    """A sequence tagger: model + word vocabulary + tag list; train, tag, evaluate, save."""

    task = "tagger"

    def __init__(self, model: SequenceTaggerModel, vocab: Vocabulary, tags: list[str],
                 spec: TaggerSpec, baseline: dict[str, Any] | None = None,
                 chars: list[str] | None = None):
        self.model, self.vocab, self.tags, self.spec = model, vocab, list(tags), spec
        #: the character vocabulary of the character CNN (id = 2 + position; 0 pad, 1 other)
        self.chars = list(chars) if chars else None
        self.char_index = {ch: i + 2 for i, ch in enumerate(self.chars or [])}
        #: per-word most frequent tag from the training data (the trivial baseline)
        self.baseline = baseline or {}
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, spec: TaggerSpec, train: Sequence[Sentence]) -> Tagger:
        """Fit the word vocabulary and tag set on ``train`` and build an untrained model."""
        if not train:
            raise UserError("no training sentences")
        norm = _normaliser(spec.lowercase)
        vocab = Vocabulary.fit(([norm(t) for t in s.tokens] for s in train), spec.num_words,
                               spec.min_count)
        tags = ["<pad>", *sorted({t for s in train for t in s.tags})]
        chars = None
        if spec.char_filters > 0:
            counts = Counter(ch for s in train for t in s.tokens for ch in t[:MAX_WORD_CHARS])
            chars = [ch for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                     ][:MAX_CHARS]
        model = SequenceTaggerModel(len(vocab), len(tags), spec.embed_dim, spec.units, spec.cell,
                                    spec.layers, spec.bidirectional, spec.dropout,
                                    spec.recurrent_dropout,
                                    char_vocab=len(chars) + 2 if chars else 0,
                                    char_filters=spec.char_filters, crf=spec.crf)
        return cls(model, vocab, tags, spec, _fit_baseline(train, norm), chars)

    # -- encoding --------------------------------------------------------------------------
    def encode_tokens(self, token_lists: Sequence[Sequence[str]], maxlen: int | None = None
                      ) -> Tensor:
        """``(n, T)`` word ids, post-padded with 0; T = longest sentence (capped at maxlen)."""
        norm = _normaliser(self.spec.lowercase)
        ids = [self.vocab.encode([norm(t) for t in toks], add_start=False)
               for toks in token_lists]
        return _pad(ids, maxlen)

    def inputs(self, token_lists: Sequence[Sequence[str]], maxlen: int | None = None
               ) -> tuple[Tensor, ...]:
        """The model's inputs: ``(word ids,)``, or ``(word ids, character ids (n, T, C))``
        for a model with the character CNN (the original casing: capitals are a feature)."""
        ids = self.encode_tokens(token_lists, maxlen)
        if self.chars is None:
            return (ids,)
        n, t = ids.shape
        c = max((min(len(w), MAX_WORD_CHARS) for toks in token_lists for w in toks[:t]),
                default=1)
        out = np.zeros((n, t, max(c, 1)), dtype=np.int64)
        get = self.char_index.get
        for i, toks in enumerate(token_lists):
            for j, w in enumerate(toks[:t]):
                w = w[:MAX_WORD_CHARS]
                out[i, j, :len(w)] = [get(ch, 1) for ch in w]
        return ids, torch.from_numpy(out)

    def encode_tags(self, tag_lists: Sequence[Sequence[str]], maxlen: int | None = None
                    ) -> Tensor:
        out = []
        for i, tags in enumerate(tag_lists):
            row = []
            for t in tags:
                if t not in self.tag_index or t == "<pad>":
                    raise UserError(f"sentence {i + 1}: tag {t!r} was not seen in training "
                                    f"(known: {', '.join(self.tags[1:])})")
                row.append(self.tag_index[t])
            out.append(row)
        return _pad(out, maxlen)

    def encode(self, sentences: Sequence[Sentence], maxlen: int | None = None
               ) -> tuple[Tensor | tuple[Tensor, ...], Tensor]:
        """``(inputs, tags)``: the word ids (a tensor), or the ``(word ids, character ids)``
        pair for a model with the character CNN, and the tag ids."""
        maxlen = maxlen or self.spec.maxlen
        x = self.inputs([s.tokens for s in sentences], maxlen)
        return (x[0] if len(x) == 1 else x,
                self.encode_tags([s.tags for s in sentences], maxlen))

    # -- training --------------------------------------------------------------------------
    def fit(self, train: Sequence[Sentence], validation: Sequence[Sentence] | None = None, *,
            optimizer: str = "adam", lr: float = 1e-2, batch_size: int = 32, epochs: int = 10,
            patience: int = 0, seed: int | None = 42, clip_norm: float | None = 5.0,
            unk_singletons: float = 0.8, out: str | Path | None = None, verbose: int = 0,
            backup: Backup | None = None):
        """Train with the masked cross-entropy; returns the trainer's History.

        ``unk_singletons``: each occurrence of a word seen only once in ``train`` is replaced
        by the unknown id 2 with this probability (drawn once, seeded), so the model learns
        what to do with words it has never seen."""
        from ..callbacks import stop_and_checkpoint
        from ..train import fit

        x, y = self.encode(train)
        if unk_singletons > 0:
            if isinstance(x, tuple):  # the word ids only: the spelling stays
                x = (self._unk_singletons(train, x[0], unk_singletons, seed), *x[1:])
            else:
                x = self._unk_singletons(train, x, unk_singletons, seed)
        val = self.encode(validation) if validation else None
        callbacks = stop_and_checkpoint(val is not None, patience, out, self.save)
        start = time.perf_counter()
        history = fit(self.model, x, y, validation_data=val, loss=tag_loss(self.model),
                      metrics={"accuracy": _masked_accuracy}, optimizer=optimizer, lr=lr,
                      batch_size=batch_size, epochs=epochs, callbacks=callbacks, seed=seed,
                      clip_norm=clip_norm, verbose=verbose, backup=backup)
        self.train_seconds = time.perf_counter() - start
        return history

    def _unk_singletons(self, train: Sequence[Sentence], x: Tensor, rate: float,
                        seed: int | None) -> Tensor:
        norm = _normaliser(self.spec.lowercase)
        counts = Counter(norm(t) for s in train for t in s.tokens)
        single = torch.tensor(sorted({self.vocab.id(w) for w, c in counts.items() if c == 1}
                                     - {OOV}), dtype=torch.long)
        if single.numel() == 0:
            return x
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        drop = torch.isin(x, single) & (torch.rand(x.shape, generator=gen) < rate)
        return torch.where(drop, torch.full_like(x, OOV), x)

    # -- prediction ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, token_lists: Sequence[Sequence[str]], batch_size: int = 64
                ) -> list[list[str]]:
        """The most probable tag of every token (sentences of any length)."""
        self.model.eval()
        out: list[list[str]] = []
        for i in range(0, len(token_lists), batch_size):
            chunk = token_lists[i:i + batch_size]
            for j, toks in enumerate(chunk):
                if not toks:
                    raise UserError(f"sentence {i + j + 1} has no tokens")
            ids = self.inputs(chunk)
            logits = self.model(*ids)
            if self.model.crf is not None:
                best = self.model.crf.decode(logits, ids[0] != 0)
            else:
                logits[..., 0] = -torch.inf  # never predict padding
                best = logits.argmax(-1).tolist()
            out.extend([self.tags[k] for k in row[:len(toks)]]
                       for row, toks in zip(best, chunk, strict=True))
        return out

    def tag(self, text: str) -> list[tuple[str, str]]:
        """Tokenize a raw sentence and tag it: ``[(token, tag), ...]``."""
        toks = tokenize_sentence(text)
        if not toks:
            raise UserError("the sentence has no tokens")
        return list(zip(toks, self.predict([toks])[0], strict=True))

    def baseline_predict(self, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
        """Trivial baseline: each word's most frequent training tag, else the overall one."""
        norm = _normaliser(self.spec.lowercase)
        words, default = self.baseline.get("words", {}), self.baseline.get("default", "O")
        return [[words.get(norm(t), default) for t in toks] for toks in token_lists]

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, sentences: Sequence[Sentence]) -> dict[str, Any]:
        """Masked loss and token accuracy, the two trivial baselines' token accuracy, and for
        BIO tag sets the entity-level precision/recall/F1 of model and baseline."""
        if not sentences:
            raise UserError("no sentences to evaluate")
        self.model.eval()
        unknown = sorted({t for s in sentences for t in s.tags} - set(self.tags[1:]))
        if unknown:
            raise UserError(f"tags not seen in training: {', '.join(unknown[:5])}")
        losses, n_tok = 0.0, 0
        for i in range(0, len(sentences), 256):
            x, y = self.encode(sentences[i:i + 256], maxlen=10**9)
            n = int((y != 0).sum())
            logits = self.model(*x) if isinstance(x, tuple) else self.model(x)
            losses += float(tag_loss(self.model)(logits, y)) * n
            n_tok += n
        tokens = [s.tokens for s in sentences]
        gold = [s.tags for s in sentences]
        pred = self.predict(tokens)
        base = self.baseline_predict(tokens)
        majority = self.baseline.get("default", "O")

        def tok_acc(p: list[list[str]]) -> float:
            hit = sum(a == b for gs, ps in zip(gold, p, strict=True)
                      for a, b in zip(gs, ps, strict=True))
            return hit / n_tok

        res: dict[str, Any] = {
            "loss": losses / n_tok, "token_accuracy": tok_acc(pred), "tokens": n_tok,
            "sentences": len(sentences),
            "baseline_word_majority_accuracy": tok_acc(base),
            "baseline_majority_tag_accuracy": tok_acc([[majority] * len(g) for g in gold]),
        }
        if self.is_bio:
            ent = entity_scores(gold, pred)
            bent = entity_scores(gold, base)
            res["entity"] = {k: ent[k] for k in ("precision", "recall", "f1", "support",
                                                 "predicted")}
            res["entity_per_type"] = ent["per_type"]
            res["baseline_word_majority_entity_f1"] = bent["f1"]
        return res

    @property
    def is_bio(self) -> bool:
        """True when every tag is ``O`` or has a ``B-``/``I-``/``E-``/``S-`` prefix."""
        real = self.tags[1:]
        return any(t != "O" for t in real) and all(
            t == "O" or (len(t) > 2 and t[0] in "BIES" and t[1] == "-") for t in real)

    # -- persistence -----------------------------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        """``weights.safetensors`` + ``config.json`` (spec, tags) + ``tags.json`` (vocabulary
        and baseline), each written atomically."""
        import json

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(model_dir / TAGS_JSON, json.dumps(
            {"vocabulary": self.vocab.to_json(), "baseline": self.baseline,
             "characters": self.chars},
            ensure_ascii=False))
        io.save_model(model_dir, self.model, task=self.task,
                      extra={"tags": self.tags, "tagger": self.spec.to_dict()})
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> Tagger:
        import json

        model, cfg = io.load_model(model_dir)
        path = Path(model_dir) / TAGS_JSON
        if not path.is_file():
            raise UserError(f"{model_dir} has no {TAGS_JSON}")
        try:
            side = io.read_json(path, "tagger vocabulary")
            vocab = Vocabulary.from_json(side["vocabulary"])
            spec = TaggerSpec.from_dict(cfg["tagger"])
            tags = list(cfg["tags"])
            if (not tags or not all(isinstance(t, str) for t in tags)
                    or len(set(tags)) != len(tags)):
                raise ValueError("tags must be distinct strings")
            base = side.get("baseline") or {} if isinstance(side, dict) else None
            if not isinstance(base, dict) or not isinstance(base.get("words", {}), dict) \
                    or not isinstance(base.get("default", "O"), str):
                raise ValueError("tags.json must be an object with a baseline object")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{model_dir}: not a tagger model ({type(e).__name__}: {e})"
                            ) from None
        if not isinstance(model, SequenceTaggerModel):
            raise UserError(f"{model_dir}: not a tagger model")
        chars = side.get("characters")
        want = model.cfg.get("char_vocab", 0)
        if chars is not None and (not isinstance(chars, list) or len(chars) > MAX_CHARS
                                  or not all(isinstance(c, str) and len(c) == 1 for c in chars)
                                  or len(set(chars)) != len(chars)):
            raise UserError(f"{path}: corrupt character vocabulary")
        if (len(chars) + 2 if chars else 0) != want:
            raise UserError(f"{path}: the character vocabulary does not match the model "
                            f"({len(chars or [])} characters, the model has {want})")
        if len(vocab) > model.cfg["vocab_size"] or len(tags) != model.cfg["num_tags"]:
            raise UserError(f"{model_dir}: the vocabulary or tag list does not match the model")
        return cls(model, vocab, tags, spec, side.get("baseline"), chars)


def _normaliser(lowercase: bool):
    return str.lower if lowercase else (lambda s: s)


def _fit_baseline(train: Iterable[Sentence], norm) -> dict[str, Any]:
    per_word: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for s in train:
        for w, t in zip(s.tokens, s.tags, strict=True):
            per_word.setdefault(norm(w), Counter())[t] += 1
            overall[t] += 1
    # ties broken by tag name so the baseline does not depend on the order of the data
    pick = lambda c: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # noqa: E731
    return {"default": pick(overall), "words": {w: pick(c) for w, c in per_word.items()}}


def _pad(rows: Sequence[Sequence[int]], maxlen: int | None) -> Tensor:
    longest = max((len(r) for r in rows), default=1)
    t = max(1, min(longest, maxlen) if maxlen else longest)
    out = np.zeros((len(rows), t), dtype=np.int64)
    for i, r in enumerate(rows):
        r = list(r)[:t]
        out[i, :len(r)] = r
    return torch.from_numpy(out)
