"""W3: Embedding(20000,128) -> LSTM/GRU(units) -> Dense(1), length 80, batch 32, 25,000
training samples, inference over 25,000; units 128 and 256, with and without
recurrent_dropout=0.2 (torch.nn and the JAX scan have none: they run without it)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Workload, main  # noqa: E402

WORKLOADS = [
    Workload("W3", cell, u, vocab=20000, emb=128, time=80, batch=32, samples=25000,
             recurrent_dropout=rd)
    for cell in ("lstm", "gru") for u in (128, 256) for rd in (0.0, 0.2)
]

if __name__ == "__main__":
    main(WORKLOADS)
