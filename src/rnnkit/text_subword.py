"""Subword tokenization: a sentencepiece model trained on the training texts (any language).

Registered as the ``"sentencepiece"`` tokenizer. Contract::

    fit(texts):  s_i   = prep(text_i)
                 model = SentencePieceTrainer(s_1..s_n, model_type, vocab_size,
                                              character_coverage, seed_sentencepiece_size...)
    tokenize(text) = model.encode(prep(text), out_type=str)      # e.g. ['▁이', '▁영화', ...]
    prep(text)     = lower(text) if lowercase, HTML <br /> -> " ", newlines -> " "

``vocab_size`` is a soft limit (``hard_vocab_limit=False``): a small corpus yields fewer pieces
instead of an error. sentencepiece applies its own NFKC-based normalisation inside the model.
Training uses one thread and sentencepiece's fixed seed, so the same texts give the same model.

The trained model (a protobuf, not pickle) is saved next to the model's ``text.json`` as
``sentencepiece.model`` by :meth:`save_assets`; ``text.json`` records its file name and
SHA-256, and loading checks both so prediction tokenizes exactly as training did.

sentencepiece is an optional dependency (``pip install 'rnnkit[subword]'``); a missing install
raises :class:`rnnkit.errors.UserError` saying how to install it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import atomic_write_bytes
from .text import Tokenizer, register_tokenizer

__all__ = ["SentencePieceTokenizer", "require_sentencepiece"]

INSTALL_HINT = "subword tokenization needs sentencepiece: pip install 'rnnkit[subword]'"
MODEL_FILE = "sentencepiece.model"
_MODEL_TYPES = ("unigram", "bpe", "char", "word")
_BR_RE = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_NL_RE = re.compile(r"[\r\n\t]+")


def require_sentencepiece() -> Any:
    """The ``sentencepiece`` module, or UserError with the install command when missing."""
    try:
        import sentencepiece
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return sentencepiece


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@register_tokenizer("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """Subword pieces from a sentencepiece model trained by :meth:`fit` on training texts.

    Options: ``vocab_size`` (soft limit on the number of pieces), ``model_type``
    (``unigram``/``bpe``/``char``/``word``), ``character_coverage`` (share of characters the
    model covers; rarer ones become ``<unk>``; 0.9995 suits Korean/Chinese/Japanese, 1.0
    alphabets), ``lowercase``.
    """

    needs_fit = True

    def __init__(self, vocab_size: int = 1000, model_type: str = "unigram",
                 character_coverage: float = 0.9995, lowercase: bool = True):
        require_sentencepiece()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
            raise ValueError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type must be one of {', '.join(_MODEL_TYPES)}, "
                             f"got {model_type!r}")
        if not 0.5 <= float(character_coverage) <= 1.0:
            raise ValueError(f"character_coverage must be in [0.5, 1], got {character_coverage}")
        self.vocab_size, self.model_type = vocab_size, model_type
        self.character_coverage, self.lowercase = float(character_coverage), bool(lowercase)
        self._proto: bytes | None = None
        self._sp: Any = None

    # -- text preparation -------------------------------------------------------------------
    def prep(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects str, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        if "<" in text:
            text = _BR_RE.sub(" ", text)
        return _NL_RE.sub(" ", text)

    # -- training ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._sp is not None

    def fit(self, texts: Iterable[str]) -> SentencePieceTokenizer:
        spm = require_sentencepiece()
        prepped = [s for s in (self.prep(t) for t in texts) if s.strip()]
        if not prepped:
            raise UserError("cannot train a sentencepiece model: no non-empty training text")

        def sentences() -> Iterator[str]:
            yield from prepped

        buf = io.BytesIO()
        longest = max(len(s.encode("utf-8")) for s in prepped)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=sentences(), model_writer=buf, vocab_size=self.vocab_size,
                model_type=self.model_type, character_coverage=self.character_coverage,
                hard_vocab_limit=False, num_threads=1, minloglevel=2,
                max_sentence_length=max(4192, longest + 1), input_sentence_size=2_000_000,
                shuffle_input_sentence=False, bos_id=-1, eos_id=-1, unk_id=0)
        except RuntimeError as e:
            raise UserError(f"sentencepiece training failed: {str(e).splitlines()[0]}") from None
        self._load_proto(buf.getvalue())
        return self

    def _load_proto(self, proto: bytes) -> None:
        spm = require_sentencepiece()
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        self._proto = proto

    def _processor(self) -> Any:
        if self._sp is None:
            raise ValueError("this sentencepiece tokenizer is not trained: call fit(texts) first "
                             "(TextEncoder.fit does it)")
        return self._sp

    @property
    def pieces(self) -> list[str]:
        """All pieces of the trained model, by id."""
        sp = self._processor()
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    # -- use --------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return self._processor().encode(self.prep(text), out_type=str)

    def tokenize_many(self, texts: Iterable[str]) -> list[list[str]]:
        sp = self._processor()
        prepped = [self.prep(t) for t in texts]
        return sp.encode(prepped, out_type=str) if prepped else []

    def detokenize(self, pieces: list[str]) -> str:
        return self._processor().decode_pieces(pieces)

    # -- persistence ------------------------------------------------------------------------
    def save_assets(self, model_dir: str | os.PathLike) -> None:
        if self._proto is None:
            raise ValueError("cannot save an untrained sentencepiece tokenizer")
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(model_dir / MODEL_FILE, self._proto)

    def get_config(self) -> dict[str, Any]:
        cfg = {**super().get_config(), "vocab_size": self.vocab_size,
               "model_type": self.model_type, "character_coverage": self.character_coverage,
               "lowercase": self.lowercase}
        if self._proto is not None:
            cfg["model_file"] = MODEL_FILE
            cfg["sha256"] = _sha256(self._proto)
        return cfg

    @classmethod
    def from_config(cls, cfg: dict[str, Any], model_dir: str | os.PathLike | None = None
                    ) -> SentencePieceTokenizer:
        options = {k: v for k, v in cfg.items()
                   if k not in ("name", "module", "model_file", "sha256")}
        tok = cls(**options)
        model_file = cfg.get("model_file")
        if model_file is None:
            return tok
        if model_dir is None:
            raise ValueError("a trained sentencepiece tokenizer needs the model directory "
                             f"holding {model_file}")
        if not isinstance(model_file, str) or Path(model_file).name != model_file:
            raise ValueError(f"model_file must be a plain file name, got {model_file!r}")
        path = Path(model_dir) / model_file
        if not path.is_file():
            raise UserError(f"{model_dir}: the sentencepiece model {model_file} is missing")
        proto = path.read_bytes()
        if cfg.get("sha256") not in (None, _sha256(proto)):
            raise UserError(f"{path}: does not match the model's text.json (sha256 differs); "
                            "it was replaced after training")
        try:
            tok._load_proto(proto)
        except RuntimeError as e:
            raise UserError(f"{path}: not a sentencepiece model ({str(e).splitlines()[0]})"
                            ) from None
        return tok
