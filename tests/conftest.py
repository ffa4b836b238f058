"""Shared pytest fixtures.

* ``data_dir`` -- the real-data directory (``$RNNKIT_DATA_DIR``, else ``<project>/../shared/data``);
  tests using it are skipped, with the reason, when it is absent.
* ``imdb_raw`` -- ``(train_texts, train_labels), (test_texts, test_labels)`` from the shared
  ``aclImdb_v1.tar.gz``, read once per test session (a few seconds); skipped when absent.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path:
    env = os.environ.get("RNNKIT_DATA_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory holding the real data files (read-only)."""
    d = _real_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data directory {d} not found (set RNNKIT_DATA_DIR to a directory "
                    "with aclImdb_v1.tar.gz, imdb_keras_subset.npz, tinyshakespeare.txt)")
    return d


def wait_for_backup(path: Path, proc: subprocess.Popen, epochs: int, timeout: float = 300
                    ) -> None:
    """Return once the training run ``proc`` has backed up ``epochs`` epochs in ``path``
    (fail when it ends first or none appears within ``timeout`` seconds)."""
    from rnnkit.backup import Backup
    from rnnkit.errors import UserError

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "training ended before it could be killed"
        try:
            if Backup(path).epochs_done() >= epochs:
                return
        except UserError:
            pass  # caught between the write and the rename of a temp file: not possible, but
        time.sleep(0.02)
    raise AssertionError("no backup appeared")


def require_file(data_dir: Path, name: str) -> Path:
    """``data_dir / name``, or skip the test saying which file is missing."""
    p = data_dir / name
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="session")
def imdb_raw(data_dir: Path):
    """The raw IMDB reviews, loaded once per session."""
    from rnnkit.datasets import load_imdb

    require_file(data_dir, "aclImdb_v1.tar.gz")
    return load_imdb(data_dir, format="raw", download=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster with one intra-op thread (torch and the compiled kernels,
    which follow torch's count): no thread contention on a small shared machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
