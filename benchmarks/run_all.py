"""All benchmark workloads (W1, W2, W3) in one table (``make bench``); ``--json`` for rows.

Options as in each workload script: ``--backends``, ``--samples``, ``--infer-samples``,
``--only``, ``--threads``. Each (workload, backend) runs in its own subprocess.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402
from w1_simplernn import WORKLOADS as W1  # noqa: E402
from w2_lstm_gru import WORKLOADS as W2  # noqa: E402
from w3_large import WORKLOADS as W3  # noqa: E402

if __name__ == "__main__":
    main(W1 + W2 + W3)
