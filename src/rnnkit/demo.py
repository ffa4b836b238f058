"""``make demo``: the flagship end to end.

Trains the seed's model -- Embedding(500, 16) -> SimpleRNN(8) -> Dense(1, sigmoid) on the
25,000 IMDB training reviews (20% held out for validation, early stopping) -- prints its
test accuracy on the 25,000 test reviews, saves it to ``models/imdb-demo`` and predicts
two new raw reviews with the saved model, exactly as a user would with the CLI.

The IMDB archive is read from ``--data-dir``/``RNNKIT_DATA_DIR``/``../shared/data`` when
present, else downloaded once from the official source.
"""

from __future__ import annotations

import sys

from .cli import main as cli

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
    code = cli(["train", "imdb", "--out", out, *extra])
    if code:
        return code
    print("\n== summary of the saved model ==", flush=True)
    cli(["summary", out])
    print("\n== predictions for two new reviews ==", flush=True)
    return cli(["predict", out, *REVIEWS])


if __name__ == "__main__":
    sys.exit(main())
