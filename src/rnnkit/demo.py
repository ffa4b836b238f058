"""``make demo``: the flagship end to end.

Trains the seed's model -- Embedding(500, 16) -> SimpleRNN(8) -> Dense(1, sigmoid), 500
words, 100 tokens -- on the 25,000 IMDB training reviews (20% held out for validation,
early stopping restoring the best epoch), prints its test accuracy on the 25,000 test
reviews, saves it to ``models/imdb-demo`` and predicts two new raw reviews with the saved
model, exactly as a user would with the CLI.

The seed's RMSprop at 1e-4 needs tens of epochs; the demo uses rnnkit's recommended
optimizer settings for this model (:data:`rnnkit.train.RECOMMENDED`: RMSprop 1e-3, batch
32) and at most 10 epochs so it finishes in minutes. Extra arguments are passed to
``rnnkit train imdb`` (e.g. ``--lr 1e-4 --batch-size 64 --epochs 100`` for the seed's).

The IMDB archive is read from ``--data-dir``/``RNNKIT_DATA_DIR``/``../shared/data`` when
present, else downloaded once from the official source.
"""

from __future__ import annotations

import sys

from .cli import main as cli
from .train import RECOMMENDED

REVIEWS = [
    "One of the best films I have seen in years. The acting is superb, the story moving and "
    "the ending beautiful. I loved every minute and would watch it again.",
    "A boring, badly written mess. The plot makes no sense, the acting is awful and I wanted "
    "my two hours back. The worst movie of the year.",
]


def main(argv: list[str] | None = None) -> int:
    out = "models/imdb-demo"
    extra = list(sys.argv[1:] if argv is None else argv)
    print("== rnnkit demo: the seed's Embedding + SimpleRNN(8) on IMDB ==", flush=True)
    opt = [f"--{k.replace('_', '-')}={v}" for k, v in RECOMMENDED.items()]
    code = cli(["train", "imdb", "--out", out, *opt, "--epochs", "10", "--patience", "2",
                *extra])
    if code:
        return code
    print("\n== summary of the saved model ==", flush=True)
    cli(["summary", out])
    print("\n== predictions for two new reviews ==", flush=True)
    return cli(["predict", out, *REVIEWS])


if __name__ == "__main__":
    sys.exit(main())
