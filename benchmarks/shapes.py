"""Per-layer kernels on the other tasks' shapes, against torch.nn, plus the cold start.

Rows (each implementation in its own subprocess, so peak RSS is its own):

* ``tagger-bilstm`` / ``tagger-bigru``: Embedding(5000,100) -> Bidirectional(LSTM|GRU(64),
  return_sequences) -> Dense(17) at every step, T=40, batch 32, per-step cross-entropy.
* ``cls-bilstm`` / ``cls-bigru``: a text classifier as ``rnnkit train text --bidirectional``
  builds it, Embedding(20000,128, mask_zero) -> Bidirectional(LSTM|GRU(32)) -> Dense(3) on
  the last states, T=100, batch 32, cross-entropy.
* ``lm-lstm128`` / ``lm-lstm256``: Embedding(65,32) -> LSTM(128|256, return_sequences) ->
  Dense(65), T=64, batch 32, next-character cross-entropy.
* ``gen-lstm128`` / ``gen-lstm256``: 300 characters one step at a time (batch 1), the state
  carried from step to step, as ``rnnkit generate`` does.
* ``cold-start``: a fresh interpreter's first ``fit`` (one epoch of 2,048 W1 sequences) +
  ``predict`` (2,048), against the same calls repeated in that process.

rnnkit's side of the training and inference rows is a ``Sequential``, as its users and
tasks build models: where :mod:`rnnkit.fold` applies, the embedding is folded into the
recurrent layer's input projection (the inference of every row; the training of the LM rows,
whose vocabulary is small). ``--layers`` adds the tagger and LM rows' model called layer by
layer (``rnnkit-layers``: a plain ``nn.Module`` calling Embedding, the RNN and Dense, so
nothing is folded). The generation rows carry the state from call to call, layer by layer.

The training and inference rows also print the recurrent layer's achieved GFLOP/s (input
projection and recurrent products, ``2 (D + H) G H`` flops per sequence-step and direction,
three times that for training) beside a plain 1024^3 GEMM's rate in the same process. Where
rnnkit folds the embedding into the projection (see above) it skips the
projection's flops, so its rate there is per counted flop, not per executed one, and may
exceed the GEMM's.

Both sides train with the same plain torch loop (``torch.optim.Adam``), so the rows compare
the recurrent layers (rnnkit's kernels behind ``RNN.forward`` vs torch.nn's CPU path) and
not two training loops. Times are wall-clock seconds, best of ``--repeat`` after a warm-up.

    .venv/bin/python benchmarks/shapes.py [--threads 1] [--repeat 3] [--only tagger] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROWS = {
    "tagger-bilstm": {"kind": "tagger", "cell": "lstm", "units": 64},
    "tagger-bigru": {"kind": "tagger", "cell": "gru", "units": 64},
    "cls-bilstm": {"kind": "cls", "cell": "lstm", "units": 32},
    "cls-bigru": {"kind": "cls", "cell": "gru", "units": 32},
    "lm-lstm128": {"kind": "lm", "cell": "lstm", "units": 128},
    "lm-lstm256": {"kind": "lm", "cell": "lstm", "units": 256},
    "gen-lstm128": {"kind": "gen", "cell": "lstm", "units": 128},
    "gen-lstm256": {"kind": "gen", "cell": "lstm", "units": 256},
}
TRAIN_N, INFER_N = 3200, 6400


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _wrapped(seq):
    """rnnkit's ``Sequential`` with the rows' calling convention: ``forward(ids) -> (logits,
    None)``, its recurrent layer as ``.rnn`` (for the kernel name)."""
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = seq
            self.rnn = seq[1]

        def forward(self, x, state=None):
            return self.seq(x), None

    return Wrapped()


def _model(row: dict, impl: str):
    """(module, vocab, classes, time) for a row; forward(ids) -> logits (B, T, K)."""
    from torch import nn

    import rnnkit

    kind, cell, units = row["kind"], row["cell"], row["units"]
    vocab, emb, k, t = {"tagger": (5000, 100, 17, 40), "cls": (20000, 128, 3, 100)}.get(
        kind, (65, 32, 65, 64))
    bi = kind in ("tagger", "cls")
    if kind == "cls":
        return _classifier(impl, cell, units, vocab, emb, k, t)
    if impl == "torch.nn":
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(vocab, emb)
                self.rnn = rnn_cls(emb, units, batch_first=True, bidirectional=bi)
                self.out = nn.Linear(units * (2 if bi else 1), k)

            def forward(self, x, state=None):
                y, st = self.rnn(self.emb(x), state)
                return self.out(y), st

        return M(), vocab, k, t
    rnn_cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[cell]
    if impl == "rnnkit" and kind != "gen":  # as rnnkit's users (and the cls rows) build it
        layer = rnn_cls(units, input_size=emb, return_sequences=True)
        seq = rnnkit.Sequential(rnnkit.Embedding(vocab, emb),
                                rnnkit.Bidirectional(layer) if bi else layer,
                                rnnkit.Dense(k, input_size=units * (2 if bi else 1)),
                                input_shape=(t,))
        return _wrapped(seq), vocab, k, t

    class R(nn.Module):  # layer by layer ("rnnkit-layers"; the gen rows: state carried)
        def __init__(self):
            super().__init__()
            self.emb = rnnkit.Embedding(vocab, emb)
            if bi:
                self.rnn = rnnkit.Bidirectional(rnn_cls(units, input_size=emb,
                                                        return_sequences=True))
            else:
                self.rnn = rnn_cls(units, input_size=emb, return_sequences=True,
                                   return_state=True)
            self.out = rnnkit.Dense(k, input_size=units * (2 if bi else 1))

        def forward(self, x, state=None):
            if bi:
                return self.out(self.rnn(self.emb(x))), None
            y, *st = self.rnn(self.emb(x), initial_state=state)
            return self.out(y), tuple(st)

    return R(), vocab, k, t


def _classifier(impl: str, cell: str, units: int, vocab: int, emb: int, k: int, t: int):
    """The ``cls-*`` rows' model: logits (B, K) from both directions' last states."""
    import torch
    from torch import nn

    import rnnkit

    if impl == "torch.nn":
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(vocab, emb, padding_idx=0)
                self.rnn = rnn_cls(emb, units, batch_first=True, bidirectional=True)
                self.out = nn.Linear(2 * units, k)

            def forward(self, x, state=None):
                _, h = self.rnn(self.emb(x))
                h = h[0] if isinstance(h, tuple) else h
                return self.out(torch.cat([h[0], h[1]], dim=-1)), None

        return M(), vocab, k, t
    rnn_cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[cell]
    seq = rnnkit.Sequential(rnnkit.Embedding(vocab, emb, mask_zero=True),
                            rnnkit.Bidirectional(rnn_cls(units)), rnnkit.Dense(k),
                            input_shape=(t,))
    return _wrapped(seq), vocab, k, t


def _sync(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so timings are whole."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _gemm_peak_gflops(device="cpu") -> float:
    """This process's fastest plain float32 GEMM rate (1024 x 1024 x 1024, best of 5), at the
    thread count the rows run with: the reference for the achieved GFLOP/s. On the CPU the
    faster of ``torch.mm`` (MKL) and the rnnkit kernels' GEMM (their own AVX-512 one where
    MKL runs AVX2 code, ``rnnkit.kernels.native.GEMM``; oneDNN's LSTM exceeds MKL's rate
    there, so MKL alone would understate the peak)."""
    import torch

    a = torch.randn(1024, 1024, device=device)
    c = torch.empty(1024, 1024, device=device)

    def mm():
        torch.mm(a, a, out=c)
        _sync(device)
    mm()
    rates = [2 * 1024 ** 3 / _best(mm, 5) / 1e9]
    if torch.device(device).type == "cpu":
        from rnnkit.kernels import native

        if native.available():
            def own():
                native.mm(a, a, c)
            own()
            rates.append(2 * 1024 ** 3 / _best(own, 5) / 1e9)
    return max(rates)


def _rnn_flops(row: dict, t: int, n: int) -> float:
    """Multiply-add flops of the recurrent layer's forward over ``n`` sequences of ``t``
    steps: input projection and recurrent product, ``2 (D + H) G H`` per sequence-step and
    direction (gate arithmetic not counted)."""
    d = {"tagger": 100, "cls": 128}.get(row["kind"], 32)
    g = {"lstm": 4, "gru": 3}[row["cell"]]
    dirs = 2 if row["kind"] in ("tagger", "cls") else 1
    h = row["units"]
    return 2.0 * (d + h) * g * h * t * n * dirs


def _run_train(row: dict, impl: str, repeat: int, device="cpu") -> dict:
    """One training epoch and one inference pass of the row's model on ``device`` (also
    used by ``benchmarks/gpu.py``), the best of ``repeat`` after a warm-up."""
    import torch

    torch.manual_seed(0)
    model, vocab, k, t = _model(row, impl)
    model.to(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (TRAIN_N, t), generator=g).to(device)
    ys = torch.randint(0, k, (TRAIN_N,) if row["kind"] == "cls" else (TRAIN_N, t),
                       generator=g).to(device)
    xi = torch.randint(1, vocab, (INFER_N, t), generator=g).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(n=TRAIN_N):
        model.train()
        for i in range(0, n, 32):
            opt.zero_grad(set_to_none=True)
            logits, _ = model(ids[i:i + 32])
            loss_fn(logits.reshape(-1, k), ys[i:i + 32].reshape(-1)).backward()
            opt.step()
        _sync(device)

    def infer():
        model.eval()
        with torch.no_grad():
            for i in range(0, INFER_N, 256):
                model(xi[i:i + 256])
        _sync(device)

    epoch(64)
    infer()
    r = {"train_s": _best(epoch, repeat), "infer_s": _best(infer, repeat)}
    # training: the forward and two backward products (dx, dW) of the same size
    r["gflops_train"] = 3 * _rnn_flops(row, t, TRAIN_N) / r["train_s"] / 1e9
    r["gflops_infer"] = _rnn_flops(row, t, INFER_N) / r["infer_s"] / 1e9
    r["gemm_peak_gflops"] = _gemm_peak_gflops(device)
    rnn = getattr(model.rnn, "forward_layer", model.rnn)
    r["kernel"] = getattr(rnn, "last_backend", "torch.nn")
    return r


def _run_gen(row: dict, impl: str, repeat: int) -> dict:
    import torch

    torch.manual_seed(0)
    model, vocab, k, t = _model(row, impl)
    model.eval()

    def gen(steps=300):
        with torch.no_grad():
            logits, state = model(torch.tensor([[1, 2, 3, 4]]))
            for _ in range(steps):
                nxt = logits[:, -1].argmax(-1)
                logits, state = model(nxt[:, None], state)

    gen(20)
    r = {"gen_s": _best(gen, max(repeat, 3))}
    r["kernel"] = getattr(model.rnn, "last_backend", "torch.nn")
    return r


def _run_cold(repeat: int) -> dict:
    """In this fresh interpreter: import, then the first fit + predict, then the same again."""
    t0 = time.perf_counter()
    import torch

    import rnnkit
    from rnnkit import train
    t_import = time.perf_counter() - t0
    torch.manual_seed(0)
    model = rnnkit.Sequential(rnnkit.Embedding(500, 16), rnnkit.SimpleRNN(8),
                              rnnkit.Dense(1, "sigmoid"), input_shape=(100,))
    ids = torch.randint(1, 500, (2048, 100))
    y = torch.randint(0, 2, (2048, 1)).float()

    def calls():
        train.fit(model, ids, y, batch_size=64, epochs=1, verbose=0, metrics=None)
        train.predict(model, ids, batch_size=256)

    t1 = time.perf_counter()
    calls()
    first = time.perf_counter() - t1
    later = _best(calls, max(repeat, 3))
    return {"import_s": t_import, "first_s": first, "later_s": later,
            "extra_s": first - later, "kernel": model[1].last_backend}


def run_child(name: str, impl: str, repeat: int) -> dict:
    if name == "cold-start":
        r = _run_cold(repeat)
    else:
        row = ROWS[name]
        r = _run_gen(row, impl, repeat) if row["kind"] == "gen" else \
            _run_train(row, impl, repeat)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return r


def _subprocess(name: str, impl: str, threads: int | None, repeat: int) -> dict:
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, impl, str(repeat)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare(name: str, res: dict[str, dict], **extra) -> list[dict]:
    """One row per implementation of ``res`` (``{"torch.nn": ..., "rnnkit": ...}``), the
    rnnkit row with its speed ratios (``x_torch_train`` ...) and, when measured, its peak RSS
    against torch.nn's."""
    rows = []
    peer = res["torch.nn"]
    for impl, r in res.items():
        row = {"row": name, "impl": impl, **extra, **r}
        if impl.startswith("rnnkit") and "error" not in r and "error" not in peer:
            for key in ("train_s", "infer_s", "gen_s"):
                if key in r:
                    row[f"x_torch_{key[:-2]}"] = peer[key] / r[key]
            if "peak_rss_mb" in r:
                row["rss_minus_torch_mb"] = r["peak_rss_mb"] - peer["peak_rss_mb"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, help="OMP/MKL threads in every child")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", help="run only rows whose name contains this text")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--layers", action="store_true",
                    help="also run the tagger and LM rows' rnnkit model layer by layer "
                         "(a plain nn.Module calling Embedding, the RNN and Dense in turn: "
                         "no folded embedding) as 'rnnkit-layers'")
    a = ap.parse_args(argv)
    rows = []
    for name in [*ROWS, "cold-start"]:
        if a.only and a.only not in name:
            continue
        print(f"# {name} ...", file=sys.stderr, flush=True)
        if name == "cold-start":
            rows.append({"row": name, "impl": "rnnkit", **_subprocess(name, "rnnkit", a.threads,
                                                                      a.repeat)})
            continue
        impls = ("torch.nn", "rnnkit") + (("rnnkit-layers",) if a.layers and
                                           ROWS[name]["kind"] in ("tagger", "lm") else ())
        res = {impl: _subprocess(name, impl, a.threads, a.repeat) for impl in impls}
        rows += compare(name, res, threads=a.threads or "default")
    if a.json:
        print(json.dumps(rows, indent=1))
        return rows
    print(f"{'row':<15} {'impl':<13} {'kernel':<9} {'train s':>8} {'infer s':>8} {'gen s':>7} "
          f"{'RSS MB':>7} {'×torch tr':>9} {'×torch inf':>10} {'×torch gen':>10} "
          f"{'GFLOP/s tr/inf (GEMM peak)':>27}")
    for r in rows:
        if "error" in r:
            print(f"{r['row']:<15} {r['impl']:<13} ERROR {r['error']}")
            continue
        if r["row"] == "cold-start":
            print(f"cold-start: import {r['import_s']:.2f} s; first fit+predict "
                  f"{r['first_s']:.2f} s, later {r['later_s']:.2f} s: "
                  f"+{r['extra_s']:.2f} s on first use ({r['kernel']}); "
                  f"RSS {r['peak_rss_mb']:.0f} MB")
            continue

        def f(key, fmt=".3f", r=r):
            return format(r[key], fmt) if key in r else "-"
        print(f"{r['row']:<15} {r['impl']:<13} {r.get('kernel', '-'):<9} {f('train_s'):>8} "
              f"{f('infer_s'):>8} {f('gen_s'):>7} {r['peak_rss_mb']:>7.0f} "
              f"{f('x_torch_train', '.2f'):>9} {f('x_torch_infer', '.2f'):>10} "
              f"{f('x_torch_gen', '.2f'):>10} "
              + (f"{r['gflops_train']:>8.1f} / {r['gflops_infer']:.1f} "
                 f"({r['gemm_peak_gflops']:.0f}, {r['gflops_infer'] / r['gemm_peak_gflops']:.0%})"
                 if "gflops_train" in r else ""))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(run_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        main()
