"""torchrun data parallelism (CPU, gloo, 2 processes): the same seed and global batch give
the weights one process trains, only rank 0 writes, the model records the world size, and
rnnkit evaluate on the result gives the single-process figures."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import wait_for_backup
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.distributed import shard

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available in this build")


def _data(path):
    rows = ["text,label"] + [
        f"{'good great fine ' * (1 + i % 3)}movie {i % 17},pos" if i % 2 else
        f"{'bad awful dull ' * (1 + i % 3)}film {i % 13},neg" for i in range(256)]
    path.write_text("\n".join(rows) + "\n")


def test_two_processes_train_the_weights_of_one(tmp_path, capsys):
    data = tmp_path / "d.csv"
    _data(data)
    flags = ["--file", str(data), "--text-col", "text", "--label-col", "label", "--epochs", "2",
             "--batch-size", "32", "--dropout", "0", "--cell", "lstm", "--test-fraction",
             "0.25", "--validation-split", "0.125", "--seed", "3", "--quiet", "--json"]
    assert main(["train", "text", *flags, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                           "2", "--standalone", "-m", "rnnkit", "train", "text", *flags,
                           "--out", str(tmp_path / "two")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints its result
    two = json.loads(lines[0])
    a = load_file(tmp_path / "one" / "weights.safetensors")
    b = load_file(tmp_path / "two" / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["training"]["world_size"] == 2
    assert abs(one["test"]["loss"] - two["test"]["loss"]) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "one", "two"]
    assert main(["evaluate", str(tmp_path / "two"), "--file", str(data), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(ev["accuracy"] - one["test"]["accuracy"]) < 1e-9


def test_shard_takes_every_world_th_row_or_keeps_the_batch(monkeypatch):
    import rnnkit.distributed as d

    monkeypatch.setattr(d, "world", lambda: (1, 2))
    x, y = torch.arange(8).reshape(4, 2), torch.arange(4)
    sx, sy = shard((x, x), y)
    assert sx[0].tolist() == [[2, 3], [6, 7]] and sy.tolist() == [1, 3]
    # rows that differ (an in-batch loss's candidates) or do not divide: kept whole
    assert shard((x, torch.zeros(6, 2)), y)[1] is y
    assert shard(torch.arange(3), torch.arange(3))[0].tolist() == [0, 1, 2]


def _torchrun(out, *extra, epochs="2", data=None):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--standalone", "-m", "rnnkit", "train", "text", "--file", str(data),
            "--text-col", "text", "--label-col", "label", "--cell", "gru", "--units", "8",
            "--epochs", epochs, "--batch-size", "16", "--patience", "0", "--seed", "3",
            "--quiet", "--out", str(out), *extra]


def test_an_error_of_rank_0_before_training_stops_every_rank(tmp_path):
    """Rank 0 checks the output directory alone (here: --resume with nothing to resume);
    the other rank must not start training and wait for it forever."""
    data = tmp_path / "d.csv"
    _data(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(_torchrun(tmp_path / "m", "--resume", data=data),
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if x.startswith("rnnkit: error:")]
    assert len(errors) == 1 and "no interrupted run" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "m").exists()


def test_killed_data_parallel_run_resumes_to_the_same_weights(tmp_path):
    """Every process of a torchrun run killed after some epochs; ``--resume`` under
    torchrun (rank 0 writes the backup, the other rank reads it) ends with the weights and
    history of the same run left alone."""
    import signal
    import time

    data = tmp_path / "d.csv"
    _data(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_torchrun(tmp_path / "ref", epochs="12", data=data), check=True,
                   capture_output=True, env=env, timeout=300)
    out = tmp_path / "out"
    proc = subprocess.Popen(_torchrun(out, epochs="12", data=data), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_backup(tmp_path / ".out.run" / "backup", proc, 3, timeout=240)
    pids = subprocess.run(["pgrep", "-f", "--", f"--out {out}$"], capture_output=True,
                          text=True).stdout.split()
    for pid in {int(p) for p in pids} | {proc.pid}:  # the launcher and both ranks
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.5)
    assert not out.exists()
    r = subprocess.run(_torchrun(out, "--resume", epochs="12", data=data), capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stderr
    a = load_file(tmp_path / "ref" / "weights.safetensors")
    b = load_file(out / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "ref" / "history.json").read_text()) == \
        json.loads((out / "history.json").read_text())
