"""Tokenizer flags shared by text-training commands: ``--lang``, ``--tokenizer`` and options.

Choice of tokenizer (saved with the model, so ``evaluate``/``predict`` tokenize the same way)::

    --tokenizer NAME        basic | ko | sentencepiece        (wins over --lang)
    --lang en               -> basic (English-style words)
    --lang ko               -> ko (kiwipiepy morphemes; needs rnnkit[ko])

Options of ``ko``: ``--pos`` (tag prefixes to keep, e.g. ``N,V,MAG`` or a preset ``content``/
``nouns``), ``--stopwords`` (comma-separated morphemes or ``@file`` with one per line),
``--kiwi-stopwords``, ``--max-repeat``, ``--spacing``, ``--morph-tags``. Options of
``sentencepiece``: ``--subword-vocab`` (default: ``--num-words`` - 3), ``--subword-model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..text import Tokenizer, get_tokenizer

LANG_TOKENIZERS = {"en": "basic", "ko": "ko"}
TOKENIZERS = ("basic", "ko", "sentencepiece")


def add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tokenization")
    g.add_argument("--lang", choices=sorted(LANG_TOKENIZERS), default=None,
                   help="language of the texts: en -> basic words, ko -> morphemes "
                        "(kiwipiepy, pip install 'rnnkit[ko]')")
    g.add_argument("--tokenizer", choices=TOKENIZERS, default=None,
                   help="tokenizer (overrides --lang; default basic); sentencepiece is trained "
                        "on the training texts (pip install 'rnnkit[subword]')")
    g.add_argument("--pos", default=None,
                   help="ko: keep only morphemes whose tag starts with one of these prefixes "
                        "(comma-separated, e.g. N,V,MAG) or a preset: content, nouns")
    g.add_argument("--stopwords", default=None,
                   help="ko: morphemes to drop, comma-separated ('이/JKS' or '영화'), or "
                        "@FILE with one per line")
    g.add_argument("--kiwi-stopwords", action="store_true",
                   help="ko: also drop kiwipiepy's built-in stopword list")
    g.add_argument("--max-repeat", type=int, default=2,
                   help="ko: shorten runs of a repeated character (ㅋㅋㅋㅋ, !!!!) to this "
                        "many (0 = keep)")
    g.add_argument("--spacing", action="store_true",
                   help="ko: correct word spacing before analysis")
    g.add_argument("--morph-tags", action="store_true",
                   help="ko: tokens are morpheme/TAG (e.g. 이/MM vs 이/JKS)")
    g.add_argument("--subword-vocab", type=int, default=None,
                   help="sentencepiece: number of pieces (default: --num-words - 3)")
    g.add_argument("--subword-model", choices=["unigram", "bpe"], default="unigram",
                   help="sentencepiece: model type")


def _read_stopwords(spec: str) -> list[str]:
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise UserError(f"stopword file not found: {path}") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
        return [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]
    return [w.strip() for w in spec.split(",") if w.strip()]


def tokenizer_name(args: argparse.Namespace) -> str:
    if getattr(args, "tokenizer", None):
        return args.tokenizer
    return LANG_TOKENIZERS.get(getattr(args, "lang", None) or "en", "basic")


def make_tokenizer(args: argparse.Namespace) -> Tokenizer:
    """The (untrained) tokenizer the flags describe; UserError for misplaced options."""
    name = tokenizer_name(args)
    opts: dict[str, Any] = {}
    ko_flags = {"--pos": args.pos is not None, "--stopwords": args.stopwords is not None,
                "--kiwi-stopwords": args.kiwi_stopwords, "--spacing": args.spacing,
                "--morph-tags": args.morph_tags, "--max-repeat": args.max_repeat != 2}
    if name != "ko":
        used = [f for f, on in ko_flags.items() if on]
        if used:
            raise UserError(f"{', '.join(used)}: options of Korean tokenization; add "
                            "--lang ko (or --tokenizer ko)")
    if name != "sentencepiece" and args.subword_vocab is not None:
        raise UserError("--subword-vocab only applies to --tokenizer sentencepiece")
    if name == "ko":
        if args.max_repeat < 0:
            raise UserError(f"--max-repeat must be >= 0, got {args.max_repeat}")
        opts = {"pos": args.pos, "max_repeat": args.max_repeat, "spacing": args.spacing,
                "tags": args.morph_tags, "kiwi_stopwords": args.kiwi_stopwords,
                "stopwords": _read_stopwords(args.stopwords) if args.stopwords else None}
    elif name == "sentencepiece":
        vocab = args.subword_vocab
        if vocab is None:
            vocab = max(int(getattr(args, "num_words", 1003)) - 3, 8)
        if vocab < 8:
            raise UserError(f"--subword-vocab must be at least 8, got {vocab}")
        opts = {"vocab_size": vocab, "model_type": args.subword_model}
    try:
        return get_tokenizer(name, **opts)
    except ValueError as e:
        raise UserError(str(e)) from None
