"""An HTTP service for a saved model: FastAPI app with request batching and a web page.

    rnnkit serve MODEL [--host 127.0.0.1] [--port 8000] [--workers 1]

Endpoints:

* ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": ["...", ...]}`` answers
  ``{"task": ..., "predictions": [...]}``, one prediction per text: for a classifier the
  label, its probability and every class's; for a tagger the tokens and their tags; for a
  translator the translation; for a language model a continuation of the text.
* ``GET /health`` (``{"status": "ok"}``), ``GET /model`` (task, labels or tags, the training
  settings, rnnkit's version, the service's limits), ``GET /`` (a web page), and FastAPI's
  ``/openapi.json`` and ``/docs``.

Requests from concurrent clients are batched: a request waits at most ``max_wait_ms`` for
others, up to ``max_batch`` texts go to the model in one call (on one worker thread, so
the model is never called concurrently), and each request gets its own answers. Bad
requests get a 4xx with a message, never a 500: a body over ``max_body`` bytes (413), not
JSON (400), neither or both of ``text``/``texts``, an empty text, a text over
``max_chars`` characters or more than ``max_texts`` texts (422). The model is loaded once
per worker process; several workers (``--workers``) each load their own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import read_config

Predict = Callable[[list[str]], list[dict[str, Any]]]


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'rnnkit[serve]'"
                        ) from None
    return fastapi


# -- one prediction function per task -------------------------------------------------------
def load_predictor(model_dir: str | Path) -> tuple[str, Predict, dict[str, Any]]:
    """``(task, predict(texts) -> answers, description)`` of a saved model."""
    cfg = read_config(model_dir)
    task = cfg["task"]
    info: dict[str, Any] = {"task": task, "training": cfg.get("training")}
    if task in ("imdb", "text"):
        from .tasks.classify import TextClassifier

        clf = TextClassifier.load(model_dir)
        info["labels"] = clf.labels
        return task, clf.predict, info
    if task == "tagger":
        from .tasks.tagging import Tagger, tokenize_sentence

        tagger = Tagger.load(model_dir)
        info["tags"] = tagger.tags[1:]

        def tag(texts: list[str]) -> list[dict[str, Any]]:
            toks = [tokenize_sentence(t) for t in texts]
            for i, t in enumerate(toks, 1):
                if not t:
                    raise UserError(f"text {i} has no tokens")
            return [{"tokens": t, "tags": p} for t, p in zip(toks, tagger.predict(toks),
                                                             strict=True)]
        return task, tag, info
    if task == "seq2seq":
        from .tasks.seq2seq import Translator

        tr = Translator.load(model_dir)

        def translate(texts: list[str]) -> list[dict[str, Any]]:
            return [{"translation": t} for t in tr.translate(texts)]
        return task, translate, info
    if task == "lm":
        from .tasks.generate import TextLM

        lm = TextLM.load(model_dir)

        def generate(texts: list[str]) -> list[dict[str, Any]]:
            return [{"text": lm.generate(t, length=100, temperature=0.0)} for t in texts]
        return task, generate, info
    raise UserError(f"serve supports text, imdb, tagger, seq2seq and lm models; this one is "
                    f"{task!r}")


# -- batching ---------------------------------------------------------------------------------
class Batcher:
    """Collects concurrent requests into one model call (see the module docstring)."""

    def __init__(self, predict: Predict, max_batch: int = 64, max_wait_ms: float = 5.0):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-model")
        self.calls = 0  # model calls made, for the load test

    async def submit(self, texts: list[str]) -> list[dict[str, Any]]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, fut))
        return await fut

    def _run(self, groups: list[list[str]]) -> list[list[dict[str, Any]] | Exception]:
        """The model on all texts at once; when one text is refused (UserError), each
        request is retried alone so only the bad one fails."""
        self.calls += 1
        flat = [t for g in groups for t in g]
        try:
            out = self.predict(flat)
        except UserError:
            res: list[list[dict[str, Any]] | Exception] = []
            for g in groups:
                try:
                    res.append(self.predict(g))
                except UserError as e:
                    res.append(e)
            return res
        res, i = [], 0
        for g in groups:
            res.append(out[i:i + len(g)])
            i += len(g)
        return res

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            items = [first]
            n = len(first[0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                items.append(item)
                n += len(item[0])
            try:
                results = await loop.run_in_executor(self.executor, self._run,
                                                     [t for t, _ in items])
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                results = [e] * len(items)
            for (_, fut), r in zip(items, results, strict=True):
                if fut.done():
                    continue
                if isinstance(r, Exception):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)


# -- the app ----------------------------------------------------------------------------------
def create_app(model_dir: str | Path, *, max_batch: int = 64, max_wait_ms: float = 5.0,
               max_texts: int = 64, max_chars: int = 20_000, max_body: int = 1 << 20) -> Any:
    """The FastAPI app serving ``model_dir`` (loaded now, once)."""
    fastapi = _fastapi()
    from fastapi.responses import HTMLResponse, JSONResponse

    from .version import __version__

    task, predict, info = load_predictor(model_dir)
    limits = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_texts": max_texts,
              "max_chars": max_chars, "max_body_bytes": max_body}
    batcher = Batcher(predict, max_batch, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        batcher.executor.shutdown(wait=False)

    app = fastapi.FastAPI(title="rnnkit", version=__version__, lifespan=lifespan,
                          description=f"A {task} model served by rnnkit.")
    app.state.batcher = batcher

    def error(status: int, message: str) -> Any:
        return JSONResponse({"error": message}, status_code=status)

    request_schema = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "text": {"type": "string", "maxLength": max_chars},
            "texts": {"type": "array", "items": {"type": "string", "maxLength": max_chars},
                      "maxItems": max_texts}},
        "description": "exactly one of text, texts"}}}, "required": True}

    async def predict_endpoint(request: Any) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return error(413, f"the body is over {max_body} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return error(413, f"the body is over {max_body} bytes")
        try:
            data = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body must be JSON: {\"text\": \"...\"} or "
                         "{\"texts\": [\"...\"]}")
        if not isinstance(data, dict) or (("text" in data) == ("texts" in data)):
            return error(422, "give exactly one of \"text\" (a string) or \"texts\" (a list)")
        texts = [data["text"]] if "text" in data else data["texts"]
        if not isinstance(texts, list) or not texts:
            return error(422, "\"texts\" must be a non-empty list of strings")
        if len(texts) > max_texts:
            return error(422, f"at most {max_texts} texts per request, got {len(texts)}")
        for i, t in enumerate(texts, 1):
            if not isinstance(t, str):
                return error(422, f"text {i} is not a string")
            if not t.strip():
                return error(422, f"text {i} is empty")
            if len(t) > max_chars:
                return error(422, f"text {i} has {len(t)} characters; the limit is {max_chars}")
        try:
            answers = await batcher.submit(texts)
        except UserError as e:
            return error(422, str(e))
        return {"task": task, "predictions": answers}

    # the annotation FastAPI reads (this module is importable without FastAPI installed)
    predict_endpoint.__annotations__["request"] = fastapi.Request
    app.post("/predict", openapi_extra={"requestBody": request_schema})(predict_endpoint)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        return {**info, "rnnkit_version": __version__, "limits": limits,
                "model_dir": Path(model_dir).name}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.replace("__TASK__", task)

    return app


def app_from_env() -> Any:
    """The app for ``uvicorn --factory`` workers: settings from ``RNNKIT_SERVE_*``."""
    model_dir = os.environ.get("RNNKIT_SERVE_MODEL")
    if not model_dir:
        raise RuntimeError("RNNKIT_SERVE_MODEL is not set")
    return create_app(model_dir, max_batch=int(os.environ.get("RNNKIT_SERVE_MAX_BATCH", "64")),
                      max_wait_ms=float(os.environ.get("RNNKIT_SERVE_MAX_WAIT_MS", "5")))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rnnkit</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 16px system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
 textarea { width: 100%; height: 8rem; font: inherit; }
 button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; }
 #bar { height: 1.2rem; background: #4a8; width: 0; transition: width .2s; }
 #barbox { background: #eee; margin: .3rem 0 1rem; }
 .tok { display: inline-block; margin: .15rem; padding: .1rem .3rem; border-radius: .3rem; }
 .tok small { display: block; font-size: .7rem; color: #333; }
 #error { color: #b00; }
</style></head>
<body>
<h1>rnnkit <small>(__TASK__)</small></h1>
<textarea id="text" placeholder="Type a text"></textarea><br>
<button id="go">Predict</button>
<p id="error"></p>
<div id="answer"><span id="label"></span> <span id="prob"></span></div>
<div id="barbox"><div id="bar"></div></div>
<div id="tags"></div>
<script>
const colors = ["#fbb", "#bfb", "#bbf", "#ffb", "#fbf", "#bff", "#fdb", "#dbf", "#bdf", "#dfb"];
function color(tag) { let h = 0; for (const c of tag) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return colors[h % colors.length]; }
document.getElementById("go").onclick = async () => {
  const err = document.getElementById("error"); err.textContent = "";
  const r = await fetch("/predict", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({text: document.getElementById("text").value})});
  const data = await r.json();
  if (!r.ok) { err.textContent = data.error || r.statusText; return; }
  const p = data.predictions[0];
  const label = document.getElementById("label"), prob = document.getElementById("prob");
  const tags = document.getElementById("tags"); tags.innerHTML = "";
  if ("label" in p) {
    label.textContent = p.label; prob.textContent = (100 * p.probability).toFixed(1) + "%";
    document.getElementById("bar").style.width = (100 * p.probability) + "%";
  } else if ("tags" in p) {
    label.textContent = ""; prob.textContent = "";
    p.tokens.forEach((t, i) => { const s = document.createElement("span"); s.className = "tok";
      s.style.background = color(p.tags[i]); s.textContent = t;
      const k = document.createElement("small"); k.textContent = p.tags[i]; s.appendChild(k);
      tags.appendChild(s); });
  } else { label.textContent = p.translation || p.text; prob.textContent = ""; }
};
</script></body></html>
"""
