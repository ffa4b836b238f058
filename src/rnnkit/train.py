"""Training loop: :func:`fit`, :func:`evaluate`, :func:`predict`, losses, metrics, optimizers.

``fit`` minimises the mean loss over mini-batches with a gradient method::

    for epoch in 1..epochs:
        for (inputs, targets) in batches(train, batch_size, shuffled):
            L = mean_i loss(model(*inputs)_i, targets_i)
            g = clip(grad L)                          # clip_value, then global clip_norm
            params <- optimizer_step(params, g)
        logs = {loss, metrics (weighted by batch size over the epoch),
                val_loss, val_metrics (on the validation data, eval mode, no grad)}

Data
    ``x`` is a tensor or a tuple of tensors (the model is called as ``model(*x)``), ``y`` a
    tensor or a tuple (passed to the loss as is); batches are slices along dimension 0.
    ``train_data=`` (or ``x`` with ``y=None``) takes any re-iterable of ``(inputs, targets)``
    batches instead, e.g. a ``torch.utils.data.DataLoader`` -- then ``batch_size``,
    ``shuffle`` and ``validation_split`` do not apply. ``validation_data`` is a *tuple*
    ``(x_val, y_val)`` of tensors, or any other iterable of batches (a list, a DataLoader).
    ``validation_split=f`` holds out the **last** ``f`` of the samples, before shuffling,
    exactly like Keras (``split_at = ceil(n * (1 - f))``), whether or not ``seed`` is given;
    shuffle the data yourself first if the order is meaningful (the dataset loaders offer a
    seeded split).

Losses (``loss=``)
    ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
    ``"sparse_categorical_crossentropy"``, ``"mse"``, ``"mae"``, or a callable
    ``(outputs, targets) -> scalar tensor`` (e.g. a masked per-step loss).
    The models output probabilities. For the cross-entropies, when the last layer is an
    :class:`rnnkit.layers.Dense` with the matching activation (sigmoid / softmax) -- the
    model is a ``Dense``, a ``Sequential`` ending in one, or has an ``output_layer``
    attribute holding the Dense that produced its output -- the loss is computed from that
    layer's logits (``log-sigmoid`` / ``log-softmax``: exact and stable, as Keras does on
    TensorFlow). A model whose class declares ``outputs = "logits"`` returns logits: the
    cross-entropies take them as such, and the metrics see the sigmoid / softmax of them.
    Otherwise probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the log (Keras); an
    output outside ``[0, 1]`` is refused with an error naming the fix, never clipped
    silently. The same function is used in training and in :func:`evaluate`, so the
    reported train and validation losses agree for identical weights (no dropout).
    Binary targets of shape ``(batch,)`` are matched to outputs ``(batch, 1)``.

Metrics (``metrics=``)
    Names: ``"accuracy"`` (binary -- ``p > 0.5`` --, categorical -- argmax -- or sparse,
    chosen from the loss, else from the shapes like Keras), ``"mse"``, ``"mae"``; or a dict
    ``name -> (outputs, targets) -> tensor``. Epoch values are means over batches weighted
    by batch size (the size of dimension 0 of the first input).

Optimizers (``optimizer=``, ``lr=``)
    ``"rmsprop"`` and ``"adam"`` implement Keras 3's update rules and defaults exactly
    (tested against Keras): RMSprop ``v <- rho v + (1-rho) g^2``,
    ``w <- w - lr g / sqrt(v + eps)`` with ``rho=0.9, eps=1e-7`` (torch's RMSprop uses
    ``alpha=0.99`` and ``eps=1e-8`` *outside* the square root); Adam
    ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)`` with ``eps=1e-7`` (torch: eps
    added to the bias-corrected ``sqrt(v_hat)``, 1e-8). ``"sgd"`` is plain SGD. Also
    accepted: a ``torch.optim.Optimizer`` instance or a factory ``params -> Optimizer``.
    Lazily-sized layers are built (one batch through the model, no grad) before the
    optimizer is created.

:data:`RECOMMENDED` holds rnnkit's recommended settings for the sentiment models (used by
the CLI and the docs); the seed recipe is RMSprop at 1e-4.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .callbacks import Callback, History, ProgressBar
from .errors import UserError
from .layers import FAST_PATHS, Dense, Sequential, clip_gradients
from .losses import (  # noqa: F401 - re-exported: rnnkit.train is where users find them
    LOGIT_ACTIVATION,
    LOSSES,
    LossFn,
    MetricFn,
    binary_accuracy,
    binary_crossentropy,
    categorical_accuracy,
    categorical_crossentropy,
    check_output,
    mae,
    mse,
    resolve_metrics,
    sparse_categorical_accuracy,
    sparse_categorical_crossentropy,
)
from .optimizers import OPTIMIZERS, Adam, RMSprop, make_optimizer  # noqa: F401 - re-exported


class Resumable(Protocol):
    """What ``fit(backup=...)`` needs (:class:`rnnkit.backup.Backup` is one): ``restore``
    loads a saved state into the live objects and returns the finished epochs (``stopped``
    then says whether training had already ended there); ``save`` records the state after
    ``epochs_done`` epochs. The training loop depends on this interface only."""

    stopped: bool

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer,
                generator: torch.Generator, data: Any, callbacks: Sequence[Any]) -> int: ...

    def save(self, epochs_done: int, model: nn.Module, opt: torch.optim.Optimizer,
             generator: torch.Generator, data: Any, callbacks: Sequence[Any],
             stopped: bool = False) -> None: ...

#: rnnkit's recommended optimizer settings for the IMDB-style sentiment models: the seed
#: model Embedding(500,16) -> SimpleRNN(8) -> Dense(1) passes 0.70 validation accuracy on
#: the 5,000-review Keras subset in about 3 epochs (tests/test_train.py); measured: Adam at
#: 1e-2 (batch 64) and 3e-3 (batch 32) got there too but then oscillated, RMSprop 1e-3 did not.
RECOMMENDED: dict[str, Any] = {"optimizer": "rmsprop", "lr": 1e-3, "batch_size": 32}

#: the seed's recipe (Keras book defaults)
SEED_RECIPE: dict[str, Any] = {"optimizer": "rmsprop", "lr": 1e-4, "batch_size": 64}



# optimizers (rnnkit.optimizers) and losses/metrics (rnnkit.losses) live in their own
# modules; they are re-exported here, where fit's callers have always found them

class _Objective:
    """The loss as used by fit and evaluate (identical in both), with the logits tap."""

    def __init__(self, model: nn.Module, loss: str | LossFn):
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, "
                                 f"got {loss!r}")
            self.name = loss
            self.fn: Callable[..., Tensor] = LOSSES[loss]
        elif callable(loss):
            self.name, self.fn = "custom", loss
        else:
            raise TypeError(f"loss must be a name or a callable, got {loss!r}")
        self.head = None
        act = LOGIT_ACTIVATION.get(self.name)
        #: the model says it returns logits (class attribute ``outputs = "logits"``): the
        #: cross-entropies take them as logits, the metrics see probabilities
        self.from_logits = act is not None and getattr(model, "outputs", None) == "logits"
        self.act = act
        head = _output_dense(model)
        if act is not None and head is not None and head.activation == act:
            self.head = head
        self._inp: Tensor | None = None
        self._out: Tensor | None = None

    def __enter__(self) -> _Objective:
        self._hook = None
        if self.head is not None:
            def hook(mod, args, output):
                self._inp, self._out = args[0], output
            self._hook = self.head.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._inp = self._out = None

    def probabilities(self, outputs: Any) -> Any:
        """What the metrics see: probabilities (``outputs`` unless the model returns logits)."""
        if not self.from_logits or not isinstance(outputs, Tensor):
            return outputs
        return torch.sigmoid(outputs) if self.act == "sigmoid" else torch.softmax(outputs, -1)

    def __call__(self, outputs: Any, targets: Any) -> Tensor:
        if self.name == "custom":
            return self.fn(outputs, targets)
        out = check_output(outputs, self.name)
        logits = None
        if self.from_logits:
            logits, out = out, self.probabilities(out)
        elif self.head is not None and self._out is not None and self._out is out:
            logits = self.head.logits(self._inp)
        elif self.act is not None and out.numel():
            lo, hi = (float(v) for v in torch.aminmax(out.detach()))
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"loss {self.name!r} needs probabilities, but the model's outputs lie in "
                    f"[{lo:.3g}, {hi:.3g}]: it returns logits. Declare it (class attribute "
                    "outputs = 'logits') so the loss applies the "
                    f"{self.act} itself, or end the model with a {self.act} Dense")
        loss = self.fn(out, targets, logits)
        self._inp = self._out = None
        return loss


def _output_dense(model: nn.Module) -> Dense | None:
    m: Any = model
    for _ in range(8):
        if isinstance(m, Dense):
            return m
        if isinstance(m, Sequential) and len(m):
            m = m[-1]
        elif isinstance(getattr(m, "output_layer", None), nn.Module):
            m = m.output_layer
        else:
            return None
    return None


# -- data -------------------------------------------------------------------------------------
def _is_tensor_tuple(x: Any) -> bool:
    return isinstance(x, Tensor) or (isinstance(x, tuple) and len(x) > 0
                                     and all(isinstance(t, Tensor) for t in x))


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _to_tensor(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, tuple):
        return tuple(_to_tensor(t) for t in x)
    return x


def _num_samples(*parts: Any) -> int:
    sizes = {t.shape[0] for p in parts if p is not None for t in _as_tuple(p)}
    if len(sizes) != 1:
        raise ValueError(f"inputs and targets must have the same number of samples "
                         f"(dimension 0), got sizes {sorted(sizes)}")
    return sizes.pop()


def _index(x: Any, idx: Tensor | slice) -> Any:
    if isinstance(x, tuple):
        return tuple(t[idx] for t in x)
    return x[idx]


class _TensorBatches:
    """Re-iterable mini-batches of (inputs, targets) sliced along dimension 0."""

    def __init__(self, x: Any, y: Any, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None):
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.x, self.y, self.bs, self.shuffle, self.gen = x, y, batch_size, shuffle, generator
        self.n = _num_samples(x, y)
        if self.n == 0:
            raise ValueError("no samples to iterate over (empty data)")

    def __len__(self) -> int:
        return math.ceil(self.n / self.bs)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = torch.randperm(self.n, generator=self.gen) if self.shuffle else None
        for s in range(0, self.n, self.bs):
            idx = order[s:s + self.bs] if order is not None else slice(s, s + self.bs)
            yield _index(self.x, idx), (None if self.y is None else _index(self.y, idx))


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _batch_size_of(inputs: Any) -> int:
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    for t in inputs:
        if isinstance(t, Tensor):
            return int(t.shape[0]) if t.dim() else 1
    return 1


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError("each batch must be a pair (inputs, targets); got "
                     f"{type(batch).__name__}" + (f" of length {len(batch)}"
                                                  if isinstance(batch, (tuple, list)) else ""))


def _batches_from(x: Any, y: Any, batch_size: int, who: str) -> Iterable:
    """Tensors -> _TensorBatches; an iterable of batches as is."""
    x = _to_tensor(x)
    if _is_tensor_tuple(x):
        if y is None:
            raise ValueError(f"{who}: targets y are required with tensor inputs")
        return _TensorBatches(x, _to_tensor(y), batch_size)
    if y is not None:
        raise ValueError(f"{who}: y must be None when x is an iterable of (inputs, targets) "
                         "batches")
    if not isinstance(x, Iterable):
        raise TypeError(f"{who}: expected tensors or an iterable of batches, got "
                        f"{type(x).__name__}")
    return x


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _needs_build(model: nn.Module) -> bool:
    from torch.nn.modules.lazy import LazyModuleMixin

    for m in model.modules():
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
            return True
        if hasattr(m, "build") and hasattr(m, "input_size") and m.input_size is None:
            return True
    return False


# -- evaluation -------------------------------------------------------------------------------
class _Mean:
    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float, n: int) -> None:
        self.total += value * n
        self.count += n

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


@torch.no_grad()
def _run_eval(model: nn.Module, batches: Iterable, objective: _Objective,
              metric_fns: dict[str, MetricFn], device: torch.device) -> dict[str, float]:
    was = model.training
    model.eval()
    means = {"loss": _Mean(), **{k: _Mean() for k in metric_fns}}
    try:
        with objective:
            for batch in batches:
                inputs, targets = _split_batch(batch)
                inputs, targets = _move(inputs, device), _move(targets, device)
                n = _batch_size_of(inputs)
                outputs = _call(model, inputs)
                means["loss"].add(float(objective(outputs, targets)), n)
                probs = objective.probabilities(outputs)
                for k, fn in metric_fns.items():
                    means[k].add(float(fn(probs, targets)), n)
    finally:
        model.train(was)
    if means["loss"].count == 0:
        raise ValueError("no batches to evaluate (empty data or an exhausted iterator)")
    return {k: m.value for k, m in means.items()}


def evaluate(model: nn.Module, x: Any, y: Any = None, *,
             loss: str | LossFn = "binary_crossentropy",
             metrics: Sequence[str] | Mapping[str, MetricFn] | None = ("accuracy",),
             batch_size: int = 32, device: str | torch.device | None = None
             ) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``(x, y)`` (or an iterable of batches in ``x``), in
    eval mode without gradients: ``{"loss": ..., "accuracy": ...}`` (sample-weighted means)."""
    device = torch.device(device) if device is not None else model_device(model)
    batches = _batches_from(x, y, batch_size, "evaluate")
    return _run_eval(model, batches, _Objective(model, loss), resolve_metrics(metrics, loss),
                     device)


@torch.no_grad()
def predict(model: nn.Module, x: Any, batch_size: int = 32,
            device: str | torch.device | None = None) -> Any:
    """Model outputs for ``x`` (a tensor, a tuple of tensors, or an iterable of input
    batches), batched, in eval mode, without gradients; concatenated along dimension 0 on
    the CPU. Tuple outputs give a tuple of concatenated tensors.

    For tensor inputs each batch's output is copied into one tensor allocated after the
    first batch, not kept in a list of small tensors: those stay alive between the large
    per-batch buffers a layer allocates and frees, and kept glibc's heap from being reused
    (the W2 LSTM(32) row's peak RSS moved between 338 and 599 MB; docs/benchmarks.md)."""
    device = torch.device(device) if device is not None else model_device(model)
    x = _to_tensor(x)
    batches: Iterable = (b for b, _ in _TensorBatches(x, None, batch_size)) \
        if _is_tensor_tuple(x) else x
    was = model.training
    model.eval()
    outs: list[Any] = []
    try:
        whole = FAST_PATHS.get("forward_no_grad")
        if isinstance(x, Tensor) and device.type == "cpu" and whole is not None:
            # the IMDB shape: one call for all sequences (they are independent, so the
            # batch size does not change the result)
            fused = whole(model, x, None)
            if fused is not None:
                return fused
        total = _num_samples(x) if _is_tensor_tuple(x) else None
        buf: Tensor | None = None  # all outputs, when they are tensors of one shape
        filled = 0
        for inputs in batches:
            o = _move(_call(model, _move(inputs, device)), torch.device("cpu"))
            if buf is None and not outs and total is not None and isinstance(o, Tensor) \
                    and o.dim() > 0:
                buf = torch.empty((total, *o.shape[1:]), dtype=o.dtype)
            if buf is not None and isinstance(o, Tensor) and o.dim() > 0 \
                    and o.shape[1:] == buf.shape[1:] and o.dtype == buf.dtype \
                    and filled + len(o) <= total:
                buf[filled:filled + len(o)] = o
                filled += len(o)
                continue
            if buf is not None:  # an output of another shape: back to a list
                outs.append(buf[:filled])
                buf = None
            outs.append(o)
        if buf is not None:
            return buf[:filled]
    finally:
        model.train(was)
    if not outs:
        raise ValueError("predict: no input batches")
    if isinstance(outs[0], Tensor):
        return torch.cat(outs, dim=0)
    return tuple(torch.cat([o[i] for o in outs], dim=0) for i in range(len(outs[0])))


# -- fit --------------------------------------------------------------------------------------
#: full batches per compiled call when fit runs spans of batches (:func:`_fused_epoch`)
SPAN_BATCHES = 64


def _spans_allowed(data: Iterable, cbs: Sequence[Callback]) -> bool:
    """Whether fit may train spans of batches per call: tensor data batched by fit itself,
    and no callback that acts on single batches except the progress bar (which only shows
    them, and is told after each span)."""
    def observer(c: Callback) -> bool:
        return type(c) is ProgressBar or (
            type(c).on_batch_begin is Callback.on_batch_begin
            and type(c).on_batch_end is Callback.on_batch_end)
    return (type(data) is _TensorBatches and isinstance(data.x, Tensor)
            and isinstance(data.y, Tensor) and all(observer(c) for c in cbs))


def _batch_done(b: int, loss_value: float, outputs: Any, targets: Any, n: int,
                cbs: Sequence[Callback], means: dict, metric_fns: dict[str, MetricFn]) -> None:
    """Adds trained batch ``b`` (``n`` samples) to the epoch's running means and tells the
    callbacks (``on_batch_end`` with those means)."""
    means["loss"].add(loss_value, n)
    with torch.no_grad():
        for k, fn in metric_fns.items():
            means[k].add(float(fn(outputs, targets)), n)
    blogs = {k: m.value for k, m in means.items()}
    for c in cbs:
        c.on_batch_end(b, blogs)


def _fused_epoch(step, data: _TensorBatches, arrays: tuple, cbs: Sequence[Callback],
                 means: dict, metric_fns: dict[str, MetricFn], stop: Callable[[], bool]) -> int:
    """One epoch of the fused classifier step (``rnnkit.planner.TrainStep``): the full
    batches in spans of :data:`SPAN_BATCHES` per compiled call, a last partial batch on its
    own; the same batches in the same order (the same shuffle) as the per-batch loop. The
    callbacks hear of each batch after its span. Returns the number of batches."""
    idn, yb = arrays
    n, bs = data.n, data.bs
    order = torch.randperm(n, generator=data.gen) if data.shuffle else torch.arange(n)
    full, total = n // bs, len(data)
    b = 0
    while b < total:
        # a span of full batches, or the partial last batch alone (a span of one)
        b1, size = (min(full, b + SPAN_BATCHES), bs) if b < full else (b + 1, n - b * bs)
        rest = order[b * bs:]
        losses, outs = step.run_span(idn, yb, rest.numpy(), b1 - b, size)
        for j in range(b, b1):
            for c in cbs:
                c.on_batch_begin(j, {})
            rows = slice((j - b) * size, (j - b + 1) * size)
            targets = data.y[rest[rows]] if metric_fns else None
            _batch_done(j, float(losses[j - b]), outs[rows], targets, size, cbs, means,
                        metric_fns)
        b = b1
        if stop():
            break
    return b


@dataclass(frozen=True)
class TrainingOptions:
    """Run-wide training settings that every ``fit`` call inside :func:`training_options`
    applies, whichever task calls it (the CLI sets them from ``--lr-schedule``,
    ``--warmup-epochs``, ``--precision``, ``--log-dir`` and ``--device`` in one place).

    ``lr_schedule``: see :func:`rnnkit.callbacks.make_schedule` and
    :class:`~rnnkit.callbacks.ReduceLROnPlateau`; with any schedule the epoch's rate is
    logged as ``lr``. ``precision="bf16"``: forward pass and loss under
    ``torch.autocast(dtype=bfloat16)`` (the fused step and the compiled kernels compute in float32;
    ``history.params["precision"]`` says so). ``log_dir``: a CSV of the epochs, TensorBoard
    scalars (when the ``tensorboard`` package is installed) and ``history.png`` redrawn each
    epoch. ``device``: train there; the model is moved back to the CPU afterwards, so the
    task's evaluation and saving run as usual."""

    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    precision: str = "32"
    log_dir: str | None = None
    device: str | None = None


_OPTIONS: contextvars.ContextVar[TrainingOptions | None] = contextvars.ContextVar(
    "rnnkit_training_options", default=None)


@contextlib.contextmanager
def training_options(**kwargs: Any) -> Iterator[TrainingOptions]:
    """Apply :class:`TrainingOptions` to every ``fit`` in the block."""
    opts = TrainingOptions(**kwargs)
    if opts.precision not in ("32", "bf16"):
        raise ValueError(f"precision must be '32' or 'bf16', got {opts.precision!r}")
    token = _OPTIONS.set(opts)
    try:
        yield opts
    finally:
        _OPTIONS.reset(token)


def resolve_device(name: str | None) -> torch.device | None:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without CUDA: UserError."""
    if name is None:
        return None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this torch has no CUDA device "
                        "(torch.cuda.is_available() is False); use --device cpu or auto")
    return torch.device(name)


def _option_callbacks(opts: TrainingOptions, lr: float, epochs: int,
                      given: Sequence[Callback]) -> list[Callback]:
    """The callbacks the run-wide options add (schedule, loggers), none already given."""
    from .callbacks import (
        CSVLogger,
        LearningRateScheduler,
        ReduceLROnPlateau,
        TensorBoardLogger,
        make_schedule,
    )

    out: list[Callback] = []
    if not any(isinstance(c, LearningRateScheduler) for c in given):
        sched = make_schedule(opts.lr_schedule, lr, max(epochs, 1), opts.warmup_epochs)
        if sched is not None:
            out.append(LearningRateScheduler(sched))
    if opts.lr_schedule == "plateau" and not any(isinstance(c, ReduceLROnPlateau)
                                                 for c in given):
        out.append(ReduceLROnPlateau(min_lr=lr / 1000))
    if opts.log_dir is not None and distributed.world()[0] == 0:
        from .plots import HistoryPlot

        out.append(CSVLogger(Path(opts.log_dir) / "history.csv"))
        out.append(HistoryPlot(Path(opts.log_dir) / "history.png"))
        try:
            out.append(TensorBoardLogger(opts.log_dir))
        except UserError:
            pass  # no tensorboard package: the CSV and the PNG still come
    return out


def fit(model: nn.Module, x: Any = None, y: Any = None, *,
        train_data: Iterable | None = None,
        validation_data: Any = None, validation_split: float = 0.0,
        loss: str | LossFn = "binary_crossentropy",
        metrics: Sequence[str] | Mapping[str, MetricFn] | None = ("accuracy",),
        optimizer: str | torch.optim.Optimizer | Callable = "rmsprop", lr: float = 1e-3,
        batch_size: int = 32, epochs: int = 1, callbacks: Sequence[Callback] = (),
        seed: int | None = None, shuffle: bool = True, clip_norm: float | None = None,
        clip_value: float | None = None, verbose: int = 1,
        device: str | torch.device | None = None, backup: Resumable | None = None
        ) -> History:
    """Train ``model`` (see the module docstring for data, losses, metrics and optimizers).

    ``seed`` seeds Python, NumPy and torch (dropout, shuffling) at the start, so the same
    seed, model initialisation and data give the same history. ``verbose``: 0 silent, 1 a
    progress bar on a terminal (one line per epoch otherwise), 2 one line per epoch; all
    progress goes to stderr. Returns the :class:`History` (the one in ``callbacks`` if
    given). The model is left in eval mode.

    ``backup``: a :class:`rnnkit.backup.Backup`; the whole training state is saved there
    after every epoch and, when it holds a state, restored before the first epoch, so an
    interrupted run resumes where it stopped (see :mod:`rnnkit.backup`).

    A non-finite epoch loss stops training: the callbacks' ``on_train_end`` still runs (so
    EarlyStopping restores its best weights), then :class:`TrainingDiverged` is raised.
    """
    opts = _OPTIONS.get() or TrainingOptions()
    moved_from: torch.device | None = None
    if device is None and opts.device is not None:
        target = resolve_device(opts.device)
        if target is not None and target != model_device(model):
            moved_from, device = model_device(model), str(target)
    if seed is not None:
        seed_everything(seed)
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    dev = torch.device(device) if device is not None else model_device(model)
    if device is not None:
        model.to(dev)

    # training and validation batches
    if train_data is not None and x is not None:
        raise ValueError("give either x (and y) or train_data, not both")
    x = _to_tensor(x)
    if train_data is None and x is not None and not _is_tensor_tuple(x):
        train_data, x = x, None
        if y is not None:
            raise ValueError("y must be None when x is an iterable of (inputs, targets) batches")
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None
                    else int(torch.randint(0, 2**62, (1,)).item()))
    if train_data is not None:
        if validation_split:
            raise ValueError("validation_split needs tensor data; with train_data give "
                             "validation_data")
        train_batches: Iterable = train_data
    else:
        if x is None:
            raise ValueError("fit needs training data: x and y, or train_data")
        if y is None:
            raise ValueError("fit: targets y are required with tensor inputs")
        y = _to_tensor(y)
        n = _num_samples(x, y)
        if validation_split:
            if validation_data is not None:
                raise ValueError("give either validation_data or validation_split, not both")
            split_at = int(math.ceil(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"validation_split={validation_split} of {n} samples leaves "
                                 "an empty training or validation set")
            validation_data = (_index(x, slice(split_at, None)), _index(y, slice(split_at, None)))
            x, y = _index(x, slice(0, split_at)), _index(y, slice(0, split_at))
        train_batches = _TensorBatches(x, y, batch_size, shuffle=shuffle, generator=gen)
    val_batches: Iterable | None = None
    if validation_data is not None:
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            val_batches = _TensorBatches(_to_tensor(validation_data[0]),
                                         _to_tensor(validation_data[1]), batch_size)
        else:
            val_batches = validation_data

    # build lazily-sized layers, then the optimizer
    if _needs_build(model):
        if isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError("the model has layers without weights yet (input_size=None); "
                             "build it first (e.g. Sequential(..., input_shape=...)) or pass "
                             "the optimizer as a name or a factory")
        first = next(iter(train_batches), None)
        if first is None:
            raise ValueError("fit: train_data yielded no batches")
        with torch.no_grad():
            was = model.training
            model.eval()
            _call(model, _move(_split_batch(first)[0], dev))
            model.train(was)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    objective = _Objective(model, loss)
    # the IMDB shape (Embedding|OneHot -> RNN -> Dense) trains in one compiled call per batch
    from .planner import plan

    planned = plan(model, objective.name, opt, clip_norm, clip_value, dev)
    fused, why_not = (None, planned) if isinstance(planned, str) else (planned, None)
    metric_fns = resolve_metrics(metrics, loss)
    # data parallelism (torchrun): the model behind DistributedDataParallel, each rank on
    # its rows of every batch (rnnkit.distributed); the fused step is not used then
    rank, world_size = distributed.world()
    parallel = distributed.data_parallel(model)
    if parallel is not None:
        fused = None
        verbose = verbose if rank == 0 else 0
    forward_model = parallel if parallel is not None else model

    # callbacks (the run-wide options' first, so History and the given ones see their keys)
    extra = _option_callbacks(opts, lr, epochs, callbacks)
    log_lr = opts.lr_schedule != "constant" or opts.warmup_epochs > 0
    bf16 = opts.precision == "bf16"
    cbs = [*extra, *callbacks]
    history = next((c for c in cbs if isinstance(c, History)), None)
    if history is None:  # after the given callbacks, so it records the keys they add
        history = History()
        cbs.append(history)
    if verbose and not any(isinstance(c, ProgressBar) for c in cbs):
        cbs.append(ProgressBar(one_line=True if verbose == 2 else None))
    try:
        steps: int | None = len(train_batches)  # type: ignore[arg-type]
    except TypeError:  # a plain iterable, or a DataLoader over an IterableDataset
        steps = None
    spans = fused is not None and _spans_allowed(train_batches, cbs)
    params = {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size,
              "fused_step": fused is not None,
              "batches_per_call": SPAN_BATCHES if spans else 1}
    if fused is None:  # one line saying why the fused training step did not apply
        params["fused_step_why_not"] = ("data parallelism (torchrun)" if parallel is not None
                                        else why_not)
    if bf16:
        params["precision"] = ("bf16 autocast" + (": the fused step and the compiled kernels "
                                                  "compute in float32" if fused is not None
                                                  else " (the compiled kernels compute in "
                                                  "float32)"))
    if parallel is not None:
        params["distributed"] = {
            "world_size": world_size, "rank": rank, "backend": distributed.backend(),
            "path": "DistributedDataParallel over the per-layer kernels (the fused training "
                    "step does not run data-parallel)"}
    for c in cbs:
        c.set_model(model)
        c.set_params(params)
        c.optimizer = opt
        c.stop_training = False
    history.params = params

    def stop() -> bool:
        return any(c.stop_training for c in cbs)

    # with the fused step and callbacks that allow it, many batches per compiled call
    span_data = fused.prepare(train_batches.x, train_batches.y) if spans else None
    for c in cbs:
        c.on_train_begin({})
    start = backup.restore(model, opt, gen, train_batches, cbs) if backup is not None else 0
    if backup is not None and backup.stopped:
        start = epochs  # the interrupted run had already stopped early: nothing to train
    diverged: tuple[int, float] | None = None
    try:
        for epoch in range(start, epochs):
            for c in cbs:
                c.on_epoch_begin(epoch, {})
            model.train()
            means = {"loss": _Mean(), **{k: _Mean() for k in metric_fns}}
            n_batches = 0
            if span_data is not None:
                n_batches = _fused_epoch(fused, train_batches, span_data, cbs, means,
                                         metric_fns, stop)
            else:
                with objective:
                    for b, batch in enumerate(train_batches):
                        for c in cbs:
                            c.on_batch_begin(b, {})
                        inputs, targets = _split_batch(batch)
                        inputs, targets = _move(inputs, dev), _move(targets, dev)
                        if parallel is not None:
                            inputs, targets = distributed.shard(inputs, targets)
                        n = _batch_size_of(inputs)
                        if fused is not None and isinstance(inputs, Tensor):
                            loss_value, outputs = fused(inputs, targets)
                        else:
                            opt.zero_grad(set_to_none=True)
                            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                                outputs = _call(forward_model, inputs)
                                batch_loss = objective(outputs, targets)
                            if batch_loss.dim() != 0:
                                raise ValueError("the loss must be a scalar tensor, got shape "
                                                 f"{tuple(batch_loss.shape)}")
                            batch_loss.backward()
                            if clip_norm is not None or clip_value is not None:
                                clip_gradients(model.parameters(), clip_norm, clip_value)
                            opt.step()
                            loss_value = float(batch_loss.detach())
                        n_batches += 1
                        _batch_done(b, loss_value, objective.probabilities(outputs), targets,
                                    n, cbs, means, metric_fns)
                        if stop():
                            break
            if n_batches == 0:
                raise ValueError(f"train_data yielded no batches in epoch {epoch + 1}; pass a "
                                 "re-iterable (a list or a DataLoader), not a one-shot iterator")
            if parallel is not None:  # every rank's samples, weighted by their number
                logs = distributed.reduce_means({k: (m.total, m.count)
                                                 for k, m in means.items()})
            else:
                logs = {k: m.value for k, m in means.items()}
            if val_batches is not None:
                vals = _run_eval(model, val_batches, objective, metric_fns, dev)
                logs.update({f"val_{k}": v for k, v in vals.items()})
            if log_lr:
                logs["lr"] = float(opt.param_groups[0]["lr"])
            if not math.isfinite(logs["loss"]):
                diverged = (epoch, logs["loss"])
            for c in cbs:
                c.on_epoch_end(epoch, logs)
            if diverged:
                break
            if backup is not None:
                backup.save(epoch + 1, model, opt, gen, train_batches, cbs, stopped=stop())
            if stop():
                break
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)  # the last batch's gradients are spent: free them
        if moved_from is not None:  # trained on --device: the task goes on on the CPU
            model.to(moved_from)
    for c in cbs:
        c.on_train_end({})
        c.optimizer = None  # the returned History must not keep the optimizer's state alive
    if diverged:
        raise TrainingDiverged(diverged[0], diverged[1])
    return history


class TrainingDiverged(UserError):
    """Training stopped because an epoch's loss was NaN or infinite (``epoch`` counts from
    0). The model holds the best weights an EarlyStopping callback kept, if any."""

    def __init__(self, epoch: int, loss: float) -> None:
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training diverged: the loss became {loss} in epoch {epoch + 1} "
                         "and training stopped; try a lower --lr or --clip-norm")
