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
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .registry import (  # noqa: F401 - re-exported: rnnkit.io is where users find them
    MODEL_REGISTRY,
    deserialize,
    register_model,
    same_kind,
    serialize,
)
from .version import __version__

FORMAT = "rnnkit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
_RESERVED = {"format", "format_version", "version", "task", "model"}



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
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
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


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + ``os.replace``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no such numbers,
    and a diverged metric must not make an output file or ``--json`` line invalid)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (non-finite floats as null)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, ensure_ascii=False,
                                       allow_nan=False) + "\n")


# -- reading untrusted files --------------------------------------------------------------
#: the largest JSON file read from a model directory (a vocabulary of millions of words fits)
MAX_JSON_BYTES = 256 * 2**20
#: the largest int accepted anywhere in a model's config (sizes of layers, vocabularies)
MAX_CONFIG_INT = 2**24


def read_json(path: str | os.PathLike, what: str = "JSON", max_bytes: int = MAX_JSON_BYTES
              ) -> Any:
    """Parse the JSON file ``path``: its size is checked before reading, and every failure
    (missing, unreadable, too big, not UTF-8, corrupt, nested too deeply, non-standard
    constants) is a one-line :class:`UserError` naming ``what``."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"{what} file not found: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{path}: {what} file too large ({size} bytes, at most {max_bytes})")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: corrupt JSON in the {what} file (not UTF-8 at byte {e.start})"
                        ) from None
    except RecursionError:
        raise UserError(f"{path}: corrupt JSON in the {what} file (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError and the constants refused below
        raise UserError(f"{path}: corrupt JSON in the {what} file "
                        f"({str(e).splitlines()[0]})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def check_config_values(obj: Any, where: str, depth: int = 0, sizes: bool = True) -> None:
    """UserError unless ``obj`` is JSON made of bounded parts: ints within
    ±:data:`MAX_CONFIG_INT` (with ``sizes``: the parts sizes are built from), finite floats,
    nesting at most 32 deep. Run on every config read from a model directory before
    anything is built from it."""
    if depth > 32:
        raise UserError(f"{where}: config nested too deeply")
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, int):
        if sizes and abs(obj) > MAX_CONFIG_INT:
            raise UserError(f"{where}: value {obj} is out of range (at most {MAX_CONFIG_INT})")
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise UserError(f"{where}: non-finite value {obj}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_config_values(v, f"{where}.{k}", depth + 1, sizes)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_config_values(v, f"{where}[{i}]", depth + 1, sizes)
    else:
        raise UserError(f"{where}: unexpected value of type {type(obj).__name__}")


#: safetensors dtype names -> bytes per element
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
              "I8": 1, "U8": 1, "BOOL": 1}
_ST_MAX_HEADER = 100 * 2**20


def safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors file's JSON header, read without loading
    the tensors and checked: the header length, every dtype, shape and byte range must be
    consistent with each other and with the file's size. UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    size = path.stat().st_size
    bad = f"{path}: corrupt or truncated weights file"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{bad} (shorter than its header)")
        n = int.from_bytes(head, "little")
        if n > min(_ST_MAX_HEADER, size - 8):
            raise UserError(f"{bad} (header of {n} bytes in a file of {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UserError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise UserError(f"{bad} (header is not an object)")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (dtype in _ST_DTYPES and isinstance(shape, list)
                  and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape)
                  and all(isinstance(o, int) and not isinstance(o, bool) for o in (a, b))
                  and 0 <= a <= b <= data_len
                  and math.prod(shape) * _ST_DTYPES[dtype] == b - a)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{bad} (entry {name!r:.60} is inconsistent)")
        out[name] = (dtype, tuple(shape))
    return out


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a data file: what a model directory records about
    its training data instead of a path (a directory never makes rnnkit read a file)."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": h.hexdigest()}


def same_file(path: str | os.PathLike, record: Any) -> bool:
    """Whether ``path`` has the checksum in ``record`` (a :func:`file_record`)."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return False
    p = Path(path)
    if not p.is_file() or p.stat().st_size != record.get("size"):
        return False
    return file_record(p)["sha256"] == record["sha256"]


# -- registry: rnnkit.registry (imported above, re-exported) ---------------------------------
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

    extra = dict(extra or {})
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"extra must not use the reserved keys {sorted(clash)}")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
              "task": task, "model": serialize(model), **json_safe(extra)}
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
    config = read_json(path, "model config", max_bytes=16 * 2**20)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{path}: not an rnnkit model config (missing \"format\": \"rnnkit\")")
    if not isinstance(config.get("model"), dict) or not isinstance(config.get("task"), str):
        raise UserError(f"{path}: incomplete rnnkit config (needs \"task\" and \"model\")")
    version = config.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"{path}: format_version must be an integer, got {version!r:.40}")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: format version {version} is newer than this "
                        f"rnnkit understands ({FORMAT_VERSION}); upgrade rnnkit")
    # every size the model or the task is built from is bounded; the recorded training
    # flags ("training": seeds and the like) are only read back, never allocated from
    check_config_values({k: v for k, v in config.items() if k != "training"}, str(path))
    check_config_values(config.get("training"), f"{path}: training", sizes=False)
    return config


def _check_shapes(path: Path, expected: dict[str, tuple[int, ...]],
                  found: dict[str, tuple[int, ...]]) -> None:
    """UserError unless the weights ``found`` in ``path`` have exactly the names and shapes
    the model ``expected``."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    if missing or unexpected:
        raise UserError(f"{path} does not match the model: missing {missing[:3]}"
                        f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                        f"{'...' if len(unexpected) > 3 else ''}")
    for k, shape in expected.items():
        if found[k] != shape:
            raise UserError(f"{path}: weight {k!r} has shape {found[k]}, the model expects "
                            f"{shape}")


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
    _check_shapes(path, {k: tuple(v.shape) for k, v in expected.items()},
                  {k: tuple(v.shape) for k, v in tensors.items()})
    for k, v in expected.items():
        if tensors[k].dtype != v.dtype:
            tensors[k] = tensors[k].to(v.dtype)
    model.load_state_dict(tensors, strict=True)


def _build_checked(spec: dict, header: dict[str, tuple[str, tuple[int, ...]]],
                   path: Path) -> nn.Module:
    """Rebuild the model of ``spec`` and check its parameter names and shapes against the
    weights file's ``header`` *before* any real allocation: the model is first built on
    PyTorch's ``meta`` device (shapes without storage), so a config asking for 10**9 units
    costs nothing; only a model that matches the file (whose size bounds it) is built for
    real."""
    try:
        with torch.device("meta"):
            ghost = deserialize(spec)
        shapes = {k: tuple(v.shape) for k, v in ghost.state_dict().items()}
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to rebuild from a file is the file's
        why = str(e).splitlines()[0][:120] if str(e) else ""
        raise UserError(f"{path.parent / CONFIG_FILE}: cannot rebuild the model from its "
                        f"config ({type(e).__name__}: {why})") from None
    _check_shapes(path, shapes, {k: shape for k, (_, shape) in header.items()})
    from .kernels import BACKENDS

    for m in ghost.modules():
        backend = getattr(m, "backend", None)
        if backend is not None and not (isinstance(backend, str)
                                        and (backend == "auto" or backend in BACKENDS)):
            raise UserError(f"{path.parent / CONFIG_FILE}: unknown backend {backend!r:.40} "
                            f"(known: auto, {', '.join(sorted(BACKENDS))})")
    try:
        return deserialize(spec)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path.parent / CONFIG_FILE}: cannot rebuild the model from its "
                        f"config ({type(e).__name__})") from None


def load_model(model_dir: str | os.PathLike, device: str | torch.device | None = None
               ) -> tuple[nn.Module, dict]:
    """Rebuild the model saved in ``model_dir`` and load its weights.

    Returns ``(model, config)`` with the model in eval mode on ``device`` (default CPU) and
    ``config`` the parsed ``config.json``. Task modules that register model types must be
    imported before calling this.

    A model directory is treated as untrusted data: the config is size- and range-checked,
    the weights' header is validated against the file, and the model's shapes are checked
    against that header before anything is allocated (:func:`_build_checked`); types come
    only from :data:`MODEL_REGISTRY`.
    """
    config = read_config(model_dir)
    wpath = Path(model_dir) / WEIGHTS_FILE
    header = safetensors_header(wpath)
    model = _build_checked(config["model"], header, wpath)
    load_weights(model, wpath)
    if device is not None:
        model.to(device)
    model.eval()
    return model, config
