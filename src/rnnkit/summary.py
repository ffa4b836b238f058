"""Keras-like model summary: one row per layer with its output shape and parameter count.

For a model with layers ``l_1 .. l_n`` (the children of a :class:`rnnkit.layers.Sequential`,
or the direct submodules of any other module)::

    Param #(l_i)   = sum of numel(p) over l_i's parameters (nested modules included)
    Total params   = sum of numel(p) over the model's distinct parameters
    Trainable      = the part with requires_grad; Non-trainable = Total - Trainable

Output shapes come from forward hooks during one dummy batch (eval mode, no gradients),
shown with the batch dimension as ``None``. The dummy batch is ``example`` if given, else
built from ``input_shape`` (``Sequential.dummy_input`` for a Sequential -- token ids when it
starts with an Embedding/OneHot --, else float zeros; a list of shapes for several inputs),
else ``model.input_shape`` for a Sequential built with one. Without any of these the shapes
are shown as ``?`` and lazily-sized layers count 0 parameters (they have none yet).
Running the dummy batch builds lazily-sized layers, as Keras's ``build`` does.

Seed models: ``OneHot(500) -> SimpleRNN(8) -> Dense(1)`` has 0 + 4,072 + 9 = 4,081
parameters; ``Embedding(500, 16) -> SimpleRNN(8) -> Dense(1)`` has 8,000 + 200 + 9 = 8,209.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from .layers import Sequential
from .recurrent import RNN


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def _shape_str(out: Any) -> str:
    if isinstance(out, Tensor):
        return str((None, *tuple(out.shape[1:]))) if out.dim() else "()"
    if isinstance(out, (tuple, list)):
        parts = [_shape_str(o) for o in out]
        return "[" + ", ".join(parts) + "]"
    return type(out).__name__


def _dummy(model: nn.Module, input_shape: Any) -> Any:
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            return None
    shapes = list(input_shape)
    multi = bool(shapes) and all(isinstance(s, (tuple, list)) for s in shapes)
    if isinstance(model, Sequential) and not multi:
        return (model.dummy_input(tuple(shapes)),)
    p = next(model.parameters(), None)
    device = p.device if p is not None else None
    if multi:
        return tuple(torch.zeros((2, *s), device=device) for s in shapes)
    return (torch.zeros((2, *shapes), device=device),)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    children = list(model.named_children())
    if not children:
        return [(type(model).__name__, model)]
    if isinstance(model, Sequential):
        seen: dict[str, int] = {}
        named = []
        for _, layer in children:
            base = _snake(type(layer).__name__)
            k = seen.get(base, 0)
            seen[base] = k + 1
            named.append((base if k == 0 else f"{base}_{k}", layer))
        return named
    return children


def summary(model: nn.Module, input_shape: Any = None, example: Any = None) -> str:
    """The summary table as a string (see the module docstring)."""
    layers = _layers(model)
    outputs: dict[int, Any] = {}
    hooks = []
    inputs = None
    if example is not None:
        inputs = example if isinstance(example, tuple) else (example,)
    else:
        inputs = _dummy(model, input_shape)
    if inputs is not None:
        for i, (_, layer) in enumerate(layers):
            def hook(mod, args, out, i=i):
                outputs.setdefault(i, out)
            hooks.append(layer.register_forward_hook(hook))
        was = model.training
        model.eval()
        # the reference path runs every layer on its own (fused kernels may fold an
        # Embedding into the next RNN, and its hook would not fire)
        rnns = [(m, m.backend) for m in model.modules() if isinstance(m, RNN)]
        for m, _ in rnns:
            m.backend = "reference"
        try:
            with torch.no_grad():
                model(*inputs)
        finally:
            model.train(was)
            for m, backend in rnns:
                m.backend = backend
            for h in hooks:
                h.remove()

    rows = [("Layer (type)", "Output Shape", "Param #")]
    for i, (name, layer) in enumerate(layers):
        n = sum(p.numel() for p in layer.parameters())
        shape = _shape_str(outputs[i]) if i in outputs else "?"
        rows.append((f"{name} ({type(layer).__name__})", shape, f"{n:,}"))
    params = list(model.parameters())  # distinct parameters (shared ones once)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)

    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    w2 = max(len(r[2]) for r in rows)
    width = w0 + w1 + w2
    lines = [f'Model: "{_snake(type(model).__name__)}"', "━" * width]
    for j, (a, b, c) in enumerate(rows):
        lines.append(f"{a:<{w0}}{b:<{w1}}{c:>{w2}}")
        lines.append("━" * width if j == 0 else ("─" * width if j < len(rows) - 1 else
                                                   "━" * width))
    lines += [f" Total params: {total:,}",
              f" Trainable params: {trainable:,}",
              f" Non-trainable params: {total - trainable:,}"]
    return "\n".join(lines)


def print_summary(model: nn.Module, input_shape: Any = None, example: Any = None,
                  file=None) -> None:
    """Print :func:`summary` (to stdout unless ``file`` is given)."""
    print(summary(model, input_shape, example), file=file)


def count_params(model: nn.Module) -> dict[str, int]:
    """``{"total", "trainable", "non_trainable"}`` parameter counts."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
