"""W2: as W1 with LSTM(units) and GRU(units), units 8 and 32."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Workload, main  # noqa: E402

WORKLOADS = [Workload("W2", cell, u) for cell in ("lstm", "gru") for u in (8, 32)]

if __name__ == "__main__":
    main(WORKLOADS)
