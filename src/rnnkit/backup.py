"""Resumable training: the whole state of :func:`rnnkit.train.fit` at the end of an epoch, in
one file, so a run killed at any moment (even by SIGKILL) continues where it stopped.

``fit(..., backup=Backup(path))`` saves after every finished epoch, and at the start of
``fit`` restores what it finds there, then starts at the next epoch. The state is:

* the model's weights and the optimizer's state (tensors and scalars, e.g. Adam's step);
* the random number generators: torch's global one (dropout), NumPy's and Python's global
  ones, the shuffling generator of ``fit`` and the data's own (an object with
  ``state_dict()``/``load_state_dict()``, such as :class:`rnnkit.tasks._seqtools.Batches`);
* the state of every callback that has ``state_dict()``/``load_state_dict()`` (History,
  EarlyStopping with its best weights, ModelCheckpoint);
* the number of finished epochs.

With the same code, data, flags and thread count, the resumed run computes exactly what an
uninterrupted one would (bit for bit on one thread). The file is ``state.safetensors``:
tensors by name, and everything else as JSON in its metadata; it is written atomically, so
a kill leaves either the previous epoch's state or the new one. It is read back with the
same checks as a model directory's weights (header validated before anything is loaded).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .io import atomic_write_bytes, safetensors_header

STATE_FILE = "state.safetensors"
_FORMAT = "rnnkit.backup"


def _np_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _set_np_state(d: dict[str, Any]) -> None:
    np.random.set_state((d["name"], np.asarray(d["keys"], np.uint32), d["pos"],
                         d["has_gauss"], d["cached"]))


def _split(prefix: str, state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``state`` with every tensor replaced by ``{"__tensor__": key}`` (tensors collected)."""
    if isinstance(state, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = state.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(state, dict):
        return {str(k): _split(f"{prefix}/{k}", v, tensors) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_split(f"{prefix}/{i}", v, tensors) for i, v in enumerate(state)]
    return state


def _join(state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(state, dict):
        if set(state) == {"__tensor__"}:
            if state["__tensor__"] not in tensors:
                raise UserError(f"backup state names a missing tensor {state['__tensor__']!r}")
            return tensors[state["__tensor__"]]
        return {k: _join(v, tensors) for k, v in state.items()}
    if isinstance(state, list):
        return [_join(v, tensors) for v in state]
    return state


def _optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    # JSON keys are strings: keep the parameter indices as a list of pairs
    return {"state": [[int(k), v] for k, v in sd["state"].items()],
            "param_groups": sd["param_groups"]}


def _load_optimizer_state(opt: torch.optim.Optimizer, d: dict[str, Any]) -> None:
    opt.load_state_dict({"state": {int(k): v for k, v in d["state"]},
                         "param_groups": d["param_groups"]})


class Backup:
    """The resumable state of one ``fit`` call, kept in ``directory/state.safetensors``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.stopped = False

    def exists(self) -> bool:
        return self.path.is_file()

    def epochs_done(self) -> int:
        """Finished epochs recorded in the backup (0 when there is none)."""
        if not self.exists():
            return 0
        return int(self._read_meta()["epoch"])

    def save(self, epochs_done: int, model: nn.Module, opt: torch.optim.Optimizer,
             generator: torch.Generator, data: Any, callbacks: Sequence[Any],
             stopped: bool = False) -> None:
        """Write the state after ``epochs_done`` finished epochs (atomically); ``stopped``:
        a callback ended training there (early stopping), so a resumed run trains no more."""
        from safetensors.torch import save as st_save

        tensors: dict[str, torch.Tensor] = {}
        state = {
            "format": _FORMAT, "epoch": epochs_done, "stopped": bool(stopped),
            "model": _split("model", dict(model.state_dict()), tensors),
            "optimizer": _split("optimizer", _optimizer_state(opt), tensors),
            "rng": {"torch": _split("rng/torch", torch.get_rng_state(), tensors),
                    "fit": _split("rng/fit", generator.get_state(), tensors),
                    "numpy": _np_state(), "python": list(_tuplist(random.getstate()))},
            "data": data.state_dict() if hasattr(data, "state_dict") else None,
            "callbacks": [_split(f"cb/{i}", c.state_dict(), tensors)
                          if hasattr(c, "state_dict") else None
                          for i, c in enumerate(callbacks)],
        }
        meta = {"format": _FORMAT, "state": json.dumps(state)}
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, st_save(tensors, metadata=meta))

    def _read_meta(self) -> dict[str, Any]:
        from safetensors import safe_open

        safetensors_header(self.path)  # validates sizes before anything is read
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
            state = json.loads(meta.get("state", "null"))
        except (OSError, ValueError, RecursionError) as e:
            raise UserError(f"{self.path}: corrupt training backup ({e})") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise UserError(f"{self.path}: not an rnnkit training backup")
        return state

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
                data: Any, callbacks: Sequence[Any]) -> int:
        """Load the saved state into the live objects; returns the finished epochs (0 and
        nothing changed when there is no backup). ``self.stopped`` tells whether training
        had been stopped by a callback after them."""
        self.stopped = False
        if not self.exists():
            return 0
        from safetensors.torch import load as st_load

        state = self._read_meta()
        tensors = st_load(self.path.read_bytes())
        try:
            st = _join(state, tensors)
            model.load_state_dict(st["model"], strict=True)
            _load_optimizer_state(opt, st["optimizer"])
            torch.set_rng_state(st["rng"]["torch"])
            generator.set_state(st["rng"]["fit"])
            _set_np_state(st["rng"]["numpy"])
            random.setstate(_untuplist(st["rng"]["python"]))
            if st["data"] is not None and hasattr(data, "load_state_dict"):
                data.load_state_dict(st["data"])
            saved = st["callbacks"]
            if len(saved) != len(callbacks):
                raise ValueError(f"{len(saved)} callbacks saved, {len(callbacks)} now")
            for c, s in zip(callbacks, saved, strict=True):
                if s is not None and hasattr(c, "load_state_dict"):
                    c.load_state_dict(s)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{self.path}: the training backup does not match this run "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        self.stopped = bool(state.get("stopped", False))
        return int(state["epoch"])


def _tuplist(x: Any) -> Any:
    return [_tuplist(v) for v in x] if isinstance(x, (list, tuple)) else x


def _untuplist(x: Any) -> Any:
    return tuple(_untuplist(v) for v in x) if isinstance(x, list) else x


class ReadOnlyBackup(Backup):
    """A :class:`Backup` that restores but never writes: what the ranks other than 0 of a
    data-parallel run use (rank 0 writes the one backup every rank resumes from)."""

    def save(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102 - see the class
        return None
