"""``rnnkit train lm`` and ``rnnkit generate``: character- or word-level language models.

    rnnkit train lm --file text.txt [--level char|word] --out DIR
    rnnkit generate DIR --prompt "ROMEO:" --length 200 [--temperature 0.8 --top-k 10 --seed 1]
    rnnkit evaluate DIR --file held_out.txt    # perplexity

The last ``--validation-fraction`` (alias ``--validation-split``) of the text is held out:
its log perplexity is the per-epoch ``val_loss`` (``--patience N`` stops early and keeps the
best epoch), and its perplexity is reported next to the add-one unigram baseline and saved in
``metrics.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..io import atomic_write_json
from .common import check_positive, print_json
from .seq2seq import add_seq_training_flags, verbosity


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("lm", help="character- or word-level language model on a text",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--file", required=True, help="a UTF-8 text file")
    d.add_argument("--max-chars", type=int, default=None, help="use only the start of the file")
    d.add_argument("--validation-fraction", "--validation-split", type=float, default=0.1,
                   help="hold out this final part of the text")
    d.add_argument("--level", choices=["char", "word"], default="char")
    d.add_argument("--num-words", type=int, default=None, help="cap the vocabulary")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    m.add_argument("--units", type=int, default=128)
    m.add_argument("--embed-dim", type=int, default=32)
    m.add_argument("--seq-len", type=int, default=64, help="training window length")
    m.add_argument("--batches-per-epoch", type=int, default=None)
    add_seq_training_flags(p, out="models/lm", epochs=5, lr=3e-3, batch_size=32)
    p.set_defaults(func=train)

    g = sub.add_parser("generate", help="sample text from a saved language model")
    g.add_argument("model_dir")
    g.add_argument("--prompt", default="", help="text to continue")
    g.add_argument("--length", type=int, default=200, help="tokens (characters or words)")
    g.add_argument("--temperature", type=float, default=1.0, help="0 = always the likeliest")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--json", action="store_true", help="print one JSON object last")
    g.set_defaults(func=generate_cmd)

    from . import TASKS
    TASKS["lm"] = {"evaluate": evaluate_cmd, "predict": generate_cmd}


def train(args: argparse.Namespace) -> int:
    from ..tasks.generate import read_text, train_lm, unigram_perplexity

    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   units=args.units, embed_dim=args.embed_dim, seq_len=args.seq_len)
    if not 0 <= args.validation_fraction < 1:
        raise UserError(f"--validation-fraction must be in [0, 1), got "
                        f"{args.validation_fraction}")
    text = read_text(args.file, args.max_chars)
    cut = int(len(text) * (1 - args.validation_fraction))
    train_text, val_text = text[:cut], text[cut:]
    if args.patience is not None and not val_text:
        raise UserError("--patience needs held-out text (--validation-fraction > 0)")
    lm, hist = train_lm(train_text, level=args.level, val_text=val_text or None,
                        num_words=args.num_words, embed_dim=args.embed_dim, units=args.units,
                        cell=args.cell, seq_len=args.seq_len, batch_size=args.batch_size,
                        epochs=args.epochs, batches_per_epoch=args.batches_per_epoch,
                        lr=args.lr, clip_norm=args.clip_norm, seed=args.seed,
                        backend=args.backend, patience=args.patience,
                        verbose=verbosity(args), backup=args.backup)
    res = {"task": "lm", "model_dir": args.final_out, "level": args.level,
           "vocabulary_size": len(lm.vocab), "train_tokens": None, "loss": hist["loss"][-1]}
    res["train_tokens"] = len(lm.ids(train_text))
    if val_text.strip():
        res["val_perplexity"] = lm.perplexity(val_text)
        res["val_unigram_perplexity"] = unigram_perplexity(train_text, val_text, args.level,
                                                           lm.vocab)
    res["sample"] = lm.generate(train_text[:10] if args.level == "char" else "", 100,
                                temperature=0.8, top_k=10, seed=args.seed)
    lm.save(args.out, extra={"history": hist, "source_file": Path(args.file).name})
    atomic_write_json(Path(args.out) / "metrics.json", res)
    if args.json:
        print_json(res)
    else:
        if "val_perplexity" in res:
            print(f"held-out perplexity {res['val_perplexity']:.2f} (unigram baseline "
                  f"{res['val_unigram_perplexity']:.2f})")
        print(f"sample: {res['sample']!r}")
        print(f"saved to {args.final_out}")
    return 0


def _load(model_dir: str):
    from ..tasks.generate import TextLM

    return TextLM.load(model_dir)


def generate_cmd(args: argparse.Namespace) -> int:
    lm = _load(args.model_dir)
    length = getattr(args, "length", 200)
    temperature = getattr(args, "temperature", 1.0)
    top_k = getattr(args, "top_k", None)
    if length < 0:
        raise UserError(f"--length must be >= 0, got {length}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    prompt = getattr(args, "prompt", None)
    if prompt is None:  # reached through ``rnnkit predict``: texts are prompts
        prompt = " ".join(getattr(args, "texts", []) or [])
    text = lm.generate(prompt, length, temperature, top_k, getattr(args, "seed", None))
    if args.json:
        print_json({"prompt": prompt, "text": text})
    else:
        print(text)
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from ..tasks.generate import read_text

    if not args.file:
        raise UserError("evaluate a language model with --file TEXT")
    lm = _load(args.model_dir)
    ppl = lm.perplexity(read_text(args.file))
    if args.json:
        print_json({"perplexity": ppl, "file": args.file})
    else:
        print(f"perplexity {ppl:.3f} on {args.file}")
    return 0
