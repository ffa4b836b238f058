"""Model persistence: a model directory holds JSON metadata and safetensors weights, no pickle.

A saved model directory contains::

    config.json         {"format": "rnnkit", "format_version": 1, "version": <rnnkit version>,
                         "task": <task name>, "model": {"type": <name>, "config": {...}},
                         **extra}
    weights.safetensors model.state_dict(), contiguous CPU tensors

and whatever else a task writes next to them (e.g. the text encoder's ``text.json``,
``history.json``, plots). Every file is written atomically: to a temporary file in the same
directory, flushed and fsync'ed, then moved over the target with :func:`os.replace`, so a
reader never sees a half-written file (use :func:`atomic_write_bytes`,
:func:`atomic_write_text`, :func:`atomic_write_json` or :func:`atomic_path` for your own files).

**The registry contract.** :func:`load_model` rebuilds the model from ``config.json`` before
loading the weights, so every module in a saved model must be *serialisable*:

* its class is registered with ``@register_model("Name")`` (names are global and stored in
  ``config.json``; keep them stable);
* ``get_config() -> dict`` returns JSON-safe values (numbers, strings, bools, None, lists,
  dicts) -- enough to rebuild a module whose parameters have the *same shapes* as the
  saved ones (store built sizes such as ``input_size``, not just constructor defaults);
* ``from_config(config)`` (a classmethod) rebuilds it; when absent ``cls(**config)`` is used.
  Containers serialise their children with :func:`serialize` and rebuild them with
  :func:`deserialize` (see ``Sequential.get_config``).

Pre-registered: ``Embedding``, ``OneHot``, ``Dense``, ``Dropout``, ``Sequential``, ``RNN``
(generic, with its cell), ``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``.

Example for a task model::

    @register_model("Seq2Seq")
    class Seq2Seq(nn.Module):
        def __init__(self, vocab: int, units: int): ...
        def get_config(self): return {"vocab": self.vocab, "units": self.units}

Errors a user can cause (missing directory, missing or corrupt ``config.json``, missing,
truncated or mismatched ``weights.safetensors``, an unknown model type) raise
:class:`rnnkit.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .errors import UserError

FORMAT = "rnnkit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
_RESERVED = {"format", "format_version", "version", "task", "model"}

#: registered name -> class
MODEL_REGISTRY: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type)


# -- atomic files ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``.

    The parent directory is created if needed. On an exception the temporary file is
    removed and ``path`` is untouched. ``suffix`` helps writers that infer a format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + ``os.replace``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (fails on non-JSON values)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


# -- registry ---------------------------------------------------------------------------------
def register_model(name: str | None = None) -> Callable[[M], M]:
    """Class decorator: make a module class serialisable under ``name`` (default: its class
    name). See the module docstring for the contract."""

    def deco(cls: M) -> M:
        key = name or cls.__name__
        if key in MODEL_REGISTRY and MODEL_REGISTRY[key] is not cls:
            raise ValueError(f"model type name {key!r} is already registered to "
                             f"{MODEL_REGISTRY[key].__module__}.{MODEL_REGISTRY[key].__name__}")
        if not hasattr(cls, "get_config"):
            raise TypeError(f"{cls.__name__} needs a get_config() method to be registered")
        MODEL_REGISTRY[key] = cls
        return cls

    return deco


def _type_name(module: nn.Module) -> str:
    for key, cls in MODEL_REGISTRY.items():
        if type(module) is cls:
            return key
    raise TypeError(f"{type(module).__name__} is not serialisable: decorate its class with "
                    "@rnnkit.io.register_model() and give it get_config()")


def serialize(module: nn.Module) -> dict:
    """``{"type": <registered name>, "config": module.get_config()}`` (JSON-safe)."""
    cfg = {"type": _type_name(module), "config": module.get_config()}
    try:
        json.dumps(cfg, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{type(module).__name__}.get_config() is not JSON-safe: {e}") from None
    return cfg


def deserialize(spec: dict) -> nn.Module:
    """Rebuild a module from :func:`serialize`'s output (fresh weights)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise UserError(f"not a model spec (expected {{'type', 'config'}}): {spec!r:.80}")
    name = spec["type"]
    if name not in MODEL_REGISTRY:
        raise UserError(f"unknown model type {name!r} (known: {', '.join(sorted(MODEL_REGISTRY))};"
                        " is the module that registers it imported?)")
    cls = MODEL_REGISTRY[name]
    config = spec.get("config") or {}
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(config)
        return cls(**config)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"cannot rebuild model type {name!r} from its config: {e}") from None


def _register_builtins() -> None:
    from .layers import Dense, Dropout, Embedding, OneHot, Sequential
    from .recurrent import GRU, LSTM, RNN, Bidirectional, SimpleRNN

    for cls in (Embedding, OneHot, Dense, Dropout, Sequential, RNN, SimpleRNN, LSTM, GRU,
                Bidirectional):
        register_model(cls.__name__)(cls)


_register_builtins()


# -- save / load ------------------------------------------------------------------------------
def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as independent, contiguous CPU tensors (safetensors-ready)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model_dir: str | os.PathLike, model: nn.Module, *, task: str,
               extra: dict | None = None) -> Path:
    """Write ``weights.safetensors`` and ``config.json`` into ``model_dir`` (created if needed),
    each atomically. ``extra`` keys are merged into ``config.json`` at the top level and must
    not clash with the reserved keys. Returns the directory path."""
    from safetensors.torch import save as st_save

    from . import __version__

    extra = dict(extra or {})
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"extra must not use the reserved keys {sorted(clash)}")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "task": task, "model": serialize(model), **extra}
    text = json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # weights first: a reader that finds the new config.json also finds matching weights
    atomic_write_bytes(model_dir / WEIGHTS_FILE,
                       st_save(state_tensors(model), metadata={"format": FORMAT}))
    atomic_write_text(model_dir / CONFIG_FILE, text)
    return model_dir


def read_config(model_dir: str | os.PathLike) -> dict:
    """``config.json`` of a saved model directory, checked; errors are one-line UserErrors."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir}")
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{model_dir} is not an rnnkit model directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: corrupt JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{path}: not an rnnkit model config (missing \"format\": \"rnnkit\")")
    if "model" not in config or "task" not in config:
        raise UserError(f"{path}: incomplete rnnkit config (needs \"task\" and \"model\")")
    if int(config.get("format_version", 1)) > FORMAT_VERSION:
        raise UserError(f"{path}: format version {config['format_version']} is newer than this "
                        f"rnnkit understands ({FORMAT_VERSION}); upgrade rnnkit")
    return config


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a safetensors file into ``model``; every key and shape must match exactly."""
    from safetensors.torch import load as st_load

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        tensors = st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for corrupt data
        raise UserError(f"{path}: corrupt or truncated weights file "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    expected = model.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise UserError(f"{path} does not match the model: missing {missing[:3]}"
                        f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                        f"{'...' if len(unexpected) > 3 else ''}")
    for k, v in expected.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise UserError(f"{path}: weight {k!r} has shape {tuple(tensors[k].shape)}, "
                            f"the model expects {tuple(v.shape)}")
        if tensors[k].dtype != v.dtype:
            tensors[k] = tensors[k].to(v.dtype)
    model.load_state_dict(tensors, strict=True)


def load_model(model_dir: str | os.PathLike, device: str | torch.device | None = None
               ) -> tuple[nn.Module, dict]:
    """Rebuild the model saved in ``model_dir`` and load its weights.

    Returns ``(model, config)`` with the model in eval mode on ``device`` (default CPU) and
    ``config`` the parsed ``config.json``. Task modules that register model types must be
    imported before calling this.
    """
    config = read_config(model_dir)
    model = deserialize(config["model"])
    load_weights(model, Path(model_dir) / WEIGHTS_FILE)
    if device is not None:
        model.to(device)
    model.eval()
    return model, config
