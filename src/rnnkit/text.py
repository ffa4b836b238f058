"""Text pipeline: raw text -> tokens -> integer ids -> padded ``(n, maxlen)`` id matrix.

Contract (the Keras ``imdb.load_data`` convention, ``index_from=3``)::

    tokens = tokenizer.tokenize(text)
    ids    = [1] + [vocab.id(t) for t in tokens]      # 1 = start (``add_start``)
    vocab.id(t) = 3 + rank(t)   if rank(t) < num_words - 3   (rank 0 = most frequent)
                = 2             otherwise (out of vocabulary)
    x      = pad_sequences(ids, maxlen, padding, truncating, value=0)   # 0 = padding

so every id lies in ``[0, num_words)`` and ``len(vocab) <= num_words``.

Difference from Keras: in ``keras.datasets.imdb.load_data`` word ranks start at 1, so its
first word has id 4 and id 3 is never used (``num_words - 4`` real words). Here the first word
has id 3 (``num_words - 3`` real words); :meth:`Vocabulary.from_word_index` reproduces Keras's
ids exactly when needed (e.g. to decode ``imdb.npz`` ids).

* :class:`Tokenizer` -- pluggable tokenizers (``tokenize``, optional ``fit``, ``get_config``,
  ``from_config``, ``save_assets``) with a name registry (:func:`register_tokenizer`,
  :func:`get_tokenizer`, :func:`tokenizer_from_config`). Built in: ``"basic"``.
* :class:`Vocabulary` -- most frequent tokens; JSON save/load.
* :func:`pad_sequences` -- identical to ``keras.utils.pad_sequences`` (default dtype int64).
* :func:`length_stats`, :func:`suggest_maxlen` -- choose ``maxlen`` from token counts.
* :class:`TextEncoder` -- tokenizer + vocabulary + maxlen + padding, saved as ``text.json``.

One-hot encoding of the ids is :func:`rnnkit.layers.one_hot` / :class:`rnnkit.layers.OneHot`;
embedding is :class:`rnnkit.layers.Embedding`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from .errors import UserError
from .io import atomic_write_text, check_config_values

__all__ = [
    "PAD", "START", "OOV", "INDEX_FROM",
    "Tokenizer", "BasicTokenizer", "register_tokenizer", "get_tokenizer",
    "tokenizer_from_config", "available_tokenizers",
    "Vocabulary", "pad_sequences", "length_stats", "suggest_maxlen", "format_length_stats",
    "TextEncoder", "atomic_write_text",
]

#: reserved ids (Keras ``imdb.load_data`` convention)
PAD, START, OOV = 0, 1, 2
#: id of the most frequent word
INDEX_FROM = 3
_SPECIAL_TOKENS = {PAD: "<pad>", START: "<start>", OOV: "<oov>"}
_UNUSED = "<unused>"  # id 3 of a vocabulary built from a Keras word index

_R = TypeVar("_R")

TEXT_JSON = "text.json"
#: the longest ``maxlen`` a saved text encoder may ask for (tokens per text)
MAX_MAXLEN = 100_000
_FORMAT = "rnnkit.text"
_FORMAT_VERSION = 1


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of token strings in lists
    (no reference cycles are created; its repeated scans of those lists cost ~15 %)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _no_gc(fn: Callable[..., _R]) -> Callable[..., _R]:
    """Decorator: run ``fn`` with the cyclic garbage collector paused."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        with _gc_paused():
            return fn(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- tokenizers

_REGISTRY: dict[str, type[Tokenizer]] = {}
#: tokenizers with optional dependencies: name -> module that registers it on import
_LAZY: dict[str, str] = {"ko": "rnnkit.text_ko", "sentencepiece": "rnnkit.text_subword"}


class Tokenizer:
    """Base class of tokenizers: ``tokenize(text) -> list[str]``.

    To add one, subclass and register it::

        @register_tokenizer("mine")
        class MyTokenizer(Tokenizer):
            def __init__(self, lowercase: bool = True):
                self.lowercase = lowercase
            def tokenize(self, text: str) -> list[str]:
                ...
            def get_config(self) -> dict:
                return {**super().get_config(), "lowercase": self.lowercase}

    Saving contract (used by :meth:`TextEncoder.save`):

    * ``get_config()`` returns a JSON-safe dict containing ``"name"`` (the registered name) and
      ``"module"`` (where the class is defined; informational only: loading never imports a
      module named in a file, so the class must be registered before loading, or be one of
      the built-in lazy names in ``_LAZY``).
    * ``from_config(cfg, model_dir)`` rebuilds the tokenizer; the default calls
      ``cls(**options)`` with every key except ``name`` and ``module``.
    * A tokenizer with state that is not JSON (e.g. a sentencepiece model) overrides
      ``save_assets(model_dir)`` to write its side file(s) into ``model_dir`` (atomically) and
      records the file name *relative to model_dir* in ``get_config()``; its ``from_config``
      resolves that name against ``model_dir``. ``save_assets`` is called before
      ``get_config``.
    * A tokenizer that must be trained sets ``needs_fit = True`` and implements ``fit(texts)``;
      :meth:`TextEncoder.fit` calls it on the training texts before building the vocabulary.
    """

    #: registered name, set by :func:`register_tokenizer`
    name: ClassVar[str] = ""
    #: True when :meth:`fit` must be called before :meth:`tokenize`
    needs_fit: ClassVar[bool] = False

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Tokenize several texts (override for a faster batch implementation)."""
        tok = self.tokenize
        return [tok(t) for t in texts]

    def fit(self, texts: Iterable[str]) -> Tokenizer:
        """Train on texts (no-op for rule-based tokenizers). Returns self."""
        return self

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "module": type(self).__module__}

    def save_assets(self, model_dir: str | os.PathLike) -> None:
        """Write side files into ``model_dir`` (none by default)."""

    @classmethod
    def from_config(cls, cfg: dict[str, Any], model_dir: str | os.PathLike | None = None
                    ) -> Tokenizer:
        options = {k: v for k, v in cfg.items() if k not in ("name", "module")}
        return cls(**options)

    def __call__(self, text: str) -> list[str]:
        return self.tokenize(text)

    def __repr__(self) -> str:
        opts = {k: v for k, v in self.get_config().items() if k not in ("name", "module")}
        args = ", ".join(f"{k}={v!r}" for k, v in opts.items())
        return f"{type(self).__name__}({args})"


def register_tokenizer(name: str) -> Callable[[type[Tokenizer]], type[Tokenizer]]:
    """Class decorator: register a :class:`Tokenizer` subclass under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError("tokenizer name must be a non-empty string")

    def deco(cls: type[Tokenizer]) -> type[Tokenizer]:
        if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
            raise TypeError(f"{cls!r} is not a subclass of rnnkit.text.Tokenizer")
        old = _REGISTRY.get(name)
        if old is not None and old is not cls and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"tokenizer name {name!r} is already used by {old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_tokenizers() -> list[str]:
    """Names of the registered tokenizers (and of the lazily imported ones)."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def _import_lazy(name: str) -> None:
    """Import the module of a lazily registered tokenizer (its extra may raise UserError)."""
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])


def get_tokenizer(name: str | Tokenizer = "basic", **options: Any) -> Tokenizer:
    """A tokenizer instance from its registered name (or pass an instance through)."""
    if isinstance(name, Tokenizer):
        if options:
            raise ValueError("options can only be given with a tokenizer name")
        return name
    _import_lazy(name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown tokenizer {name!r}; available: "
                         f"{', '.join(available_tokenizers())}")
    return _REGISTRY[name](**options)


def tokenizer_from_config(cfg: dict[str, Any], model_dir: str | os.PathLike | None = None
                          ) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.get_config` output.

    The class comes from the registry by ``name`` only; a name with an optional dependency
    loads its module from the fixed table ``_LAZY`` written in this file. Nothing read from
    the config (e.g. its ``module`` key) ever chooses a module to import."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise ValueError(f"a tokenizer config must be a dict with a 'name', got {cfg!r:.80}")
    name = cfg["name"]
    _import_lazy(name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown tokenizer {name!r:.40}; available: "
                         f"{', '.join(available_tokenizers())}")
    try:
        return _REGISTRY[name].from_config(cfg, model_dir)
    except TypeError as e:
        raise ValueError(f"bad options for tokenizer {name!r}: {e}") from None


_BR_RE = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
# letters and digits of any script (``[^\W_]``) plus the common combining marks (accents,
# Hebrew/Arabic points, Devanagari and Thai vowel signs), which ``\w`` does not match
_MARKS = ("\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
          "\u0610-\u061a\u064b-\u065f\u0670\u0900-\u0903\u093a-\u094f\u0951-\u0957"
          "\u0962\u0963\u0e31\u0e34-\u0e3a\u0e47-\u0e4e")
_WORD_RE = re.compile(rf"(?:[^\W_]|[{_MARKS}])+")
_WS_RE = re.compile(r"\s")
_WS_BACK_RE = re.compile(r"\s(?=\S*\Z)")  # the last whitespace character
_APOSTROPHE_CHARS = "'`\u2019\u02bc\u00b4"
_APOSTROPHES = str.maketrans("", "", _APOSTROPHE_CHARS)
# fast path: ASCII non-alphanumerics -> space, apostrophes deleted; then str.split
_TABLE = str.maketrans({**{chr(i): " " for i in range(128) if not chr(i).isalnum()},
                        **dict.fromkeys(_APOSTROPHE_CHARS)})


@register_tokenizer("basic")
class BasicTokenizer(Tokenizer):
    """English-style word tokenizer.

    1. lowercase (``str.lower``; option ``lowercase``);
    2. replace HTML line breaks ``<br>``, ``<br/>``, ``<br />`` by a space;
    3. delete apostrophes (``'``, ``’``, ``ʼ``, `````, ``´``) so ``don't`` -> ``dont``;
    4. tokens = maximal runs of letters/digits of any script (``str.isalnum``) plus the common
       combining marks, so every other character -- punctuation, symbols, ``_``, spaces --
       separates tokens.

    Implementation: ``str.translate`` + ``str.split`` (the regex ``_WORD_RE`` only for the
    rare pieces that are not alphanumeric after that), about 3x faster than a regex alone.
    """

    def __init__(self, lowercase: bool = True):
        self.lowercase = bool(lowercase)

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects str, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        if "<" in text:
            text = _BR_RE.sub(" ", text)
        pieces = text.translate(_TABLE).split()
        if text.isascii():
            return pieces
        out: list[str] = []
        for p in pieces:
            if p.isalnum():
                out.append(p)
            else:
                out.extend(_WORD_RE.findall(p))
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lowercase": self.lowercase}


# --------------------------------------------------------------------------- vocabulary

class Vocabulary:
    """Word <-> id map: 0 padding, 1 start, 2 out-of-vocabulary, words from id 3.

    ``words[i]`` has id ``3 + i``; words are sorted by decreasing count in the fitted texts,
    ties broken alphabetically (by code point) so the result does not depend on text order.
    ``num_words`` is the Keras cap: ids ``>= num_words`` become 2, so at most ``num_words - 3``
    real words are kept. ``len(vocab)`` is the number of ids in use (``3 + len(words)``), the
    right ``input_dim`` for an embedding or the depth of a one-hot encoding.
    """

    def __init__(self, words: Sequence[str] = (), counts: Sequence[int] | None = None,
                 num_words: int | None = None):
        words = list(words)
        if num_words is not None:
            num_words = int(num_words)
            if num_words < INDEX_FROM:
                raise ValueError(f"num_words must be >= {INDEX_FROM} (0 pad, 1 start, 2 oov), "
                                 f"got {num_words}")
            if len(words) > num_words - INDEX_FROM:
                words = words[: num_words - INDEX_FROM]
        if counts is not None:
            counts = [int(c) for c in counts][: len(words)]
            if len(counts) != len(words):
                raise ValueError("counts must have one entry per word")
        self.words: list[str] = words
        self.counts: list[int] | None = counts
        self.num_words: int | None = num_words
        self.index: dict[str, int] = {w: i + INDEX_FROM for i, w in enumerate(words)}
        if len(self.index) != len(words):
            dup = [w for w, c in Counter(words).items() if c > 1][:3]
            raise ValueError(f"duplicate words in vocabulary: {dup}")

    # construction -------------------------------------------------------------------------
    @classmethod
    @_no_gc
    def fit(cls, token_lists: Iterable[Sequence[str]], num_words: int | None = None,
            min_count: int = 1) -> Vocabulary:
        """Keep the ``num_words - 3`` most frequent tokens (all when ``num_words`` is None)
        that occur at least ``min_count`` times."""
        token_lists = list(token_lists)
        if any(isinstance(tokens, str) for tokens in token_lists):
            raise TypeError("Vocabulary.fit expects lists of tokens, got a str; "
                            "tokenize the texts first")
        counter = Counter(chain.from_iterable(token_lists))
        items = sorted(((w, c) for w, c in counter.items() if c >= min_count),
                       key=lambda wc: (-wc[1], wc[0]))
        if num_words is not None:
            items = items[: max(int(num_words) - INDEX_FROM, 0)]
        return cls([w for w, _ in items], [c for _, c in items], num_words=num_words)

    @classmethod
    def from_word_index(cls, word_index: dict[str, int], num_words: int | None = None
                        ) -> Vocabulary:
        """From a Keras ``imdb.get_word_index()`` map (word -> frequency rank, 1 = most
        frequent) so that ids equal ``keras.datasets.imdb.load_data``'s: word of rank r ->
        id ``r + 3``. Keras never uses id 3 (its ranks start at 1); here it is held by the
        placeholder word ``"<unused>"``."""
        by_rank = sorted(word_index.items(), key=lambda wr: wr[1])
        ranks = [r for _, r in by_rank]
        if ranks != list(range(1, len(ranks) + 1)):
            raise ValueError("word_index ranks must be 1, 2, ..., n")
        return cls([_UNUSED, *(w for w, _ in by_rank)], num_words=num_words)

    # use ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return INDEX_FROM + len(self.words)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocabulary) and self.words == other.words
                and self.num_words == other.num_words)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self.words)} words, num_words={self.num_words})"

    def id(self, token: str) -> int:
        return self.index.get(token, OOV)

    def encode(self, tokens: Sequence[str], add_start: bool = True) -> list[int]:
        """Ids of ``tokens`` (unknown -> 2), preceded by 1 when ``add_start``."""
        ids = list(map(self.index.get, tokens, repeat(OOV, len(tokens))))
        return [START, *ids] if add_start else ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> list[str]:
        """Tokens of ``ids``; 0/1/2 as ``<pad>``/``<start>``/``<oov>`` (or dropped)."""
        out = []
        n = len(self.words)
        for i in ids:
            i = int(i)
            if i < INDEX_FROM:
                if i < 0:
                    raise ValueError(f"negative token id {i}")
                if not skip_special:
                    out.append(_SPECIAL_TOKENS[i])
            elif i - INDEX_FROM < n:
                out.append(self.words[i - INDEX_FROM])
            else:
                raise ValueError(f"token id {i} is outside this vocabulary (size {len(self)})")
        return out

    # persistence --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"num_words": self.num_words, "pad": PAD, "start": START, "oov": OOV,
                             "index_from": INDEX_FROM, "words": list(self.words)}
        if self.counts is not None:
            d["counts"] = list(self.counts)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Vocabulary:
        """Inverse of :meth:`to_json`; ValueError on a malformed dict."""
        if not isinstance(d, dict) or not isinstance(d.get("words"), list):
            raise ValueError("vocabulary must be an object with a 'words' list")
        if (d.get("pad", PAD), d.get("start", START), d.get("oov", OOV),
                d.get("index_from", INDEX_FROM)) != (PAD, START, OOV, INDEX_FROM):
            raise ValueError("unsupported special ids (expected pad 0, start 1, oov 2, "
                             "index_from 3)")
        words = d["words"]
        if not all(isinstance(w, str) for w in words):
            raise ValueError("vocabulary words must be strings")
        counts = d.get("counts")
        if counts is not None and (not isinstance(counts, list) or len(counts) != len(words)
                                   or not all(isinstance(c, int) for c in counts)):
            raise ValueError("vocabulary counts must be a list of ints, one per word")
        num_words = d.get("num_words")
        if num_words is not None and (not isinstance(num_words, int)
                                      or len(words) > num_words - INDEX_FROM):
            raise ValueError(f"num_words {num_words!r} does not fit {len(words)} words")
        return cls(words, counts, num_words=num_words)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary JSON file; UserError when missing or corrupt."""
        data = _read_json(Path(path), "vocabulary")
        try:
            return cls.from_json(data)
        except ValueError as e:
            raise UserError(f"{path}: corrupt vocabulary ({e})") from None


def _read_json(path: Path, what: str) -> Any:
    from .io import read_json

    return read_json(path, what)


# --------------------------------------------------------------------------- padding

def pad_sequences(sequences: Sequence[Sequence[Any]], maxlen: int | None = None,
                  padding: str = "pre", truncating: str = "pre", value: Any = 0,
                  dtype: Any = np.int64) -> np.ndarray:
    """Sequences -> array ``(n, maxlen, *item_shape)``, as ``keras.utils.pad_sequences``.

    ``maxlen=None`` uses the longest sequence. A longer sequence loses its first
    (``truncating='pre'``, keep the end) or last (``'post'``) items; a shorter one gets ``value``
    before (``padding='pre'``) or after (``'post'``) it. Defaults pad and truncate at the front,
    so the last steps an RNN sees are the text's last words and not padding.
    Unlike Keras the default dtype is int64 (torch's index type), ``padding``/``truncating``
    are checked up front, and an empty input gives shape ``(0, maxlen or 0)``.
    """
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
    if not hasattr(sequences, "__len__") or isinstance(sequences, (str, bytes)):
        raise ValueError("sequences must be a list of sequences")
    try:
        lengths = [len(s) for s in sequences]
    except TypeError:
        raise ValueError("sequences must be a list of sequences (found an item without "
                         "a length)") from None
    if maxlen is None:
        maxlen = max(lengths, default=0)
    elif isinstance(maxlen, bool) or int(maxlen) != maxlen or maxlen < 0:
        raise ValueError(f"maxlen must be a non-negative integer or None, got {maxlen!r}")
    maxlen = int(maxlen)
    item_shape: tuple[int, ...] = ()
    for s, n in zip(sequences, lengths, strict=True):
        if n:
            item_shape = np.asarray(s[:1]).shape[1:]
            break
    if isinstance(value, str) and dtype is not object and not (
            np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_)):
        raise ValueError(f"dtype {dtype} cannot hold the string padding value {value!r}; "
                         "use dtype=object")
    out = np.full((len(lengths), maxlen, *item_shape), value, dtype=dtype)
    if maxlen == 0:
        return out
    if not item_shape and _pad_ints_fast(out, sequences, lengths, padding, truncating):
        return out
    for i, (s, n) in enumerate(zip(sequences, lengths, strict=True)):
        if not n:
            continue
        if n > maxlen:
            s = s[n - maxlen:] if truncating == "pre" else s[:maxlen]
            n = maxlen
        arr = np.asarray(s, dtype=dtype)
        if arr.shape[1:] != item_shape:
            raise ValueError(f"sequence {i} has items of shape {arr.shape[1:]}, expected "
                             f"{item_shape} (from the first non-empty sequence)")
        if padding == "post":
            out[i, :n] = arr
        else:
            out[i, maxlen - n:] = arr
    return out


def _pad_ints_fast(out: np.ndarray, sequences: Sequence[Sequence[Any]], lengths: list[int],
                   padding: str, truncating: str) -> bool:
    """Vectorised fill of ``out`` for sequences of ints (the common case); False when the
    input is not that (then the general loop runs, same result)."""
    if out.dtype.kind not in "iu" or not isinstance(sequences, (list, tuple)):
        return False
    first = next((s for s, n in zip(sequences, lengths, strict=True) if n), None)
    if first is None or not isinstance(first, (list, tuple)) or not isinstance(
            first[0], (int, np.integer)) or isinstance(first[0], bool):
        return False
    maxlen = out.shape[1]
    lens = np.asarray(lengths, dtype=np.int64)
    keep = np.minimum(lens, maxlen)
    if truncating == "pre":
        parts = (s[n - maxlen:] if n > maxlen else s for s, n in zip(sequences, lengths,
                                                                        strict=True))
    else:
        parts = (s[:maxlen] if n > maxlen else s for s, n in zip(sequences, lengths,
                                                                  strict=True))
    try:
        flat = np.fromiter(chain.from_iterable(parts), dtype=out.dtype, count=int(keep.sum()))
    except (TypeError, ValueError, OverflowError):
        return False
    rows = np.repeat(np.arange(len(lengths)), keep)
    starts = np.cumsum(keep) - keep
    cols = np.arange(flat.size) - np.repeat(starts, keep)
    if padding == "pre":
        cols += np.repeat(maxlen - keep, keep)
    out[rows, cols] = flat
    return True


# --------------------------------------------------------------------------- lengths

def length_stats(lengths: Iterable[int]) -> dict[str, float]:
    """``count, mean, min, median, p90, p95, p99, max`` of sequence lengths.

    Percentiles use linear interpolation (``numpy.percentile`` default).
    """
    a = np.fromiter((int(n) for n in lengths), dtype=np.int64)
    if a.size == 0:
        raise ValueError("length_stats needs at least one length")
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"count": int(a.size), "mean": float(a.mean()), "min": int(a.min()),
            "median": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99),
            "max": int(a.max())}


def suggest_maxlen(lengths: Iterable[int], percentile: float = 90.0, multiple_of: int = 1,
                   ) -> int:
    """Smallest ``maxlen`` (rounded up to ``multiple_of``) that leaves at least
    ``percentile`` % of the sequences untruncated."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    a = np.sort(np.fromiter((int(n) for n in lengths), dtype=np.int64))
    if a.size == 0:
        raise ValueError("suggest_maxlen needs at least one length")
    k = max(math.ceil(a.size * percentile / 100.0) - 1, 0)
    m = max(int(a[k]), 1)
    return -(-m // multiple_of) * multiple_of


def format_length_stats(stats: dict[str, float], unit: str = "tokens") -> str:
    """One line for the CLI, e.g. ``25000 texts, tokens: mean 234.8, median 174, ...``."""
    def f(x: float) -> str:
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"

    return (f"{stats['count']} texts, {unit}: mean {stats['mean']:.1f}, median "
            f"{f(stats['median'])}, p90 {f(stats['p90'])}, p95 {f(stats['p95'])}, "
            f"p99 {f(stats['p99'])}, max {stats['max']}")


# --------------------------------------------------------------------------- encoder

_PROGRESS = {"on": False}
_PROGRESS_CHUNK = 1000


def set_progress(on: bool) -> None:
    """Show (or not) a progress line on stderr while a :class:`TextEncoder` tokenizes many
    texts and it takes over a second (the CLI turns it on unless ``--quiet``)."""
    _PROGRESS["on"] = bool(on)


class TextEncoder:
    """The whole text pipeline saved with a model (``text.json``).

    ``encode(texts)`` = ``pad_sequences([vocab.encode(tokenizer.tokenize(t), add_start)
    for t in texts], maxlen, padding, truncating)`` as a ``torch.LongTensor`` of shape
    ``(n, maxlen)`` (``maxlen=None``: the longest text of the call).
    """

    def __init__(self, tokenizer: str | Tokenizer = "basic", vocabulary: Vocabulary | None = None,
                 maxlen: int | None = 100, padding: str = "pre", truncating: str = "pre",
                 add_start: bool = True):
        if padding not in ("pre", "post"):
            raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
        if truncating not in ("pre", "post"):
            raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
        if maxlen is not None and (isinstance(maxlen, bool) or int(maxlen) != maxlen
                                   or maxlen < 1):
            raise ValueError(f"maxlen must be a positive integer or None, got {maxlen!r}")
        self.tokenizer = get_tokenizer(tokenizer)
        self.vocabulary = vocabulary
        self.maxlen = None if maxlen is None else int(maxlen)
        self.padding, self.truncating, self.add_start = padding, truncating, bool(add_start)

    def __repr__(self) -> str:
        return (f"TextEncoder({self.tokenizer!r}, {self.vocabulary!r}, maxlen={self.maxlen}, "
                f"padding={self.padding!r}, truncating={self.truncating!r})")

    @property
    def vocab(self) -> Vocabulary:
        if self.vocabulary is None:
            raise ValueError("this TextEncoder has no vocabulary yet: call fit(texts) first")
        return self.vocabulary

    @property
    def num_ids(self) -> int:
        """Number of ids in use (embedding ``input_dim`` / one-hot depth)."""
        return len(self.vocab)

    def _tokenize_all(self, texts: list[str]) -> list[list[str]]:
        """``tokenizer.tokenize_many(texts)``; with :func:`set_progress` on, in chunks with
        a progress line on stderr once it has taken over a second."""
        if not _PROGRESS["on"] or len(texts) <= _PROGRESS_CHUNK:
            return self.tokenizer.tokenize_many(texts)
        import sys
        import time

        out: list[list[str]] = []
        start = time.perf_counter()
        shown = False
        tty = sys.stderr.isatty()
        last_quarter = 0
        for i in range(0, len(texts), _PROGRESS_CHUNK):
            out.extend(self.tokenizer.tokenize_many(texts[i:i + _PROGRESS_CHUNK]))
            secs = time.perf_counter() - start
            if secs < 1.0:
                continue
            done = len(out)
            quarter = 4 * done // len(texts)
            if tty or quarter > last_quarter or not shown:
                end = "\r" if tty and done < len(texts) else "\n"
                rate = done / secs
                print(f"tokenizing: {done:,}/{len(texts):,} texts ({done / len(texts):.0%}, "
                      f"{rate:,.0f}/s, {(len(texts) - done) / rate:.0f} s left)",
                      end=end, file=sys.stderr, flush=True)
                shown, last_quarter = True, quarter
        if shown and tty:
            print(file=sys.stderr)
        return out

    @_no_gc
    def fit(self, texts: Sequence[str], num_words: int | None = 500, min_count: int = 1
            ) -> TextEncoder:
        """Fit the tokenizer (when trainable) and the vocabulary on training texts."""
        texts = _as_texts(texts)
        if self.tokenizer.needs_fit:
            self.tokenizer.fit(texts)
        self.vocabulary = Vocabulary.fit(self._tokenize_all(texts), num_words, min_count)
        return self

    @_no_gc
    def fit_encode(self, texts: Sequence[str], num_words: int | None = 500, min_count: int = 1,
                   auto_maxlen: tuple[float, int, int] | None = None) -> torch.Tensor:
        """``fit(texts, ...)`` then ``encode(texts)``, tokenizing the texts only once.

        ``auto_maxlen=(q, low, high)`` first sets ``maxlen`` from the data: the ``q``-th
        percentile of the encoded lengths (start id included), clipped to ``[low, high]``."""
        texts = _as_texts(texts)
        if self.tokenizer.needs_fit:
            self.tokenizer.fit(texts)
        token_lists = self._tokenize_all(texts)
        self.vocabulary = Vocabulary.fit(token_lists, num_words, min_count)
        if auto_maxlen is not None:
            q, low, high = auto_maxlen
            extra = 1 if self.add_start else 0
            lengths = np.array([len(t) + extra for t in token_lists] or [low])
            self.maxlen = int(min(max(math.ceil(np.percentile(lengths, q)), low), high))
        return self._encode_tokens(token_lists)

    @_no_gc
    def tokenize(self, texts: Sequence[str] | str) -> list[list[str]]:
        return self._tokenize_all(_as_texts(texts))

    @_no_gc
    def encode_ids(self, texts: Sequence[str] | str) -> list[list[int]]:
        """Unpadded id lists (with the start id when ``add_start``)."""
        vocab, add_start = self.vocab, self.add_start
        return [vocab.encode(toks, add_start) for toks in self.tokenize(texts)]

    @_no_gc
    def lengths(self, texts: Sequence[str] | str) -> list[int]:
        """Length of each encoded text before padding/truncation (start id included)."""
        extra = 1 if self.add_start else 0
        return [len(toks) + extra for toks in self.tokenize(texts)]

    def pad(self, id_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        return torch.from_numpy(pad_sequences(id_lists, self.maxlen, self.padding,
                                              self.truncating, PAD, np.int64))

    @_no_gc
    def encode(self, texts: Sequence[str] | str) -> torch.Tensor:
        """``(n, maxlen)`` int64 ids; a single str is encoded as a batch of one."""
        texts = _as_texts(texts)
        if self.maxlen is not None and type(self.tokenizer) is BasicTokenizer:
            return self._encode_tokens([self._kept_tokens(t) for t in texts])
        return self._encode_tokens(self._tokenize_all(texts))

    def _kept_tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` that survive truncation to ``maxlen``, tokenizing only the
        kept end of a long text.

        BasicTokenizer only. The piece is cut at a whitespace character, so lowercasing
        (Greek final sigma looks at neighbours) and apostrophe joining see the same context
        as in the whole text; the one token next to the cut may still differ (a ``<br />``
        cut at its inner space leaves ``br``), so the piece must yield ``maxlen + 1`` tokens
        and the one at the cut is dropped; otherwise the whole text is tokenized."""
        m = self.maxlen
        assert m is not None
        span = 8 * (m + 2) + 64
        tok = self.tokenizer.tokenize
        if len(text) > 2 * span:
            if self.truncating == "pre":
                cut = _WS_RE.search(text, len(text) - span)
                toks = tok(text[cut.start():]) if cut else []
                if len(toks) > m:
                    return toks[-m:]
            else:
                cut = _WS_BACK_RE.search(text[:span])
                toks = tok(text[:cut.start()]) if cut else []
                if len(toks) > m:
                    return toks[:m]
        return tok(text)

    def _encode_tokens(self, token_lists: list[list[str]]) -> torch.Tensor:
        m = self.maxlen
        if m is not None:  # look up only the tokens that survive truncation (same result)
            token_lists = [t[-m:] if self.truncating == "pre" else t[:m] for t in token_lists]
        vocab, add_start = self.vocab, self.add_start
        return self.pad([vocab.encode(t, add_start) for t in token_lists])

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Tokens of one id row joined by spaces (padding/start dropped by default)."""
        return " ".join(self.vocab.decode(ids, skip_special=skip_special))

    # persistence --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"format": _FORMAT, "version": _FORMAT_VERSION,
                "tokenizer": self.tokenizer.get_config(), "maxlen": self.maxlen,
                "padding": self.padding, "truncating": self.truncating,
                "add_start": self.add_start, "vocabulary": self.vocab.to_json()}

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``model_dir/text.json`` (and tokenizer side files) atomically."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_assets(model_dir)
        path = model_dir / TEXT_JSON
        atomic_write_text(path, json.dumps(self.get_config(), ensure_ascii=False))
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> TextEncoder:
        """Read ``model_dir/text.json``; UserError (one line) when missing or corrupt."""
        model_dir = Path(model_dir)
        path = model_dir / TEXT_JSON
        if not model_dir.is_dir():
            raise UserError(f"model directory not found: {model_dir}")
        if not path.is_file():
            raise UserError(f"{model_dir} has no vocabulary ({TEXT_JSON} is missing)")
        cfg = _read_json(path, "vocabulary")
        try:
            if not isinstance(cfg, dict) or cfg.get("format") != _FORMAT:
                raise ValueError(f"not an {_FORMAT} file")
            check_config_values({k: v for k, v in cfg.items() if k != "vocabulary"}, str(path))
            maxlen = cfg["maxlen"]
            if maxlen is not None and (not isinstance(maxlen, int) or isinstance(maxlen, bool)
                                       or not 1 <= maxlen <= MAX_MAXLEN):
                raise ValueError(f"maxlen must be an integer in [1, {MAX_MAXLEN}], "
                                 f"got {maxlen!r:.40}")
            if cfg.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported version {cfg.get('version')!r}")
            return cls(tokenizer_from_config(cfg["tokenizer"], model_dir),
                       Vocabulary.from_json(cfg["vocabulary"]), maxlen=cfg["maxlen"],
                       padding=cfg["padding"], truncating=cfg["truncating"],
                       add_start=cfg.get("add_start", True))
        except (KeyError, TypeError, ValueError) as e:
            msg = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise UserError(f"{path}: corrupt vocabulary file ({msg})") from None


def _as_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts must be str, item {i} is {type(t).__name__}")
    return texts
