"""``rnnkit import-keras``: a Keras Sequential model file becomes an rnnkit model directory.

    rnnkit import-keras model.keras --out DIR     # or a legacy model.h5
    rnnkit summary DIR                            # the same layers and parameter counts

In Python: ``rnnkit.io.load_model(DIR)`` returns the model (a
:class:`rnnkit.layers.Sequential`). See :mod:`rnnkit.keras_import` for what is supported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import atomic_write_json, file_record, save_model
from ..keras_import import TASK, import_keras, parameter_count
from ..rundir import check_output_dir
from .common import print_json


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-keras", help="import a Keras Sequential model (.keras or .h5)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="a Keras 3 .keras archive or a legacy .h5 model file")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.set_defaults(func=import_cmd)


def import_cmd(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output_dir(out)
    model = import_keras(args.file)
    save_model(out, model, task=TASK, extra={"source": file_record(args.file)})
    atomic_write_json(out / "data.json", {"file": file_record(args.file)})
    res = {"model_dir": str(out), "layers": len(model), "parameters": parameter_count(model)}
    if args.json:
        print_json(res)
    else:
        print(f"imported {len(model)} layers, {res['parameters']:,} parameters into {out}")
    return 0
