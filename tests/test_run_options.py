"""Run-wide training options (every task, one place): learning-rate schedules with warm-up
(values by hand, the rate logged per epoch and plotted), plateau reduction, bf16 autocast,
the CSV/PNG/TensorBoard loggers of --log-dir, and --device cuda without CUDA as a clear error."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from rnnkit.callbacks import ReduceLROnPlateau, make_schedule
from rnnkit.cli import main
from rnnkit.train import fit, training_options

FIX = Path(__file__).parent / "fixtures"


def test_schedules_by_hand():
    cos = make_schedule("cosine", 0.1, 5, warmup=1)
    assert cos(0, 0.1) == pytest.approx(0.05)  # warm-up: lr (e + 1) / (w + 1)
    assert cos(1, 0.05) == pytest.approx(0.1)
    assert cos(5, 0.0) == pytest.approx(0.001)  # 1% at the end
    assert cos(3, 0.0) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 2))))
    one = make_schedule("onecycle", 1.0, 10)
    rates = [one(e, 0.0) for e in range(10)]
    assert rates[0] == pytest.approx(1 / 25) and rates[2] == pytest.approx(1.0)
    assert rates == sorted(rates[:3]) + sorted(rates[3:], reverse=True)
    assert rates[-1] < 1e-3
    assert make_schedule("constant", 0.1, 5) is None
    warm = make_schedule("constant", 0.1, 5, warmup=2)
    assert [warm(e, 0.1) for e in range(4)] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("step", 0.1, 5)


def test_plateau_halves_after_patience():
    cb = ReduceLROnPlateau(patience=2, min_lr=0.01)
    cb.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.08)
    for v in [1.0, 0.9, 0.95, 0.93, 0.99, 0.98, 0.97, 0.96, 0.99, 0.99]:
        cb.on_epoch_end(0, {"val_loss": v})
    assert cb.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # 0.08 -> .04 .02 .01


def test_cli_schedule_is_logged_plotted_and_recorded(tmp_path):
    out, logs = tmp_path / "m", tmp_path / "logs"
    assert main(["train", "text", "--file", str(FIX / "sms_spam_tiny.tsv"), "--epochs", "3",
                 "--patience", "0", "--lr", "0.01", "--lr-schedule", "cosine",
                 "--warmup-epochs", "1", "--log-dir", str(logs), "--out", str(out),
                 "--quiet"]) == 0
    hist = json.loads((out / "history.json").read_text())
    hist = hist.get("history", hist)
    sched = make_schedule("cosine", 0.01, 3, warmup=1)
    assert hist["lr"] == pytest.approx([sched(e, 0.0) for e in range(3)])
    rows = list(csv.DictReader(open(logs / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and "lr" in rows[0]
    assert (logs / "history.png").stat().st_size > 1000
    # the TensorBoard scalars, read back by tensorboard's own event reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logs))
    acc.Reload()
    for key in ("loss", "val_loss", "lr"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx(hist[key], rel=1e-6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["lr_schedule"] == "cosine" and cfg["training"]["warmup_epochs"] == 1


def test_bf16_autocast_trains_and_says_so():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    with training_options(precision="bf16"):
        hist = fit(model, x, y, loss="mse", metrics=(), optimizer="adam", lr=1e-2, epochs=5,
                   verbose=0, seed=0)
    assert "bf16" in hist.params["precision"]
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert next(model.parameters()).dtype == torch.float32  # the weights stay float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "text", "--file", str(FIX / "sms_spam_tiny.tsv"), "--device",
                 "cuda", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and err.count("\n") == 1
