"""Load test of ``rnnkit serve`` on loopback: requests per second and latency percentiles,
with request batching and without it (one text per model call).

    python benchmarks/serve_load.py --model models/imdb [--requests 10000] [--concurrency 32]

Starts ``rnnkit serve MODEL --max-batch B`` as a subprocess on a free loopback port for each
setting, waits for ``/health``, then ``--concurrency`` client threads, each on one keep-alive
connection, send ``--requests`` POST /predict requests in all (one review each, cycling
through ``--texts`` or built-in sentences). Bounded: at most ``--requests`` requests and
``--timeout`` seconds per setting. Prints one row per setting and writes them with
``--json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TEXTS = [
    "A wonderful, moving film with a superb cast and a story that stays with you.",
    "Dull and far too long; the plot makes no sense and the acting is wooden.",
    "I laughed from start to finish, a real treat for the whole family.",
    "The worst movie I have seen this year, a waste of a good idea.",
    "Beautifully shot, but the script lets it down in the second half.",
    "An instant classic: clever, warm and surprisingly deep.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def run_setting(model: str, max_batch: int, requests: int, concurrency: int, texts: list[str],
                timeout: float) -> dict:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", model, "--port", str(port),
                             "--max-batch", str(max_batch)], env=env)
    try:
        _wait(port, proc)
        lat: list[float] = []
        errors = [0]
        counter = [0]
        lock = threading.Lock()
        deadline = time.time() + timeout

        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while True:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                if i >= requests or time.time() > deadline:
                    return
                body = json.dumps({"text": texts[i % len(texts)]})
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    ok = r.status == 200
                except OSError:
                    ok = False
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if not ok:
                        errors[0] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    lat.sort()

    def pct(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {"max_batch": max_batch, "requests": len(lat), "errors": errors[0],
            "concurrency": concurrency, "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1), "p50_ms": round(pct(0.50), 2),
            "p99_ms": round(pct(0.99), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a saved text classifier directory")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--texts", help="a file of texts, one per line (default: built-in reviews)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per setting at most")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    texts = TEXTS
    if args.texts:
        texts = [x for x in Path(args.texts).read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = []
    for max_batch in (64, 1):
        row = run_setting(args.model, max_batch, args.requests, args.concurrency, texts,
                          args.timeout)
        rows.append(row)
        label = "batched (max 64 per call)" if max_batch > 1 else "one text per model call"
        print(f"{label:28} {row['requests']} requests, {row['errors']} errors, "
              f"{row['requests_per_s']} req/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
