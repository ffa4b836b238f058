"""``make demo``: until the IMDB system exists, a tiny forward pass through the seed model."""

from __future__ import annotations

import torch

import rnnkit as rk


def main() -> None:
    torch.manual_seed(0)
    model = rk.Sequential(rk.Embedding(500, 16), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"),
                          input_shape=(100,))
    x = torch.randint(1, 500, (2, 100))
    print(f"rnnkit {rk.__version__}")
    print(model)
    print("parameters:", sum(p.numel() for p in model.parameters()))
    print("probabilities:", model(x).squeeze(-1).tolist())


if __name__ == "__main__":
    main()
