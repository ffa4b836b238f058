"""Korean tokenization: morphemes from kiwipiepy, registered as the ``"ko"`` tokenizer.

Korean words (어절) glue a stem to particles and endings (``영화가`` = ``영화`` + ``가``), so
the unit of a Korean vocabulary is the morpheme, not the space-separated word. Contract::

    s      = NFC(text)
    s      = kiwi.space(s)                          if spacing        (spacing correction)
    s      = shorten runs of one repeated character to max_repeat characters
             (ㅋㅋㅋㅋㅋ -> ㅋㅋ, !!!! -> !!, 와아아아 -> 와아)   if max_repeat
    morphs = kiwi.tokenize(s, normalize_coda)       # [(form, tag), ...]
    tokens = [f(form, tag) for form, tag in morphs
              if (pos is None or tag starts with one of the prefixes in pos)
              and form not in stopwords and "form/tag" not in stopwords]
    f(form, tag) = g(form) + ("/" + tag if tags else "")
    g(form) = lower(form) if lowercase else form, runs shortened again (max_repeat)

``normalize_coda`` lets kiwipiepy split a jamo glued to a syllable (``최곸ㅋㅋ`` -> ``최고``
``ㅋㅋㅋ``). POS tags are the Sejong-style tags kiwipiepy uses (``NNG`` common noun, ``VV`` verb,
``VA`` adjective, ``MAG`` adverb, ``J*`` particles, ``E*`` endings, ``S*`` symbols, ``SW``
includes ㅋㅋ/ㅠㅠ, ``W_*`` URLs/emoji...); ``pos`` keeps a morpheme when its tag *starts with*
one of the given prefixes, so ``["N", "V", "MA", "XR"]`` keeps nouns, verbs, adjectives,
adverbs and roots.

The tokenizer is saved with the model (``text.json``) with every option, so prediction
tokenizes the same way; the kiwipiepy version is recorded and a different version at load time
gives a warning (its analyser may split some words differently).

kiwipiepy is an optional dependency (``pip install 'rnnkit[ko]'``, wheels only, no Java); it is
imported only when a ``"ko"`` tokenizer is built, and a missing install raises
:class:`rnnkit.errors.UserError` saying how to install it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import UserError
from .text import Tokenizer, register_tokenizer

__all__ = ["KoreanTokenizer", "KIWI_TAGS", "POS_PRESETS", "require_kiwipiepy"]

INSTALL_HINT = "Korean tokenization needs kiwipiepy: pip install 'rnnkit[ko]'"

#: the part-of-speech tags kiwipiepy produces (irregular verbs/adjectives add ``-I``/``-R``)
KIWI_TAGS = (
    "NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "VX", "VCP", "VCN", "MM", "MAG", "MAJ", "IC",
    "JKS", "JKC", "JKG", "JKO", "JKB", "JKV", "JKQ", "JX", "JC", "EP", "EF", "EC", "ETN", "ETM",
    "XPN", "XSN", "XSV", "XSA", "XSM", "XR", "SF", "SP", "SS", "SSO", "SSC", "SE", "SO", "SW",
    "SL", "SH", "SN", "SB", "UN", "W_URL", "W_EMAIL", "W_HASHTAG", "W_MENTION", "W_SERIAL",
    "W_EMOJI", "Z_CODA", "Z_SIOT", "USER0", "USER1", "USER2", "USER3", "USER4",
)

#: named POS filters usable as ``pos="content"`` (a list of tag prefixes)
POS_PRESETS: dict[str, list[str]] = {
    # nouns, verbs, adjectives, adverbs, determiners, interjections, roots, foreign words,
    # numbers and the ㅋㅋ/ㅠㅠ-style symbols and emoji that carry sentiment in reviews
    "content": ["NN", "NR", "NP", "VV", "VA", "MAG", "MM", "IC", "XR", "SL", "SN", "SW",
                "W_EMOJI"],
    # nouns only
    "nouns": ["NN", "NR", "NP"],
}

_KIWIS: dict[int, Any] = {}
_KIWI_LOCK = threading.Lock()


def require_kiwipiepy() -> Any:
    """The ``kiwipiepy`` module, or UserError with the install command when it is missing."""
    try:
        import kiwipiepy
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return kiwipiepy


def _kiwi(num_workers: int) -> Any:
    """A shared ``kiwipiepy.Kiwi`` (loading its model takes about a second)."""
    with _KIWI_LOCK:
        k = _KIWIS.get(num_workers)
        if k is None:
            kiwipiepy = require_kiwipiepy()
            k = _KIWIS[num_workers] = kiwipiepy.Kiwi(num_workers=num_workers)
        return k


def _kiwi_version() -> str:
    return str(getattr(require_kiwipiepy(), "__version__", "unknown"))


def _check_pos(pos: str | Sequence[str] | None) -> list[str] | None:
    if pos is None:
        return None
    if isinstance(pos, str):
        if pos in POS_PRESETS:
            return list(POS_PRESETS[pos])
        pos = [p.strip() for p in pos.split(",") if p.strip()]
    prefixes = []
    for p in pos:
        if not isinstance(p, str) or not p:
            raise ValueError(f"pos must be tag prefixes (str), got {p!r}")
        p = p.upper()
        if not any(t.startswith(p) for t in KIWI_TAGS):
            raise ValueError(f"pos prefix {p!r} matches no kiwipiepy tag; tags are "
                             f"{', '.join(KIWI_TAGS)} (presets: {', '.join(POS_PRESETS)})")
        prefixes.append(p)
    if not prefixes:
        raise ValueError("pos is empty: give tag prefixes such as N,V,MAG or None to keep all")
    return prefixes


def _check_stopwords(stopwords: str | Iterable[str] | None) -> list[str]:
    if stopwords is None:
        return []
    if isinstance(stopwords, str):
        stopwords = [w.strip() for w in stopwords.split(",")]
    out = []
    for w in stopwords:
        if not isinstance(w, str):
            raise ValueError(f"stopwords must be strings, got {w!r}")
        w = unicodedata.normalize("NFC", w.strip())
        if w:
            out.append(w)
    return sorted(set(out))


def _kiwi_default_stopwords() -> list[str]:
    """kiwipiepy's built-in stopword list as ``form/TAG`` entries."""
    require_kiwipiepy()
    from kiwipiepy.utils import Stopwords

    return sorted(f"{form}/{tag}" for form, tag in Stopwords().stopwords)


@register_tokenizer("ko")
class KoreanTokenizer(Tokenizer):
    """Korean morpheme tokenizer (kiwipiepy); see the module docstring for the contract.

    Options (all saved with the model):

    * ``pos`` -- tag prefixes to keep (list, comma-separated str, or a preset name from
      :data:`POS_PRESETS`); None keeps every morpheme.
    * ``stopwords`` -- morphemes to drop: ``"form"`` (any tag) or ``"form/TAG"``.
    * ``kiwi_stopwords`` -- also drop kiwipiepy's built-in list (100 particles, endings and
      function words); it is expanded into ``stopwords`` in the saved config.
    * ``max_repeat`` -- shorten runs of a repeated character to this many (0 = off).
    * ``spacing`` -- correct word spacing with ``kiwi.space`` first.
    * ``normalize_coda`` -- split jamo glued to a syllable (``재밌었닼ㅋㅋ``).
    * ``tags`` -- emit ``form/TAG`` tokens (tells ``이/MM`` from ``이/JKS``).
    * ``lowercase`` -- lowercase Latin letters.
    * ``num_workers`` -- threads kiwipiepy uses for :meth:`tokenize_many` (not saved: it does
      not change the result).
    """

    def __init__(self, pos: str | Sequence[str] | None = None,
                 stopwords: str | Iterable[str] | None = None, kiwi_stopwords: bool = False,
                 max_repeat: int = 2, spacing: bool = False, normalize_coda: bool = True,
                 tags: bool = False, lowercase: bool = True, num_workers: int = 1,
                 kiwipiepy_version: str | None = None):
        require_kiwipiepy()
        self.pos = _check_pos(pos)
        words = _check_stopwords(stopwords)
        if kiwi_stopwords:
            words = sorted(set(words) | set(_kiwi_default_stopwords()))
        self.stopwords = words
        self._stop = frozenset(words)
        if isinstance(max_repeat, bool) or not isinstance(max_repeat, int) or max_repeat < 0:
            raise ValueError(f"max_repeat must be a non-negative integer, got {max_repeat!r}")
        self.max_repeat = max_repeat
        self._repeat_re = (re.compile(r"(.)\1{" + str(max_repeat) + ",}", re.DOTALL)
                           if max_repeat else None)
        self.spacing, self.normalize_coda = bool(spacing), bool(normalize_coda)
        self.tags, self.lowercase = bool(tags), bool(lowercase)
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        self.num_workers = num_workers
        self.kiwipiepy_version = _kiwi_version()
        if kiwipiepy_version is not None and kiwipiepy_version != self.kiwipiepy_version:
            warnings.warn(f"this Korean tokenizer was saved with kiwipiepy {kiwipiepy_version} "
                          f"but {self.kiwipiepy_version} is installed; some words may be "
                          "split differently than in training", stacklevel=2)

    # -- steps ------------------------------------------------------------------------------
    def _shorten(self, s: str) -> str:
        if self._repeat_re is None:
            return s
        n = self.max_repeat
        return self._repeat_re.sub(lambda m: m.group(1) * n, s)

    def normalize(self, text: str) -> str:
        """The text kiwipiepy analyses: NFC, optional spacing correction, short repeats."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects str, got {type(text).__name__}")
        s = unicodedata.normalize("NFC", text)
        if self.spacing and s.strip():
            s = _kiwi(self.num_workers).space(s)
        return self._shorten(s)

    def _select(self, morphs: Iterable[Any]) -> list[str]:
        out = []
        pos, stop = self.pos, self._stop
        for m in morphs:
            form, tag = m.form, str(m.tag)
            if pos is not None and not tag.startswith(tuple(pos)):
                continue
            if stop and (form in stop or f"{form}/{tag}" in stop):
                continue
            if self.lowercase:
                form = form.lower()
            form = self._shorten(form)
            out.append(f"{form}/{tag}" if self.tags else form)
        return out

    def morphemes(self, text: str) -> list[tuple[str, str]]:
        """Unfiltered ``(form, tag)`` pairs of the normalised text (for inspection)."""
        s = self.normalize(text)
        if not s.strip():
            return []
        return [(m.form, str(m.tag)) for m in
                _kiwi(self.num_workers).tokenize(s, normalize_coda=self.normalize_coda)]

    def tokenize(self, text: str) -> list[str]:
        s = self.normalize(text)
        if not s.strip():
            return []
        return self._select(_kiwi(self.num_workers).tokenize(
            s, normalize_coda=self.normalize_coda))

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        """Batch version (kiwipiepy analyses the texts on ``num_workers`` threads)."""
        normed = [self.normalize(t) for t in texts]
        out: list[list[str]] = [[] for _ in normed]
        idx = [i for i, s in enumerate(normed) if s.strip()]
        if not idx:
            return out
        results = _kiwi(self.num_workers).tokenize([normed[i] for i in idx],
                                                   normalize_coda=self.normalize_coda)
        for i, morphs in zip(idx, results, strict=True):
            out[i] = self._select(morphs)
        return out

    # -- persistence ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pos": self.pos, "stopwords": list(self.stopwords),
                "max_repeat": self.max_repeat, "spacing": self.spacing,
                "normalize_coda": self.normalize_coda, "tags": self.tags,
                "lowercase": self.lowercase, "kiwipiepy_version": self.kiwipiepy_version}
