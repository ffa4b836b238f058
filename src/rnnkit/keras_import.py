"""Import a Keras ``Sequential`` model file as an rnnkit model directory.

    rnnkit import-keras model.keras --out DIR      # Keras 3 native format (a zip)
    rnnkit import-keras model.h5 --out DIR         # legacy HDF5 (Keras 2, or Keras 3's .h5)

Supported layers: ``InputLayer``, ``Embedding``, ``SimpleRNN``, ``LSTM``, ``GRU``
(``reset_after=True``), ``Bidirectional`` of those, ``Dense`` (linear, sigmoid, softmax, relu,
tanh) and ``Dropout``. Keras keeps weights in the layout rnnkit uses (``kernel (in, gates*units)``,
``recurrent_kernel (units, gates*units)``, gate order i f c o for LSTM and z r h for GRU, the
GRU bias ``(2, 3*units)``), so the import is a copy: the imported model computes the same
function (``tests/test_keras_import.py`` holds the outputs within 1e-5 of Keras's).

The file is data: it is read with ``zipfile``, ``json`` and ``h5py`` only (no Keras, no
pickle, no code named in the file runs); any other layer class or option rnnkit does not
have (``stateful``, ``return_state``, a GRU with ``reset_after=False``, a ``hard_sigmoid``
recurrent activation, ...) is an error naming the layer; every size is checked before
anything is allocated and every weight's shape before it is copied.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .layers import Dense, Dropout, Embedding, Sequential
from .recurrent import GRU, LSTM, RNN, Bidirectional, SimpleRNN

#: caps on what a model file may ask for
MAX_CONFIG_BYTES = 16 << 20
MAX_WEIGHTS_BYTES = 4 << 30
MAX_DIM = 1 << 24
MAX_PARAMS = 1 << 31

TASK = "keras"


def _fail(path: Path, msg: str) -> UserError:
    return UserError(f"{path}: {msg}")


# -- reading ---------------------------------------------------------------------------------
def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise UserError("importing Keras models needs h5py: pip install 'rnnkit[keras]'"
                        ) from None
    return h5py


def _arrays(group: Any) -> list[np.ndarray]:
    """The datasets ``0, 1, ...`` of a Keras 3 ``vars`` group, in order."""
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    return [np.asarray(group[k]) for k in keys if k.isdigit()]


def _keras3_weights(f: Any, name: str) -> list[np.ndarray]:
    """A layer's weights in a Keras 3 ``model.weights.h5``: its own ``vars`` then its
    ``cell``'s (recurrent layers), or forward then backward (Bidirectional)."""
    base = f"layers/{name}"
    if base not in f:
        return []
    g = f[base]
    out: list[np.ndarray] = []
    if "vars" in g:
        out += _arrays(g["vars"])
    if "cell" in g and "vars" in g["cell"]:
        out += _arrays(g["cell"]["vars"])
    for side in ("forward_layer", "backward_layer"):
        if side in g:
            s = g[side]
            if "vars" in s:
                out += _arrays(s["vars"])
            if "cell" in s and "vars" in s["cell"]:
                out += _arrays(s["cell"]["vars"])
    return out


def _legacy_weights(f: Any, name: str) -> list[np.ndarray]:
    """A layer's weights in a legacy ``.h5``: the datasets its ``weight_names`` list."""
    root = f["model_weights"] if "model_weights" in f else f
    if name not in root:
        return []
    g = root[name]
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in g.attrs.get("weight_names", [])]
    return [np.asarray(g[n]) for n in names]


def _snake(name: str) -> str:
    """Keras's ``to_snake_case``: ``SimpleRNN`` -> ``simple_rnn``, ``Conv1D`` -> ``conv1d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras_file(path: str | Path) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """``(model config, weight arrays of each layer but the InputLayer, in order)`` of a
    ``.keras`` or ``.h5`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    h5py = _h5py()
    with open(path, "rb") as fh:
        magic = fh.read(8)
    try:
        if magic[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as z:
                sizes = {i.filename: i.file_size for i in z.infolist()}
                if "config.json" not in sizes or "model.weights.h5" not in sizes:
                    raise _fail(path, "not a Keras 3 model archive (config.json and "
                                "model.weights.h5 expected)")
                if sizes["config.json"] > MAX_CONFIG_BYTES:
                    raise _fail(path, f"config.json is over {MAX_CONFIG_BYTES >> 20} MB")
                if sizes["model.weights.h5"] > MAX_WEIGHTS_BYTES:
                    raise _fail(path, f"model.weights.h5 is over {MAX_WEIGHTS_BYTES >> 30} GB")
                config = json.loads(z.read("config.json"))
                blob = io.BytesIO(z.read("model.weights.h5"))
            with h5py.File(blob, "r") as f:
                # Keras 3 stores each layer under its class name in snake case, numbered
                # within the model (embedding, lstm, lstm_1, ...), not under layer.name
                seen: dict[str, int] = {}
                weights = []
                for c in _layer_configs(path, config):
                    if c.get("class_name") == "InputLayer":
                        continue
                    base = _snake(str(c.get("class_name", "")))
                    k = seen.get(base, 0)
                    seen[base] = k + 1
                    weights.append(_keras3_weights(f, base if k == 0 else f"{base}_{k}"))
        elif magic == b"\x89HDF\r\n\x1a\n":
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    raise _fail(path, "an HDF5 file without a model_config (weights only?)")
                raw = raw.decode() if isinstance(raw, bytes) else str(raw)
                if len(raw) > MAX_CONFIG_BYTES:
                    raise _fail(path, "model_config is too large")
                config = json.loads(raw)
                weights = [_legacy_weights(f, str(c.get("config", {}).get("name")))
                           for c in _layer_configs(path, config)
                           if c.get("class_name") != "InputLayer"]
        else:
            raise _fail(path, "neither a .keras archive nor an HDF5 .h5 file")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, UserError):
            raise
        raise _fail(path, f"cannot read the Keras model ({type(e).__name__}: {e})") from None
    return config, weights


def _layer_configs(path: Path, config: Any) -> list[dict[str, Any]]:
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        name = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise _fail(path, f"only Sequential models can be imported, this is a {name}")
    cfg = config.get("config")
    layers = cfg.get("layers") if isinstance(cfg, dict) else cfg  # Keras 2.0: a list
    if not isinstance(layers, list) or not all(isinstance(c, dict) for c in layers):
        raise _fail(path, "the Sequential config has no layer list")
    return layers


# -- building --------------------------------------------------------------------------------
def _int(path: Path, layer: str, cfg: dict, key: str, hi: int = MAX_DIM) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
        raise _fail(path, f"layer {layer!r}: {key} must be an integer in [1, {hi}], got {v!r:.30}")
    return v


def _rnn(path: Path, name: str, kind: str, cfg: dict, input_size: int) -> RNN:
    def bad(msg: str) -> UserError:
        return _fail(path, f"layer {name!r} ({kind}): {msg} has no rnnkit equivalent")

    for flag in ("stateful", "return_state", "time_major"):
        if cfg.get(flag):
            raise bad(f"{flag}=True")
    units = _int(path, name, cfg, "units", 1 << 16)
    common = {"return_sequences": bool(cfg.get("return_sequences", False)),
              "go_backwards": bool(cfg.get("go_backwards", False)),
              "dropout": float(cfg.get("dropout", 0.0) or 0.0),
              "recurrent_dropout": float(cfg.get("recurrent_dropout", 0.0) or 0.0),
              "input_size": input_size, "use_bias": bool(cfg.get("use_bias", True))}
    act = cfg.get("activation", "tanh")
    if kind == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise bad(f"activation {act!r}")
        return SimpleRNN(units, activation=act, **common)
    if act != "tanh":
        raise bad(f"activation {act!r}")
    if cfg.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise bad(f"recurrent_activation {cfg.get('recurrent_activation')!r}")
    if kind == "LSTM":
        return LSTM(units, **common)
    if not cfg.get("reset_after", True):
        raise bad("reset_after=False")
    return GRU(units, **common)


_RNNS = ("SimpleRNN", "LSTM", "GRU")


def _dims(path: Path, layers: list[dict]) -> tuple[int, ...] | None:
    """The model's input shape without the batch axis, from the InputLayer or a layer's
    ``batch_input_shape`` / ``batch_shape`` (None when unknown)."""
    for c in layers:
        cfg = c.get("config", {}) if isinstance(c.get("config"), dict) else {}
        for key in ("batch_shape", "batch_input_shape"):
            shape = cfg.get(key)
            if isinstance(shape, list) and shape:
                return tuple(shape[1:])
    return None


def build_sequential(path: Path, config: dict) -> tuple[Sequential, list[str]]:
    """The rnnkit Sequential a Keras config describes (weights uninitialised) and the
    Keras layer name of each of its layers."""
    layers_cfg = _layer_configs(path, config)
    shape = _dims(path, layers_cfg)
    feats = shape[-1] if shape and isinstance(shape[-1], int) else None
    out: list[nn.Module] = []
    names: list[str] = []
    params = 0
    for c in layers_cfg:
        kind, cfg = c.get("class_name"), c.get("config")
        if not isinstance(cfg, dict):
            raise _fail(path, f"layer {kind!r} has no config")
        name = str(cfg.get("name", kind))
        if kind == "InputLayer":
            continue
        if kind == "Embedding":
            n_in, n_out = _int(path, name, cfg, "input_dim"), _int(path, name, cfg, "output_dim",
                                                                   1 << 16)
            params += n_in * n_out
            if params > MAX_PARAMS:
                raise _fail(path, f"layer {name!r}: over {MAX_PARAMS} parameters")
            layer: nn.Module = Embedding(n_in, n_out, mask_zero=bool(cfg.get("mask_zero")))
            feats = n_out
        elif kind in _RNNS or kind == "Bidirectional":
            if feats is None:
                raise _fail(path, f"layer {name!r}: the input feature size is unknown (give the "
                            "model an Input shape)")
            if kind == "Bidirectional":
                inner = cfg.get("layer")
                back = cfg.get("backward_layer")
                if not isinstance(inner, dict) or inner.get("class_name") not in _RNNS:
                    raise _fail(path, f"layer {name!r}: Bidirectional of "
                                f"{inner.get('class_name') if isinstance(inner, dict) else '?'} "
                                "is not supported (SimpleRNN, LSTM, GRU)")
                fwd = _rnn(path, name, inner["class_name"], inner.get("config", {}), feats)
                if isinstance(back, dict):
                    bwd = _rnn(path, name, back.get("class_name", ""), back.get("config", {}),
                               feats)
                    bwd.go_backwards = True
                else:
                    bwd = _rnn(path, name, inner["class_name"], inner.get("config", {}), feats)
                    bwd.go_backwards = not fwd.go_backwards
                if fwd.go_backwards:
                    raise _fail(path, f"layer {name!r}: a go_backwards forward layer")
                merge = cfg.get("merge_mode", "concat")
                if merge not in ("concat", "sum", "mul", "ave"):
                    raise _fail(path, f"layer {name!r}: merge_mode {merge!r} is not supported")
                layer = Bidirectional(fwd, merge_mode=merge, backward_layer=bwd)
                feats = layer.output_size()
            else:
                layer = _rnn(path, name, kind, cfg, feats)
                feats = layer.output_size()
        elif kind == "Dense":
            units = _int(path, name, cfg, "units", 1 << 20)
            act = cfg.get("activation", "linear")
            if act not in ("linear", "sigmoid", "softmax", "relu", "tanh"):
                raise _fail(path, f"layer {name!r} (Dense): activation {act!r} has no rnnkit "
                            "equivalent")
            if feats is None:
                raise _fail(path, f"layer {name!r}: the input feature size is unknown")
            params += feats * units
            layer = Dense(units, None if act == "linear" else act, input_size=feats,
                          use_bias=bool(cfg.get("use_bias", True)))
            feats = units
        elif kind == "Dropout":
            rate = cfg.get("rate", 0.0)
            if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise _fail(path, f"layer {name!r}: dropout rate must be in [0, 1)")
            layer = Dropout(float(rate))
        else:
            raise _fail(path, f"layer {name!r} is a {kind}, which rnnkit cannot import "
                        "(supported: Embedding, SimpleRNN, LSTM, GRU, Bidirectional, Dense, "
                        "Dropout)")
        if params > MAX_PARAMS:
            raise _fail(path, f"over {MAX_PARAMS} parameters")
        out.append(layer)
        names.append(name)
    if not out:
        raise _fail(path, "the model has no layers")
    seq = Sequential(*out)
    if shape is not None and all(isinstance(d, int) for d in shape):
        seq.input_shape = shape
    return seq, names


def _targets(layer: nn.Module) -> list[nn.Parameter]:
    """The parameters of an rnnkit layer in Keras's weight order."""
    if isinstance(layer, Embedding):
        return [layer.weight]
    if isinstance(layer, Dense):
        return [layer.kernel] + ([layer.bias] if layer.bias is not None else [])
    if isinstance(layer, Bidirectional):
        return _targets(layer.forward_layer) + _targets(layer.backward_layer)
    if isinstance(layer, RNN):
        c = layer.cell
        return [c.kernel, c.recurrent_kernel] + ([c.bias] if c.bias is not None else [])
    return []


def import_keras(path: str | Path) -> Sequential:
    """The rnnkit model of a Keras Sequential file, weights copied (shapes checked)."""
    path = Path(path)
    config, weights = read_keras_file(path)
    model, names = build_sequential(path, config)
    if len(weights) != len(names):
        raise _fail(path, f"{len(names)} layers in the config, weights for {len(weights)}")
    for layer, name, arrays in zip(model, names, weights, strict=True):
        targets = _targets(layer)
        if len(arrays) != len(targets):
            raise _fail(path, f"layer {name!r}: {len(arrays)} weight arrays in the file, "
                        f"{len(targets)} expected")
        with torch.no_grad():
            for p, a in zip(targets, arrays, strict=True):
                if tuple(a.shape) != tuple(p.shape):
                    raise _fail(path, f"layer {name!r}: a weight of shape {tuple(a.shape)} where "
                                f"{tuple(p.shape)} is expected")
                if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
                    raise _fail(path, f"layer {name!r}: weights must be finite floats")
                p.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    model.eval()
    return model


def parameter_count(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
