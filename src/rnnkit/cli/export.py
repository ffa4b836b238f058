"""``rnnkit export``: a saved model as ONNX, with its text side as JSON beside it.

    rnnkit export MODEL --format onnx --out model.onnx    # also writes model.onnx.json

Every task's model is exported: text classifiers (imdb, text), imported Keras models,
taggers, forecasters, series classifiers, siamese encoders, language models (one step, the
state as explicit inputs and outputs) and translators (the encoder in ``--out``, one decoder
step in ``NAME.decoder.onnx`` beside it). A forecaster's graph takes the windows already
scaled (per column, or per window for the many-series model) as the task does. see
:mod:`rnnkit.onnx_export` for the graph and what is refused. ``model.onnx.json`` holds the
task, the graph's inputs and outputs, the model directory's settings (vocabularies, labels,
tags, scaler, ...) and its ``text.json`` (tokenizer, maxlen, padding) when it has one, so a
runtime can prepare inputs as rnnkit does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_path, atomic_write_json, load_model, read_json
from ..rundir import check_output_file
from .common import print_json

EXPORTS = ("imdb", "text", "keras", "tagger", "forecast", "forecast_global", "lm", "seq2seq",
           "series", "siamese")


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a saved model to ONNX", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--padding", choices=["pre", "post"], default=None,
                   help="how inputs are padded (default: the model's text settings, else pre)")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.set_defaults(func=export_cmd)


def export_cmd(args: argparse.Namespace) -> int:
    from .. import onnx_export as ox

    check_output_file(args.out, "--out")
    model, cfg = load_model(args.model_dir)
    task = cfg.get("task")
    if task not in EXPORTS:
        raise UserError(f"export supports models of the tasks {', '.join(EXPORTS)}; this one "
                        f"is {task!r}")
    text_file = Path(args.model_dir) / "text.json"
    text = read_json(text_file, "text") if text_file.is_file() else None
    padding = args.padding or (text.get("padding") if isinstance(text, dict) else None) or "pre"
    if task in ("imdb", "text", "keras"):
        proto = ox.export_sequential(model, padding=padding)
    elif task == "tagger":
        proto, padding = ox.export_tagger(model), "post"
    elif task in ("forecast", "forecast_global"):
        proto = ox.export_forecaster(model)
    elif task == "series":
        proto, padding = ox.export_series(model), "post"
    elif task == "siamese":
        proto, padding = ox.export_siamese(model), "post"
    elif task == "seq2seq":
        proto, decoder = ox.export_seq2seq(model)
        padding = "post"
    else:
        proto = ox.export_lm_step(model)
    with atomic_path(args.out, suffix=".onnx") as tmp:
        Path(tmp).write_bytes(proto.SerializeToString())
    side: dict[str, Any] = {
        "task": task, "onnx": Path(args.out).name, "padding": padding,
        "inputs": [_io(v) for v in proto.graph.input],
        "outputs": [_io(v) for v in proto.graph.output],
        "config": {k: v for k, v in cfg.items() if k != "model"}, "text": text}
    if task == "seq2seq":  # the encoder in --out, one decoder step beside it
        dec_path = Path(args.out).with_suffix(".decoder.onnx")
        with atomic_path(dec_path, suffix=".onnx") as tmp:
            Path(tmp).write_bytes(decoder.SerializeToString())
        side["decoder"] = {"onnx": dec_path.name,
                           "inputs": [_io(v) for v in decoder.graph.input],
                           "outputs": [_io(v) for v in decoder.graph.output]}
    atomic_write_json(f"{args.out}.json", side)
    res = {"onnx": args.out, "json": f"{args.out}.json", "task": task,
           "inputs": [i["name"] for i in side["inputs"]],
           "outputs": [o["name"] for o in side["outputs"]]}
    if args.json:
        print_json(res)
    else:
        print(f"wrote {args.out} (inputs {', '.join(res['inputs'])}; outputs "
              f"{', '.join(res['outputs'])}) and {args.out}.json")
    return 0


def _io(v: Any) -> dict[str, Any]:
    dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return {"name": v.name, "shape": dims}
