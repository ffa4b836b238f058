"""Gradient diagnostics: per-step state gradients held to finite differences, saturation by
hand, the monitor callback in ``fit``, and the vanishing/exploding warnings."""

import json

import pytest
import torch
from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, SimpleRNNCell
from rnnkit.diagnostics import (
    GradientMonitor,
    gradient_report,
    saturation,
    warnings_for,
)
from rnnkit.layers import Dense
from rnnkit.recurrent import GRU, LSTM, SimpleRNN


class Tiny(nn.Module):
    def __init__(self, rnn: nn.Module, units: int):
        super().__init__()
        self.rnn, self.out = rnn, Dense(1, input_size=units)

    def forward(self, x):
        return self.out(self.rnn(x))


def _mse(o, y):
    return ((o - y) ** 2).mean()


def _perturbed_loss(model, x, y, t: int, which: int, delta: torch.Tensor) -> float:
    """Loss with ``delta`` added to state ``which`` of the cell's output at step ``t``."""
    cell = model.rnn.cell
    step, count = type(cell).step, [0]

    def perturbed(xp, state, rec_mask=None):
        new = list(step(cell, xp, state, rec_mask))
        if count[0] == t and which == 0:
            new[0] = new[0] + delta
        elif count[0] == t:  # LSTM c_t: h_t = o * tanh(c_t) sees the change too
            o = torch.sigmoid((xp + state[0] @ cell.recurrent_kernel).chunk(4, dim=-1)[3])
            new[1] = new[1] + delta
            new[0] = o * torch.tanh(new[1])
        count[0] += 1
        return tuple(new)

    cell.step = perturbed
    try:
        with torch.no_grad():
            return float(_mse(model(x), y))
    finally:
        del cell.step


@pytest.mark.parametrize("make", [lambda: SimpleRNN(3, input_size=2), lambda: LSTM(3, input_size=2),
                                  lambda: GRU(3, input_size=2),
                                  lambda: SimpleRNN(3, input_size=2, activation="relu",
                                                    go_backwards=True)])
def test_per_step_gradient_norms_equal_finite_differences(make):
    torch.manual_seed(0)
    model = Tiny(make(), 3).double()
    model.rnn.backend = "reference"
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    y = torch.randn(2, 1, dtype=torch.float64)
    rep = gradient_report(model, (x,), y, _mse)
    layer = rep.layers[0]
    eps = 1e-6
    states = [0, 1] if isinstance(model.rnn, LSTM) else [0]
    for which in states:
        norms = layer.h if which == 0 else layer.c
        assert norms is not None and len(norms) == 5
        for t in range(5):
            g = torch.zeros(2, 3, dtype=torch.float64)
            for b in range(2):
                for j in range(3):
                    d = torch.zeros(2, 3, dtype=torch.float64)
                    d[b, j] = eps
                    g[b, j] = (_perturbed_loss(model, x, y, t, which, d)
                               - _perturbed_loss(model, x, y, t, which, -d)) / (2 * eps)
            assert norms[t] == pytest.approx(float(g.norm()), rel=1e-5, abs=1e-9), (which, t)
    with torch.no_grad():
        assert rep.loss == pytest.approx(float(_mse(model(x), y)))


def test_report_is_the_same_whatever_backend_and_leaves_the_model_as_it_was():
    torch.manual_seed(1)
    model = Tiny(GRU(4, input_size=3), 4)
    x, y = torch.randn(8, 12, 3), torch.randn(8, 1)
    model.rnn.backend = "lanes"
    model.out.kernel.grad = torch.ones_like(model.out.kernel)
    a = gradient_report(model, (x,), y, _mse)
    assert model.rnn.backend == "lanes" and "step" not in vars(model.rnn.cell)
    assert torch.equal(model.out.kernel.grad, torch.ones_like(model.out.kernel))
    model.rnn.backend = "auto"
    b = gradient_report(model, (x,), y, _mse)
    assert a.layers[0].h == b.layers[0].h and a.weights == b.weights
    assert set(a.weights) == {n for n, _ in model.named_parameters()}


def test_saturation_by_hand():
    a = torch.tensor([0.0, 0.995, -0.999, 0.5])
    assert saturation("tanh", a) == 0.5
    assert saturation("sigmoid", torch.tensor([0.005, 0.5, 0.995, 0.98])) == 0.5
    assert saturation("relu", torch.tensor([0.0, 0.0, 1.0, 2.0])) == 0.5
    torch.manual_seed(0)
    model = Tiny(LSTM(4, input_size=2), 4)
    rep = gradient_report(model, (torch.randn(3, 6, 2) * 50,), torch.zeros(3, 1), _mse)
    sat = rep.layers[0].saturation
    assert set(sat) == {"input gate", "forget gate", "output gate", "candidate", "tanh(c)"}
    assert sat["input gate"] > 0.5  # inputs of size 50 push the gates to 0 or 1


def test_tanh_rnn_gradient_vanishes_where_the_lstm_keeps_it():
    """Over 150 steps the tanh RNN's gradient at step 1 is many orders below the last
    step's; an LSTM of the same size (forget bias 1) keeps orders of magnitude more of it
    (untrained, its forget gates near sigmoid(1) still let it decay); the warning names the
    vanishing gradient."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 150, 2), torch.randn(16, 1)
    simple = Tiny(SimpleRNN(8, input_size=2), 8)
    with torch.no_grad():
        simple.rnn.cell.recurrent_kernel.mul_(0.5)
    lstm = Tiny(LSTM(8, input_size=2), 8)
    rs = gradient_report(simple, (x,), y, _mse).layers[0].ratio()
    rl = gradient_report(lstm, (x,), y, _mse).layers[0].ratio()
    assert rs is not None and rl is not None and rs < 1e-6 and rl > 1e3 * rs
    rep = gradient_report(simple, (x,), y, _mse)
    assert any("vanishing" in w for w in warnings_for(rep))


def test_monitor_records_during_fit_and_warns_of_explosion(tmp_path, capsys):
    from rnnkit.train import fit

    torch.manual_seed(0)
    x, y = torch.randn(64, 20, 2), torch.randn(64, 1)
    model = Tiny(SimpleRNN(6, input_size=2, activation="relu"), 6)
    with torch.no_grad():
        model.rnn.cell.recurrent_kernel.mul_(3.0)  # spectral radius 3: relu explodes
    log = tmp_path / "grads.jsonl"
    mon = GradientMonitor((x[:8],), y[:8], _mse, every=2, log=log)
    hist = fit(model, x, y, loss="mse", epochs=2, batch_size=16, callbacks=[mon], lr=1e-6,
               seed=0)
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert len(mon.records) == len(lines) == 4  # 4 batches per epoch, every 2nd, 2 epochs
    assert [r["batch"] for r in lines] == [0, 2, 4, 6]
    assert len(lines[0]["layers"][0]["grad_h"]) == 20
    assert "grad_norm_max" in hist.history and len(hist.history["grad_norm_max"]) == 2
    assert any(k.startswith("grad_ratio/") for k in hist.history)
    assert any("exploding" in w for w in mon.warned)
    assert "clip-norm" in capsys.readouterr().err


def test_adding_data_targets_are_the_marked_sums():
    from rnnkit.tasks.adding import adding_data

    x, y = adding_data(50, 30, torch.Generator().manual_seed(0))
    assert x.shape == (50, 30, 2) and y.shape == (50, 1)
    marks = x[..., 1]
    assert torch.all(marks.sum(1) == 2)
    assert torch.all(marks[:, :15].sum(1) == 1)  # one marker in each half
    torch.testing.assert_close(y[:, 0], (x[..., 0] * marks).sum(1))


def test_demo_small_writes_plot_and_figures(tmp_path):
    from rnnkit.tasks.adding import run_demo

    res = run_demo(tmp_path, lengths=(12,), units=4, samples=128, epochs=1, say=lambda *a: None)
    assert (tmp_path / "gradients.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "diagnose.json").read_text())
    assert set(saved["lengths"]["12"]) == {"SimpleRNN tanh", "SimpleRNN relu", "LSTM", "GRU"}
    assert len(res["lengths"]["12"]["GRU"]["grad_h"]) == 12
    assert set(res["clipping"]) == {"no clipping", "--clip-norm 1"}
    clipped = res["clipping"]["--clip-norm 1"]["grad_norm_during_training"]
    assert clipped and all(v == v for v in clipped)


def test_cli_diagnose_text_and_forecast_models(tmp_path, capsys):
    from pathlib import Path

    from rnnkit.cli import main

    fix = Path(__file__).parent / "fixtures"
    m = tmp_path / "spam"
    assert main(["train", "text", "--file", str(fix / "sms_spam_tiny.tsv"), "--epochs", "1",
                 "--out", str(m), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(m), "--file", str(fix / "sms_spam_tiny.tsv"), "--samples",
                 "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    layer = res["layers"][0]
    assert layer["grad_h"] and all(v is None or v >= 0 for v in layer["grad_h"])
    assert (m / "diagnose" / "gradients.png").is_file()
    assert (m / "diagnose" / "diagnose.json").is_file()

    f = tmp_path / "fc"
    assert main(["train", "forecast", "--file", str(fix / "daily_visitors.csv"), "--value-cols",
                 "visitors", "--epochs", "1", "--units", "4", "--lookback", "14", "--out",
                 str(f), "--quiet", "--no-refit"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(f), "--file", str(fix / "daily_visitors.csv"),
                 "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "||dL/dh|| step 1" in out and (tmp_path / "d" / "gradients.png").is_file()
    assert main(["diagnose", str(f)]) == 2
    assert "--file" in capsys.readouterr().err
    assert main(["diagnose", "--demo", str(f)]) == 2


def test_cli_diagnose_tagger_seq2seq_lm_and_siamese_models(tmp_path, capsys):
    from pathlib import Path

    from rnnkit.cli import main

    fix = Path(__file__).parent / "fixtures"
    addresses = tmp_path / "addresses.tsv"
    addresses.write_text("".join(f"{i} main st\t{i} main street\n" for i in range(1, 40)))
    runs = [(["train", "tagger", "--train", str(fix / "tiny.conllu"), "--epochs", "1"],
             fix / "tiny.conllu"),
            (["train", "seq2seq", "--file", str(fix / "pairs_en_fr.tsv"), "--epochs", "1",
              "--units", "8"], fix / "pairs_en_fr.tsv"),
            (["train", "lm", "--file", str(fix / "small_text.txt"), "--epochs", "1",
              "--units", "8"], fix / "small_text.txt"),
            (["train", "siamese", "--file", str(addresses), "--epochs", "1"], addresses)]
    for i, (argv, data) in enumerate(runs):
        out = tmp_path / f"m{i}"
        assert main([*argv, "--out", str(out), "--quiet"]) == 0, argv
        capsys.readouterr()
        assert main(["diagnose", str(out), "--file", str(data), "--samples", "4",
                     "--json"]) == 0, argv
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["layers"] and all(len(r["grad_h"]) > 1 for r in res["layers"]), argv
        assert res["loss"] is not None and res["loss"] > 0


def test_cell_activations_rebuild_torch_nn_step():
    """The activations a cell reports for a step (with recurrent dropout) are the gates that
    give torch.nn's step: LSTM ``c = f c' + i g``, ``h = o tanh(c)``; GRU
    ``h = z h' + (1 - z) n`` (torch.nn's ``1 - z`` order of the blend); SimpleRNN ``h``."""
    torch.manual_seed(0)
    x, rm = torch.randn(5, 3), (torch.rand(5, 4) > 0.3).float() / 0.7
    for cell, ref in ((LSTMCell(4, input_size=3), nn.LSTMCell(3, 4)),
                      (GRUCell(4, input_size=3), nn.GRUCell(3, 4)),
                      (SimpleRNNCell(4, input_size=3), nn.RNNCell(3, 4))):
        h0 = torch.randn(5, 4)
        state = (h0, torch.randn(5, 4)) if isinstance(cell, LSTMCell) else (h0,)
        with torch.no_grad():
            for p in cell.parameters():  # biases too (they start at 0 / 1)
                p.copy_(torch.randn_like(p) * 0.5)
            if isinstance(cell, GRUCell):  # rnnkit z, r, n -> torch r, z, n
                perm = lambda w: torch.cat([w[4:8], w[:4], w[8:]])  # noqa: E731
                ref.weight_ih.copy_(perm(cell.kernel.T))
                ref.weight_hh.copy_(perm(cell.recurrent_kernel.T))
                ref.bias_ih.copy_(perm(cell.bias[0]))
                ref.bias_hh.copy_(perm(cell.bias[1]))
            else:
                ref.weight_ih.copy_(cell.kernel.T)
                ref.weight_hh.copy_(cell.recurrent_kernel.T)
                ref.bias_ih.copy_(cell.bias)
                ref.bias_hh.zero_()
            a = cell.activations(cell.project_inputs(x), state, rm)
            hr = h0 * rm
            if isinstance(cell, LSTMCell):
                want_h, want_c = ref(x, (hr, state[1]))
                c = a["forget gate"][1] * state[1] + a["input gate"][1] * a["candidate"][1]
                torch.testing.assert_close(c, want_c)
                torch.testing.assert_close(a["tanh(c)"][1], torch.tanh(want_c))
                got = a["output gate"][1] * a["tanh(c)"][1]
            elif isinstance(cell, GRUCell):
                # torch.nn blends with the h it was given: feed it hr, then swap in h0
                z, n = a["update gate"][1], a["candidate"][1]
                torch.testing.assert_close(z * hr + (1 - z) * n, ref(x, hr))
                got, want_h = z * h0 + (1 - z) * n, cell.step(cell.project_inputs(x), state,
                                                               rm)[0]
            else:
                got, want_h = a["h"][1], ref(x, hr)
            torch.testing.assert_close(got, want_h)
            assert {k for k, _ in a.values()} <= {"sigmoid", "tanh"}
