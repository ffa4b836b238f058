"""``rnnkit serve``: a saved model over HTTP (FastAPI + uvicorn), with a web page at ``/``.

    rnnkit serve MODEL [--host 127.0.0.1] [--port 8000] [--workers 1]
    curl -s localhost:8000/predict -H 'Content-Type: application/json' \\
         -d '{"text": "A wonderful, moving film."}'

See :mod:`rnnkit.serve` for the endpoints, the batching and the limits.
"""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..io import read_config


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a saved model over HTTP, with a web page",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (each loads the "
                   "model once)")
    p.add_argument("--max-batch", type=int, default=64,
                   help="texts per model call when requests are batched (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its model call")
    p.set_defaults(func=serve_cmd)


def serve_cmd(args: argparse.Namespace) -> int:
    from ..serve import _fastapi, create_app, load_predictor

    _fastapi()
    try:
        import uvicorn
    except ImportError:
        raise UserError("serving needs uvicorn: pip install 'rnnkit[serve]'") from None
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in [1, 65535], got {args.port}")
    if not 1 <= args.workers <= 64 or not 1 <= args.max_batch <= 4096:
        raise UserError("--workers must be in [1, 64] and --max-batch in [1, 4096]")
    if not 0 <= args.max_wait_ms <= 1000:
        raise UserError(f"--max-wait-ms must be in [0, 1000], got {args.max_wait_ms}")
    read_config(args.model_dir)
    if args.workers == 1:  # this process serves: the model is loaded once, here
        app = create_app(args.model_dir, max_batch=args.max_batch,
                         max_wait_ms=args.max_wait_ms)  # a bad model directory fails here
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    load_predictor(args.model_dir)  # a bad model directory fails here, before the workers
    os.environ["RNNKIT_SERVE_MODEL"] = str(args.model_dir)
    os.environ["RNNKIT_SERVE_MAX_BATCH"] = str(args.max_batch)
    os.environ["RNNKIT_SERVE_MAX_WAIT_MS"] = str(args.max_wait_ms)
    uvicorn.run("rnnkit.serve:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")
    return 0
