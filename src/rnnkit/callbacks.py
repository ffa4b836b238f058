"""Callbacks for :func:`rnnkit.train.fit`, with Keras semantics.

A callback receives, in this order::

    on_train_begin(logs)
      for each epoch e (0-based):
        on_epoch_begin(e, logs)
          for each batch b: on_batch_begin(b, logs); on_batch_end(b, logs)
        on_epoch_end(e, logs)       # logs: loss, metrics, val_loss, val_<metric>
    on_train_end(logs)

``fit`` sets ``callback.model`` and ``callback.params`` (epochs, steps, verbose) before
``on_train_begin``. Setting ``callback.stop_training = True`` ends training after the current
batch (checked after every batch and every epoch).

* :class:`History` -- ``history[key]`` is the list of per-epoch values; JSON round trip.
* :class:`EarlyStopping` -- stops when ``monitor`` has not improved by more than
  ``min_delta`` for ``patience`` epochs. ``restore_best_weights`` loads, at the end of
  training, the weights of the epoch with the best ``monitor`` value (as Keras 3 does: also
  when training ran all epochs without stopping early).
* :class:`ModelCheckpoint` -- saves the model with :func:`rnnkit.io.save_model` (atomic
  files), or with a task's own ``save_fn(model, model_dir)``, whenever ``monitor``
  improves (``save_best_only``) or after every epoch.
* :class:`ProgressBar` -- a tqdm bar per epoch with running loss/metrics on a terminal, one
  summary line per epoch otherwise; writes to stderr so that stdout stays machine-readable.
* :class:`TerminateOnNaN` -- stops as soon as a batch loss is NaN or infinite.

"Improves" follows ``mode``: ``"min"``, ``"max"`` or ``"auto"`` (max when the monitored
name contains ``acc``, ``auc``, ``precision``, ``recall``, ``f1`` or ``bleu``; else min).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError

_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "bleu")


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the model being trained,
    ``self.optimizer`` its optimizer (both set by ``fit``; ``fit`` sets ``optimizer`` back to
    None after ``on_train_end``, so a kept callback, the returned History among them, does not
    hold the optimizer's state)."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.params: dict[str, Any] = {}
        self.stop_training = False

    def set_model(self, model: nn.Module) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class History(Callback):
    """Per-epoch logs: ``history["loss"][e]`` etc., ``epoch`` the list of epoch indices."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        pass  # keep accumulating across several fit calls, as Keras does per History object

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))

    def to_dict(self) -> dict:
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in
                                                       self.history.items()}}

    def state_dict(self) -> dict:
        """What :class:`rnnkit.backup.Backup` keeps to resume (see :meth:`to_dict`)."""
        return self.to_dict()

    def load_state_dict(self, d: dict) -> None:
        self.epoch = [int(e) for e in d["epoch"]]
        self.history = {k: [float(x) for x in v] for k, v in d["history"].items()}

    def to_json(self) -> str:
        """JSON text; non-finite values are written as null."""
        def fin(v: float) -> float | None:
            return v if math.isfinite(v) else None
        d = self.to_dict()
        d["history"] = {k: [fin(x) for x in v] for k, v in d["history"].items()}
        return json.dumps(d, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> History:
        d = json.loads(text)
        h = cls()
        h.epoch = [int(e) for e in d["epoch"]]
        h.history = {k: [float("nan") if x is None else float(x) for x in v]
                     for k, v in d["history"].items()}
        return h

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_json` to ``path`` atomically (e.g. ``model_dir/history.json``)."""
        from .io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    def best(self, key: str, mode: str = "auto") -> tuple[int, float]:
        """``(epoch, value)`` of the best logged ``key`` (NaN values are skipped)."""
        values = self.history[key]
        better = _better(key, mode)
        i = None
        for j, v in enumerate(values):
            if not math.isnan(v) and (i is None or better(v, values[i])):
                i = j
        if i is None:
            raise ValueError(f"no finite values of {key!r} in the history")
        return self.epoch[i], values[i]


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if any(h in monitor.lower() for h in _MAX_HINTS) else "min"
    return mode


def _better(monitor: str, mode: str) -> Callable[[float, float], bool]:
    if _mode(monitor, mode) == "max":
        return lambda a, b: a > b
    return lambda a, b: a < b


def _monitor_value(who: str, monitor: str, logs: dict | None) -> float:
    logs = logs or {}
    if monitor not in logs:
        hint = " (give validation data to fit)" if monitor.startswith("val_") else ""
        raise ValueError(f"{who} monitors {monitor!r}, but the epoch logs only have "
                         f"{sorted(logs)}{hint}")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` stops improving (Keras 3 semantics).

    After each epoch: if ``monitor`` improved on the best value by more than ``min_delta``
    (in the direction of ``mode``), it becomes the best and the wait counter resets; else
    the counter grows and training stops once it reaches ``patience``. With
    ``restore_best_weights`` the model's state dict at the best epoch is kept (in memory)
    and loaded back at the end of training. ``best_epoch``, ``best`` and ``stopped_epoch``
    (-1 when training was not stopped) are available afterwards.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "auto",
                 min_delta: float = 0.0, restore_best_weights: bool = False,
                 verbose: int = 0) -> None:
        super().__init__()
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode = _mode(monitor, mode)
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.stopped_epoch = -1
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, current: float) -> bool:
        if self.mode == "min":
            return current + self.min_delta < self.best
        return current - self.min_delta > self.best

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()
        self.stop_training = False

    def state_dict(self) -> dict:
        """The early-stopping state (best weights included) for resuming."""
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, d: dict) -> None:
        self.wait, self.best = int(d["wait"]), float(d["best"])
        self.best_epoch, self.stopped_epoch = int(d["best_epoch"]), int(d["stopped_epoch"])
        self.best_weights = d["best_weights"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = _monitor_value("EarlyStopping", self.monitor, logs)
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(self.model)
            self.best_epoch = epoch
        self.wait += 1
        if self._improved(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.model)
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch >= 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", file=sys.stderr)
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.", file=sys.stderr)
            assert self.model is not None
            self.model.load_state_dict(self.best_weights)


def _snapshot(model: nn.Module | None) -> dict[str, torch.Tensor]:
    assert model is not None, "callback used outside fit"
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ModelCheckpoint(Callback):
    """Save the model to ``model_dir`` with :func:`rnnkit.io.save_model` after an epoch.

    ``save_best_only=True`` saves only when ``monitor`` improves on the best value so far
    (the first epoch always saves); else every epoch overwrites the directory.

    Without ``save_fn`` it calls ``save_model(model_dir, model, task=task, extra=extra)``;
    ``config.json`` then also records ``{"checkpoint": {"epoch", "monitor", "value"}}``.
    With ``save_fn``, ``save_fn(model, model_dir)`` *replaces* that call: a task saves
    everything itself (its ``save_model`` call plus its own files such as the text
    encoder's, each written atomically). ``saved_epochs`` lists the epochs that were saved,
    ``last_saved`` is ``{"epoch", "monitor", "value"}`` of the latest save.
    """

    def __init__(self, model_dir: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = True, save_fn: Callable[[nn.Module, Path], None]
                 | None = None, *, mode: str = "auto", task: str = "model",
                 extra: dict | None = None, verbose: int = 0) -> None:
        super().__init__()
        self.model_dir = Path(model_dir)
        self.monitor, self.save_best_only, self.save_fn = monitor, save_best_only, save_fn
        self.mode = _mode(monitor, mode)
        self.task, self.extra, self.verbose = task, dict(extra or {}), verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved_epochs: list[int] = []
        self.last_saved: dict | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def state_dict(self) -> dict:
        """The best value so far and the saved epochs, for resuming."""
        return {"best": self.best, "saved_epochs": list(self.saved_epochs),
                "last_saved": self.last_saved}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.saved_epochs = float(d["best"]), [int(e) for e in d["saved_epochs"]]
        self.last_saved = d["last_saved"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = _monitor_value("ModelCheckpoint", self.monitor, logs)
        if not math.isfinite(current):
            return  # a non-finite epoch never replaces a finite checkpoint
        if self.save_best_only:
            improved = current < self.best if self.mode == "min" else current > self.best
            if not improved:
                return
            self.best = current
        self.save(epoch, current)

    def save(self, epoch: int, value: float) -> None:
        from .io import save_model

        assert self.model is not None
        info = {"epoch": epoch, "monitor": self.monitor,
                "value": value if math.isfinite(value) else None}
        if self.save_fn is not None:
            self.save_fn(self.model, self.model_dir)
        else:
            save_model(self.model_dir, self.model, task=self.task,
                       extra={**self.extra, "checkpoint": info})
        self.saved_epochs.append(epoch)
        self.last_saved = info
        if self.verbose:
            print(f"Epoch {epoch + 1}: {self.monitor}={value:.4f}, saved to {self.model_dir}",
                  file=sys.stderr)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch: ``lr = schedule(epoch, lr)`` (Keras
    semantics; ``fit`` gives each callback its ``optimizer``). :func:`cosine_schedule` is
    the usual decay."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        opt = getattr(self, "optimizer", None)
        if opt is None:
            raise ValueError("LearningRateScheduler needs the optimizer (use it with fit)")
        for group in opt.param_groups:
            group["lr"] = float(self.schedule(epoch, group["lr"]))


def cosine_schedule(lr: float, epochs: int, final: float = 0.01) -> Callable[[int, float], float]:
    """``lr_e = lr (final + (1 - final) (1 + cos(pi e / epochs)) / 2)``: from ``lr`` at epoch 0
    down to ``final * lr`` at the last epoch."""
    def schedule(epoch: int, _: float) -> float:
        return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1))))
    return schedule


SCHEDULES = ("constant", "cosine", "onecycle", "plateau")


def make_schedule(name: str, lr: float, epochs: int, warmup: int = 0
                  ) -> Callable[[int, float], float] | None:
    """The per-epoch learning rate of ``name`` (None: leave it as it is)::

        warm-up (epochs e < w):  lr_e = lr (e + 1) / (w + 1)
        constant:                lr_e = lr
        cosine:                  lr_e = lr (0.01 + 0.99 (1 + cos(pi (e - w) / (E - w))) / 2)
        onecycle:                lr / 25 rising linearly to lr over the first 30% of the
                                 epochs (or the warm-up), then cosine down to lr / 10^4

    ``"plateau"`` is not a function of the epoch: see :class:`ReduceLROnPlateau` (warm-up
    still applies)."""
    if name not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if warmup < 0 or epochs < 1:
        raise ValueError("warm-up epochs must be >= 0 and epochs >= 1")
    if name == "onecycle":
        up = max(1, warmup or math.ceil(0.3 * epochs))

        def onecycle(e: int, _: float) -> float:
            if e < up:
                return lr / 25 + (lr - lr / 25) * e / max(up - 1, 1)
            t = (e - up + 1) / max(epochs - up, 1)
            return lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
        return onecycle
    if name in ("constant", "plateau") and warmup == 0:
        return None

    def schedule(e: int, current: float) -> float:
        if e < warmup:
            return lr * (e + 1) / (warmup + 1)
        if name == "cosine":
            t = (e - warmup) / max(epochs - warmup, 1)
            return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
        return lr if name == "constant" or e == warmup else current
    return schedule


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (Keras semantics), not below ``min_lr``; resumable."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.5, patience: int = 2,
                 min_lr: float = 0.0, mode: str = "auto") -> None:
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.monitor, self.factor, self.patience, self.min_lr = monitor, factor, patience, min_lr
        self.better = _better(monitor, mode)
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or self.optimizer is None:
            return
        if self.best is None or self.better(float(value), self.best):
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            for g in self.optimizer.param_groups:
                g["lr"] = max(self.min_lr, g["lr"] * self.factor)
            self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], int(state["wait"])


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` and every log key) to ``path``, flushed at once,
    so a run can be followed with ``tail -f`` and a crash keeps the finished epochs."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self.keys: list[str] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import csv

        logs = logs or {}
        new = self.keys is None or not self.path.is_file()
        if self.keys is None:
            self.keys = list(logs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a" if not new else "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", *self.keys])
            w.writerow([epoch + 1, *(logs.get(k, "") for k in self.keys)])


class TensorBoardLogger(Callback):
    """Every log value per epoch as a TensorBoard scalar under ``log_dir``
    (``torch.utils.tensorboard``; needs ``pip install tensorboard``)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--log-dir writes TensorBoard logs with the tensorboard package: "
                            "pip install tensorboard") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for k, v in (logs or {}).items():
            self.writer.add_scalar(k, float(v), epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.writer.close()


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch loss is NaN or infinite."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            print(f"Batch {batch}: invalid loss {loss}, terminating training", file=sys.stderr)
            self.stop_training = True


def _fmt(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """Progress per epoch on stderr: a tqdm bar with running loss/metrics when ``stream`` is a
    terminal and ``one_line`` is False, else one line per epoch with the epoch's logs."""

    def __init__(self, one_line: bool | None = None, stream=None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        if one_line is None:
            one_line = not (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.one_line = one_line
        self._bar = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        if not self.one_line:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.params.get("steps"), file=self.stream, leave=True,
                             desc=f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}",
                             unit="batch", dynamic_ncols=True)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(_fmt(logs or {}), refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(_fmt(logs or {}), refresh=True)
            self._bar.close()
            self._bar = None
        else:
            secs = time.perf_counter() - self._start
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')} ({secs:.1f}s) - "
                  f"{_fmt(logs or {})}", file=self.stream, flush=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def stop_and_checkpoint(has_validation: bool, patience: int | None, out: str | os.PathLike | None,
                        save: Callable[[str | os.PathLike], Any]) -> list[Callback]:
    """The usual pair for a task's ``fit``: early stopping on ``val_loss`` (restoring the
    best weights) when ``patience`` is set, and a best-only checkpoint into ``out`` written
    by ``save(model_dir)``; neither without validation data."""
    callbacks: list[Callback] = []
    if not has_validation:
        return callbacks
    if patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=patience,
                                       restore_best_weights=True))
    if out is not None:
        callbacks.append(ModelCheckpoint(out, monitor="val_loss", save_best_only=True,
                                         save_fn=lambda model, d: save(d)))
    return callbacks
