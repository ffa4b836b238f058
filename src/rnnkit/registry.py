"""The registry of serialisable module classes: the one table that maps a saved model's
``"type"`` names to classes (nothing in a model file can name code outside it).

    serialize(module)  -> {"type": <registered name>, "config": module.get_config()}
    deserialize(spec)  -> the registered class rebuilt from its config (fresh weights),
                          every config value type-checked against the constructor's default

Layers register themselves here (``@register_model()``); :mod:`rnnkit.io` reads and writes
model directories on top of it. This module imports nothing else of rnnkit but its errors,
so every layer module can use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .errors import UserError

M = TypeVar("M", bound=type)

#: registered name -> module class
MODEL_REGISTRY: dict[str, type[nn.Module]] = {}


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
    if not isinstance(config, dict):
        raise UserError(f"model type {name!r}: config must be an object, got "
                        f"{type(config).__name__}")
    _check_types(cls, name, config)
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(config)
        return cls(**config)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"cannot rebuild model type {name!r} from its config: {e}") from None


def _check_types(cls: type, name: str, config: dict) -> None:
    """A saved value must have the type of the constructor parameter's default (a bool flag
    stays a bool, a size an int, a rate a number, a name a string): a tampered config with
    ``"return_sequences": -1`` would otherwise build a model of another shape. A constructor
    that passes ``**kwargs`` on (``SimpleRNN`` to ``RNN``) is read with those of the classes
    it inherits from."""
    import inspect

    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params.update(inspect.signature(init).parameters)
        except (TypeError, ValueError):
            continue
    for key, value in config.items():
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty:
            continue
        if not same_kind(p.default, value):
            raise UserError(f"model type {name!r}: {key} must be a "
                            f"{type(p.default).__name__}, got {value!r:.40}")


def same_kind(default: Any, value: Any) -> bool:
    """Whether a value read from a file has the kind of the setting's ``default``: bool,
    int (not bool), number, or str; other defaults, None included, accept anything. The
    one rule for saved model configs and task specs alike."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True
