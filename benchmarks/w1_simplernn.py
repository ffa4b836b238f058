"""W1: Embedding(500,16) -> SimpleRNN(units) -> Dense(1), length 100, batch 64, 20,000
training samples (RMSprop), inference over 25,000 sequences; units 8 and 32."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Workload, main  # noqa: E402

WORKLOADS = [Workload("W1", "simple", u) for u in (8, 32)]

if __name__ == "__main__":
    main(WORKLOADS)
