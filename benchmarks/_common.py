"""Benchmark harness: one training epoch and one inference pass of
``Embedding(vocab, emb) -> RNN(units) -> Dense(1)`` (binary cross-entropy, RMSprop) per
backend, each (workload, backend) in its own subprocess so peak RSS is its own.

Backends: ``rnnkit`` (``backend="auto"``: fused kernels), ``rnnkit-reference``, ``torch.nn``,
``jax-scan`` (hand-written ``lax.scan``), ``keras-jax``, ``keras-tf`` (Keras 3; one process
per Keras backend because ``KERAS_BACKEND`` is read at import). Peers that are not installed
are skipped. Data are random token ids (timing only). Seconds are wall-clock of one warm
epoch (compilation and tracing happen in a short warm-up before it); with ``--repeat N`` the
best of N epochs (and of N inference passes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("torch.nn", "jax-scan", "keras-jax", "keras-tf")


@dataclass
class Workload:
    name: str
    cell: str            # simple | lstm | gru
    units: int
    vocab: int = 500
    emb: int = 16
    time: int = 100
    batch: int = 64
    samples: int = 20000
    infer_samples: int = 25000
    infer_batch: int = 256
    recurrent_dropout: float = 0.0

    @property
    def label(self) -> str:
        rd = f", rd={self.recurrent_dropout}" if self.recurrent_dropout else ""
        return f"{self.name} {self.cell}({self.units}){rd}"


def _best(fn) -> float:
    """Wall-clock seconds of ``fn()``: the best of ``--repeat`` runs (default 1), which
    keeps the slow outliers of a shared machine out of the ratios."""
    best = float("inf")
    for _ in range(max(1, int(os.environ.get("RNNKIT_BENCH_REPEAT", "1")))):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _data(w: Workload, n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, w.vocab, size=(n, w.time), dtype=np.int64)
    y = rng.integers(0, 2, size=(n,)).astype(np.float32)
    return ids, y


# ------------------------------------------------------------------------------ torch
def _torch_model(w: Workload, kind: str):
    from torch import nn

    if kind == "torch.nn":
        cls = {"simple": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[w.cell]

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(w.vocab, w.emb)
                self.rnn = cls(w.emb, w.units, batch_first=True)
                self.out = nn.Linear(w.units, 1)

            def forward(self, x):
                y, _ = self.rnn(self.emb(x))
                return self.out(y[:, -1]).squeeze(-1)

        return M()
    import rnnkit

    rnn = {"simple": rnnkit.SimpleRNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[w.cell]
    backend = "reference" if kind == "rnnkit-reference" else "auto"
    return rnnkit.Sequential(rnnkit.Embedding(w.vocab, w.emb),
                             rnn(w.units, recurrent_dropout=w.recurrent_dropout,
                                 backend=backend),
                             rnnkit.Dense(1, "sigmoid"), input_shape=(w.time,))


def _run_rnnkit(w: Workload, kind: str) -> dict:
    """rnnkit as a user runs it: ``rnnkit.fit`` (its RMSprop, loss from logits) for one
    epoch; inference by ``rnnkit.train.predict`` in batches (``model(x)`` per batch without
    gradients is kept as ``infer_loop_s``)."""
    import torch

    import rnnkit
    from rnnkit import train

    torch.manual_seed(0)
    model = _torch_model(w, kind)
    ids, y = _data(w, w.samples)
    ids, y = torch.from_numpy(ids), torch.from_numpy(y).unsqueeze(-1)

    def epoch(n):
        return train.fit(model, ids[:n], y[:n], batch_size=w.batch, epochs=1, shuffle=False,
                         optimizer=rnnkit.train.RMSprop(model.parameters(), lr=1e-3,
                                                        rho=0.9, eps=1e-7),
                         loss="binary_crossentropy", metrics=None, verbose=0)

    def predict(xs):
        train.predict(model, xs, batch_size=w.infer_batch)

    r, hist = _time_torch_model(w, model, epoch, ids, predict)
    r["kernel"] = model[1].last_backend + ("+fused-step" if hist.params.get("fused_step")
                                           else "")
    return r


def _time_torch_model(w: Workload, model, epoch, ids, predict=None) -> tuple[dict, object]:
    """Warm up, then time ``epoch(w.samples)`` and inference over ``w.infer_samples`` fresh
    sequences in batches of ``w.infer_batch``: ``model(x)`` per batch without gradients,
    or ``predict(x)`` over all when given (``infer_s``; the per-batch loop is then
    ``infer_loop_s``). Returns the timings and what the timed epoch returned."""
    import torch

    def loop(xs):
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xs), w.infer_batch):
                model(xs[i:i + w.infer_batch])

    epoch(4 * w.batch)  # warm-up (kernel compilation/cache load)
    loop(ids[: 2 * w.infer_batch + 3])
    if predict is not None:
        predict(ids[: 2 * w.infer_batch + 3])
    out = []
    train_s = _best(lambda: out.append(epoch(w.samples)))
    xi = torch.from_numpy(_data(w, w.infer_samples, seed=1)[0])
    r = {"train_s": train_s, "infer_s": _best(lambda: loop(xi))}
    if predict is not None:
        r["infer_loop_s"], r["infer_s"] = r["infer_s"], _best(lambda: predict(xi))
    return r, out[-1]


def _run_torch(w: Workload, kind: str) -> dict:
    import torch

    torch.manual_seed(0)
    model = _torch_model(w, kind)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ids, y = _data(w, w.samples)
    ids, y = torch.from_numpy(ids), torch.from_numpy(y)

    def epoch(n):
        model.train()
        for i in range(0, n, w.batch):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(ids[i:i + w.batch]), y[i:i + w.batch])
            loss.backward()
            opt.step()

    return _time_torch_model(w, model, epoch, ids)[0]


# ------------------------------------------------------------------------------ JAX
def _run_jax(w: Workload) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    if w.recurrent_dropout:
        raise RuntimeError("jax-scan peer has no recurrent dropout")
    h, g = w.units, {"simple": 1, "lstm": 4, "gru": 3}[w.cell]
    key = jax.random.PRNGKey(0)
    k = jax.random.split(key, 4)
    params = {
        "E": jax.random.uniform(k[0], (w.vocab, w.emb), minval=-0.05, maxval=0.05),
        "Wx": jax.random.normal(k[1], (w.emb, g * h)) * 0.1,
        "Wh": jax.random.normal(k[2], (h, g * h)) * 0.1,
        "b": jnp.zeros((g * h,)), "bh": jnp.zeros((g * h,)),
        "Wo": jax.random.normal(k[3], (h, 1)) * 0.1, "bo": jnp.zeros((1,)),
    }

    def step(p, carry, xp):
        hp = carry[0] @ p["Wh"]
        if w.cell == "simple":
            hn = jnp.tanh(xp + hp)
            return (hn,), None
        if w.cell == "lstm":
            i, f, c_, o = jnp.split(xp + hp, 4, axis=-1)
            c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(c_)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None
        xz, xr, xh = jnp.split(xp, 3, axis=-1)
        hz, hr, hh = jnp.split(hp + p["bh"], 3, axis=-1)
        z, r = jax.nn.sigmoid(xz + hz), jax.nn.sigmoid(xr + hr)
        n = jnp.tanh(xh + r * hh)
        return (z * carry[0] + (1 - z) * n,), None

    def logits(p, x):
        xp = p["E"][x] @ p["Wx"] + p["b"]               # (B, T, G*H)
        zeros = jnp.zeros((x.shape[0], h))
        carry = (zeros, zeros) if w.cell == "lstm" else (zeros,)
        carry, _ = jax.lax.scan(lambda c, xt: step(p, c, xt), carry, xp.swapaxes(0, 1))
        return (carry[0] @ p["Wo"] + p["bo"])[:, 0]

    def loss(p, x, y):
        z = logits(p, x)
        return jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))

    @jax.jit
    def train_step(p, s, x, y):
        gr = jax.grad(loss)(p, x, y)
        s = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b * b, s, gr)
        p = jax.tree_util.tree_map(lambda a, b, c: a - 1e-3 * b / (jnp.sqrt(c) + 1e-7),
                                   p, gr, s)
        return p, s

    predict = jax.jit(logits)
    ids, y = _data(w, w.samples)
    state = jax.tree_util.tree_map(jnp.zeros_like, params)
    n_full = (w.samples // w.batch) * w.batch
    params, state = train_step(params, state, ids[: w.batch], y[: w.batch])
    if n_full < w.samples:
        train_step(params, state, ids[n_full:], y[n_full:])
    jax.block_until_ready(params)
    ps = [params, state]

    def epoch():
        for i in range(0, w.samples, w.batch):
            ps[:] = train_step(ps[0], ps[1], ids[i:i + w.batch], y[i:i + w.batch])
        jax.block_until_ready(ps[0])

    train_s = _best(epoch)
    xi = _data(w, w.infer_samples, seed=1)[0]
    for i in (0, (w.infer_samples // w.infer_batch) * w.infer_batch):
        predict(ps[0], xi[i:i + w.infer_batch]).block_until_ready()

    def infer():
        out = [predict(ps[0], xi[i:i + w.infer_batch])
               for i in range(0, len(xi), w.infer_batch)]
        np.asarray(out[-1])
        jax.block_until_ready(out)

    return {"train_s": train_s, "infer_s": _best(infer)}


# ------------------------------------------------------------------------------ Keras
def _run_keras(w: Workload) -> dict:
    import keras

    layer = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
             "gru": keras.layers.GRU}[w.cell]
    model = keras.Sequential([keras.Input((w.time,), dtype="int32"),
                              keras.layers.Embedding(w.vocab, w.emb),
                              layer(w.units, recurrent_dropout=w.recurrent_dropout),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    ids, y = _data(w, w.samples)
    model.fit(ids[: 2 * w.batch], y[: 2 * w.batch], batch_size=w.batch, epochs=1, verbose=0)
    train_s = _best(lambda: model.fit(ids, y, batch_size=w.batch, epochs=1, verbose=0,
                                      shuffle=False))
    xi = _data(w, w.infer_samples, seed=1)[0]
    model.predict(xi[: 2 * w.infer_batch], batch_size=w.infer_batch, verbose=0)
    return {"train_s": train_s,
            "infer_s": _best(lambda: model.predict(xi, batch_size=w.infer_batch, verbose=0))}


def run_one(w: Workload, backend: str) -> dict:
    """Run in this process (called in the child)."""
    load0 = os.getloadavg()[0]
    if os.environ.get("RNNKIT_BENCH_THREADS") and not backend.endswith(("jax", "-tf")):
        import torch

        torch.set_num_threads(int(os.environ["RNNKIT_BENCH_THREADS"]))
    if backend == "jax-scan":
        r = _run_jax(w)
    elif backend.startswith("keras-"):
        r = _run_keras(w)
    elif backend.startswith("rnnkit"):
        r = _run_rnnkit(w, backend)
    else:
        r = _run_torch(w, backend)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return r


def installed(backend: str) -> bool:
    import importlib.util

    need = {"jax-scan": ["jax"], "keras-jax": ["keras", "jax"],
            "keras-tf": ["keras", "tensorflow"]}.get(backend, [])
    return all(importlib.util.find_spec(m) is not None for m in need)


def thread_env(n: int) -> dict[str, str]:
    """Environment limiting every library of a child process to ``n`` threads."""
    s = str(n)
    env = {k: s for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                          "NUMBA_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "RNNKIT_BENCH_THREADS")}
    env["TF_NUM_INTEROP_THREADS"] = "1"
    if n == 1:
        env["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1")
    return env


def run_subprocess(w: Workload, backend: str, threads: int | None = None,
                   timeout: float = 3600, repeat: int = 1) -> dict:
    """Run one (workload, backend) in a fresh interpreter; returns its result dict."""
    env = dict(os.environ)
    if threads:
        env.update(thread_env(threads))
    env["RNNKIT_BENCH_REPEAT"] = str(repeat)
    if backend.startswith("keras-"):
        env["KERAS_BACKEND"] = {"keras-jax": "jax", "keras-tf": "tensorflow"}[backend]
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, os.path.join(HERE, "_common.py"), "--child", backend,
           json.dumps(asdict(w))]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_workloads(workloads: list[Workload], backends: list[str],
                  threads: int | None = None, repeat: int = 1) -> list[dict]:
    rows = []
    for w in workloads:
        results = {}
        for b in backends:
            if not installed(b):
                continue
            if b == "jax-scan" and w.recurrent_dropout:
                continue
            print(f"# {w.label}: {b} ...", file=sys.stderr, flush=True)
            results[b] = run_subprocess(w, b, threads, repeat=repeat)
        for b, r in results.items():
            row = {"workload": w.label, "backend": b, "threads": threads or "default",
                   "repeat": repeat,
                   **asdict(w), **r}
            if "error" not in r:
                row["train_samples_per_s"] = w.samples / r["train_s"]
                row["infer_samples_per_s"] = w.infer_samples / r["infer_s"]
                for peer in PEERS:
                    pr = results.get(peer)
                    if pr and "error" not in pr and peer != b:
                        row[f"train_speedup_vs_{peer}"] = pr["train_s"] / r["train_s"]
                        row[f"infer_speedup_vs_{peer}"] = pr["infer_s"] / r["infer_s"]
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'workload':<24} {'backend':<17} {'kernel':<18} {'train s':>8} {'samp/s':>8} "
            f"{'infer s':>8} {'RSS MB':>7} {'×torch tr':>9} {'×torch inf':>10} "
            f"{'×jax tr':>7} {'×k-tf tr':>8} {'×k-jax tr':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<24} {r['backend']:<17} ERROR {r['error']}")
            continue

        def f(key, r=r):
            return f"{r[key]:.2f}" if key in r else "-"

        print(f"{r['workload']:<24} {r['backend']:<17} {r.get('kernel', '-'):<18} "
              f"{r['train_s']:>8.3f} {r['train_samples_per_s']:>8.0f} {r['infer_s']:>8.3f} "
              f"{r['peak_rss_mb']:>7.0f} {f('train_speedup_vs_torch.nn'):>9} "
              f"{f('infer_speedup_vs_torch.nn'):>10} {f('train_speedup_vs_jax-scan'):>7} "
              f"{f('train_speedup_vs_keras-tf'):>8} {f('train_speedup_vs_keras-jax'):>9}")


def main(workloads: list[Workload], argv: list[str] | None = None,
         default_backends: tuple[str, ...] = ("rnnkit", *PEERS)) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--backends", default=",".join(default_backends),
                    help="comma-separated: rnnkit, rnnkit-reference, " + ", ".join(PEERS))
    ap.add_argument("--samples", type=int, help="training samples per epoch (override)")
    ap.add_argument("--infer-samples", type=int, help="inference samples (override)")
    ap.add_argument("--only", help="run only workloads whose label contains this text")
    ap.add_argument("--threads", type=int,
                    help="threads per library in every child (default: libraries' own)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each epoch and inference pass this many times, keep the best")
    a = ap.parse_args(argv)
    for w in workloads:
        if a.samples:
            w.samples = a.samples
        if a.infer_samples:
            w.infer_samples = a.infer_samples
    if a.only:
        workloads = [w for w in workloads if a.only in w.label]
    rows = run_workloads(workloads, a.backends.split(","), a.threads, a.repeat)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows)
    return rows


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    print(json.dumps(run_one(Workload(**json.loads(sys.argv[3])), sys.argv[2])))
