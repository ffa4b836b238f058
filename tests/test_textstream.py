"""train text --stream: one streaming pass for the vocabulary, batches read and encoded on
the fly; the held-out rows by index; DataLoader workers split the rows; memory flat in the
file's size."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main
from rnnkit.tasks.textstream import StreamedBatches, scan
from rnnkit.text import TextEncoder


def _csv(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    pos, neg = "good great fine superb".split(), "bad awful dull weak".split()
    filler = "the a film it was and very".split()
    lines = ["review,label"]
    for i in range(n):
        words = [rng.choice(pos if i % 2 else neg) if rng.random() < 0.3 else rng.choice(filler)
                 for _ in range(rng.randint(5, 15))]
        lines.append(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_stream_training_end_to_end(tmp_path, capsys):
    f = _csv(tmp_path / "d.csv", 3000)
    out = tmp_path / "m"
    assert main(["train", "text", "--file", str(f), "--text-col", "review", "--label-col",
                 "label", "--stream", "--epochs", "2", "--out", str(out), "--quiet",
                 "--json", "--workers", "0"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["train_rows"] == 2400  # every 10th row validates, the next one tests
    assert res["test"]["n"] == 300 and res["test"]["accuracy"] > 0.9
    assert json.loads((out / "data.json").read_text())["stream"] is True
    assert main(["predict", str(out), "great superb film"]) == 0
    assert "pos" in capsys.readouterr().out


def test_workers_split_the_rows_and_epochs_reshuffle(tmp_path):
    f = _csv(tmp_path / "d.csv", 500)
    tok = TextEncoder("basic").tokenizer
    sc = scan(f, "review", "label", "auto", tok, 1000)
    enc = TextEncoder(tok, maxlen=20)
    enc.vocabulary = sc.vocabulary
    ds = StreamedBatches(f, "review", "label", "auto", enc, sc.labels,
                         lambda y: torch.as_tensor(y), 16, buffer=50, seed=1)

    def epoch(workers: int) -> list[tuple]:
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        return [tuple(r.tolist()) for x, _ in loader for r in x]

    one, two = epoch(0), epoch(0)
    assert len(one) == sc.train_rows == 400 and sorted(one) == sorted(two) and one != two
    assert sorted(epoch(2)) == sorted(one)  # two workers: every training row exactly once


def test_bad_row_found_by_the_scan_is_one_line(tmp_path, capsys):
    f = tmp_path / "bad.csv"
    f.write_text("review,label\nfine film,pos\n\"unclosed,neg\nx,y,z\n")
    assert main(["train", "text", "--file", str(f), "--text-col", "review", "--label-col",
                 "label", "--stream", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_pipeline_memory_is_flat_in_the_file_size(tmp_path):
    """The scan and one epoch of batches over a file 10x larger raise peak RSS by < 25 MB."""
    small, big = _csv(tmp_path / "s.csv", 20_000), _csv(tmp_path / "b.csv", 200_000)
    code = (
        "import sys, torch\n"
        "from rnnkit.tasks.textstream import StreamedBatches, scan\n"
        "from rnnkit.text import TextEncoder\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'): return int(line.split()[1])\n"
        "tok = TextEncoder('basic').tokenizer\n"
        "open('/proc/self/clear_refs', 'w').write('5'); base = peak()\n"
        "sc = scan(sys.argv[1], 'review', 'label', 'auto', tok, 1000)\n"
        "enc = TextEncoder(tok, maxlen=20); enc.vocabulary = sc.vocabulary\n"
        "ds = StreamedBatches(sys.argv[1], 'review', 'label', 'auto', enc, sc.labels, "
        "torch.as_tensor, 64)\n"
        "n = sum(len(x) for x, _ in ds)\n"
        "print(n, peak() - base)\n")
    rss = []
    for f in (small, big):
        out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-1500:]
        n, grew = map(int, out.stdout.split())
        rss.append(grew)
    assert big.stat().st_size > 9 * small.stat().st_size
    assert rss[1] - rss[0] < 25_000, rss  # kB
