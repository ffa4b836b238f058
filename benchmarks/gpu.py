"""CUDA checks and timings: the parity of rnnkit's layers on a GPU and their speed against
torch.nn on the same device. Run where a GPU is present (nothing to do otherwise):

    .venv/bin/python benchmarks/gpu.py [--json]

Parity (exit status 1 when any fails): every cell, with and without ``return_sequences``,
``go_backwards``, post-padded masks, ``Bidirectional`` and recurrent dropout, ``backend=
"auto"`` on CUDA (the cuDNN path of torch.nn where its options allow, else the reference
loop on the GPU) against ``backend="reference"`` on the CPU in float64 with the same weights:
outputs within 1e-4, gradients of the input and of every weight within 1e-3 relative.

Timings: the training rows of ``benchmarks/shapes.py`` (tagger BiLSTM/BiGRU 64, LM LSTM
128/256), one training epoch and one inference pass, rnnkit's layers against torch.nn's,
both on the GPU with the same plain torch loop (``shapes._run_train``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rnnkit  # noqa: E402
from rnnkit import GRU, LSTM, Bidirectional, SimpleRNN, lengths_to_mask  # noqa: E402

CELLS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}


def _layer(cell: str, bi: bool, **kw):
    layer = CELLS[cell](12, backend="reference", **kw)
    return Bidirectional(layer) if bi else layer


def parity(dev: torch.device) -> list[dict]:
    rows = []
    for cell in CELLS:
        for seq in (False, True):
            for back in (False, True):
                for masked in (False, True):
                    for bi in ((False,) if back else (False, True)):
                        rows.append(_parity_case(dev, cell, seq, back, masked, bi, 0.0))
        rows.append(_dropout_case(dev, cell))
    return rows


def _dropout_case(dev, cell) -> dict:
    """Recurrent dropout on CUDA: cuDNN has none, so ``auto`` runs the reference loop on the
    GPU (its masks come from the GPU's generator, so there is no CPU oracle for the values);
    checked: it runs, says so, and gives finite outputs and gradients."""
    layer = CELLS[cell](12, recurrent_dropout=0.3, return_sequences=True).to(dev)
    layer.train()
    x = torch.randn(6, 9, 5, device=dev, requires_grad=True)
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), [x])
    ok = bool(torch.isfinite(y).all() and torch.isfinite(g).all()) and (
        dev.type == "cpu" or layer.last_backend == "reference")
    return {"cell": cell, "recurrent_dropout": 0.3, "backend": layer.last_backend, "ok": ok}


def _set_backend(layer, name: str) -> None:
    for m in layer.modules():
        if isinstance(m, rnnkit.recurrent.RNN):
            m.backend = name


def _parity_case(dev, cell, seq, back, masked, bi, rd) -> dict:
    torch.manual_seed(0)
    ref = _layer(cell, bi, return_sequences=seq, go_backwards=back, recurrent_dropout=rd)
    ref.build(5, dtype=torch.float64)
    gpu = copy.deepcopy(ref).float().to(dev)
    _set_backend(gpu, "auto")
    gpu.train()
    ref.train()
    x = torch.randn(6, 9, 5, dtype=torch.float64)
    mask = lengths_to_mask([9, 4, 7, 1, 9, 3], 9) if masked else None
    outs = []
    for m, xx in ((ref, x), (gpu, x.float().to(dev))):
        xx = xx.clone().requires_grad_(True)
        y = m(xx, mask=None if mask is None else mask.to(xx.device))
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)
        grads = torch.autograd.grad((y * w).sum(), [xx, *m.parameters()])
        outs.append((y.detach().double().cpu(), [g.double().cpu() for g in grads]))
    (y0, g0), (y1, g1) = outs
    err_y = float((y0 - y1).abs().max())
    err_g = max(float((a - b).abs().max() / max(1.0, float(a.abs().max())))
                for a, b in zip(g0, g1, strict=True))
    first = gpu.forward_layer if bi else gpu
    return {"cell": cell, "return_sequences": seq, "go_backwards": back, "masked": masked,
            "bidirectional": bi, "recurrent_dropout": rd, "backend": first.last_backend,
            "max_abs_output_error": err_y, "max_rel_grad_error": err_g,
            "ok": err_y <= 1e-4 and err_g <= 1e-3}


def timings(dev: torch.device, repeat: int = 3) -> list[dict]:
    """The training and inference rows of ``benchmarks/shapes.py`` on ``dev``, in this
    process, rnnkit's layers against torch.nn's."""
    import shapes

    rows = []
    for name in ("tagger-bilstm", "tagger-bigru", "lm-lstm128", "lm-lstm256"):
        res = {impl: shapes._run_train(shapes.ROWS[name], impl, repeat, dev)
               for impl in ("torch.nn", "rnnkit")}
        rows += shapes.compare(name, res)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda",
                    help="cuda (default); cpu runs the same checks on the CPU (a dry run)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing to run")
        return 0
    dev = torch.device(a.device)
    t0 = time.perf_counter()
    par = parity(dev)
    tim = timings(dev, a.repeat)
    bad = [r for r in par if not r["ok"]]
    if a.json:
        print(json.dumps({"device": str(dev), "parity": par,
                          "timings": tim}, indent=1))
    else:
        print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}")
        print(f"parity: {len(par) - len(bad)} of {len(par)} cases within tolerance")
        for r in bad:
            print(f"  FAILED {r}")
        for r in tim:
            extra = (f"  x torch.nn train {r['x_torch_train']:.2f}, infer "
                     f"{r['x_torch_infer']:.2f}" if "x_torch_train" in r else "")
            print(f"{r['row']:<14} {r['impl']:<9} {r['kernel']:<9} train {r['train_s']:.3f} s "
                  f"infer {r['infer_s']:.3f} s{extra}")
        print(f"({time.perf_counter() - t0:.0f} s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
