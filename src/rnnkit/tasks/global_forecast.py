"""Many series, one model: a global forecaster over all series of a file (M-competition
style), each window scaled on its own.

Data: :func:`read_tsf` reads the Monash ``.tsf`` format (``@`` header lines, among them
``@frequency`` and ``@horizon``; then one series per line, ``name:start:v1,v2,...``).

Windows: every series contributes the windows ``(x = y[t-L:t], target = y[t:t+H])`` of its
training part. Each window is put on its own scale, so series of different sizes share one
model::

    level = x[-1],  scale = mean|x - mean(x)| + mean|x| / 100 + 1e-8
    input = (x - level) / scale,  output = (target - level) / scale

The model is :class:`rnnkit.tasks.forecast.ForecastModel` (an RNN then a Dense of H
outputs). Evaluation holds out the last H values of every series (the competition split)
and averages, over series, the MASE (scale: in-sample MAE of the naive forecast, lag 1) and
the sMAPE of the model, the naive forecast and the drift forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..metrics import smape
from ._atfile import read_at_file
from .forecast import ForecastModel, drift_forecast, naive_forecast

MAX_SERIES = 1_000_000


@dataclass
class SeriesCollection:
    """Named univariate series of one file, with the file's frequency and horizon."""

    names: list[str]
    values: list[np.ndarray]
    frequency: str | None
    horizon: int | None
    source: str


def read_tsf(path: str | Path) -> SeriesCollection:
    """Read a ``.tsf`` file; a missing value (``?``), a non-number, an empty series or a
    line without ``name:start:values`` is a one-line error naming the line."""
    path = Path(path)
    header, records = read_at_file(path)
    names: list[str] = []
    values: list[np.ndarray] = []
    freq, horizon, attrs = None, None, 0
    for n, key, value in header:
        if key == "attribute":
            attrs += 1
        elif key == "frequency":
            freq = value
        elif key == "horizon":
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"{path}:{n}: @horizon must be a positive integer")
            horizon = int(value)
    for n, line in records:
        parts = line.split(":")
        if len(parts) < attrs + 1 or attrs < 1:
            raise UserError(f"{path}:{n}: expected {attrs} attribute(s) then the values, "
                            "separated by ':'")
        cells = ":".join(parts[attrs:]).split(",")
        try:
            v = np.asarray([float(c) for c in cells], np.float64)
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise UserError(f"{path}:{n}: {bad.strip()[:20]!r} is not a number (missing "
                            "values are not supported)") from None
        if v.size == 0 or not np.isfinite(v).all():
            raise UserError(f"{path}:{n}: the series has no values or a non-finite one")
        names.append(parts[0].strip())
        values.append(v)
        if len(values) > MAX_SERIES:
            raise UserError(f"{path}: more than {MAX_SERIES} series")
    if not values:
        raise UserError(f"{path}: no series after @data")
    return SeriesCollection(names, values, freq, horizon, path.name)


def read_long_csv(path: str | Path, id_col: str, value_col: str | None = None
                  ) -> SeriesCollection:
    """Many series in one CSV, long format: an ``id_col`` column naming the series (its
    rows consecutive, in time order) and one value column (``value_col``, else the only
    column besides the id and a time column such as ``ds``/``date``)."""
    import csv

    from .forecast import DATE_NAMES

    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise UserError(f"{path}: malformed CSV ({e})") from None
    if len(rows) < 2:
        raise UserError(f"{path}: needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if id_col not in header:
        raise UserError(f"{path}: no id column {id_col!r} (columns: {', '.join(header)})")
    idi = header.index(id_col)
    if value_col is None:
        rest = [h for h in header if h != id_col and h.lower() not in DATE_NAMES]
        if len(rest) != 1:
            raise UserError(f"{path}: say which column holds the values (--value-cols); "
                            f"candidates: {', '.join(rest)}")
        value_col = rest[0]
    if value_col not in header:
        raise UserError(f"{path}: no value column {value_col!r}")
    vi = header.index(value_col)
    names: list[str] = []
    values: list[list[float]] = []
    for n, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        sid = row[idi].strip()
        if not names or names[-1] != sid:
            if sid in names:
                raise UserError(f"{path}:{n}: rows of series {sid!r} are not consecutive")
            names.append(sid)
            values.append([])
        try:
            v = float(row[vi])
        except ValueError:
            raise UserError(f"{path}:{n}: {row[vi][:20]!r} is not a number") from None
        if not math.isfinite(v):
            raise UserError(f"{path}:{n}: {row[vi][:20]!r} is not a finite number")
        values[-1].append(v)
    if not names:
        raise UserError(f"{path}: no data rows")
    return SeriesCollection(names, [np.asarray(v) for v in values], None, None, path.name)


def read_collection(path: str | Path, id_col: str | None = None,
                    value_col: str | None = None) -> SeriesCollection:
    """:func:`read_tsf` for ``.tsf`` files, else :func:`read_long_csv`."""
    if Path(path).suffix.lower() == ".tsf":
        return read_tsf(path)
    if id_col is None:
        raise UserError(f"{path}: many series in a CSV need --id-col")
    return read_long_csv(path, id_col, value_col)


def _is_number(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def _scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window (rows of ``x``): the level (last value) and the scale of the module doc."""
    level = x[:, -1]
    dev = np.abs(x - x.mean(1, keepdims=True)).mean(1)
    scale = dev + np.abs(x).mean(1) / 100 + 1e-8
    return level, scale


def _scaled(v: np.ndarray, level: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """``(v - level) / scale`` per window (rows), as ``(N, steps, 1)`` float32."""
    return torch.from_numpy(((v - level[:, None]) / scale[:, None])[:, :, None]
                            .astype(np.float32))


def windows(series: list[np.ndarray], lookback: int, horizon: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """All ``(x (N, L), target (N, H))`` windows of the series (stride 1)."""
    xs, ys = [], []
    for s in series:
        for t in range(lookback, len(s) - horizon + 1):
            xs.append(s[t - lookback:t])
            ys.append(s[t:t + horizon])
    if not xs:
        raise UserError(f"no series is long enough for lookback {lookback} + horizon "
                        f"{horizon}")
    return np.asarray(xs), np.asarray(ys)


TASK = "forecast_global"


class GlobalForecaster:
    """One :class:`ForecastModel` for every series (see the module docstring)."""

    def __init__(self, model: ForecastModel, lookback: int, horizon: int) -> None:
        self.model, self.lookback, self.horizon = model, lookback, horizon

    def save(self, model_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        from .. import io

        return io.save_model(model_dir, self.model, task=TASK, extra={
            "lookback": self.lookback, "horizon": self.horizon, **(extra or {})})

    @classmethod
    def load(cls, model_dir: str | Path) -> GlobalForecaster:
        from .. import io

        model, cfg = io.load_model(model_dir)
        lb, h = cfg.get("lookback"), cfg.get("horizon")
        ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100_000
                 for v in (lb, h))
        if cfg.get("task") != TASK or not isinstance(model, ForecastModel) or not ok \
                or model.cfg["horizon"] != h or model.cfg["features"] != 1:
            raise UserError(f"{model_dir} is not a many-series forecaster (task "
                            f"{cfg.get('task')!r})")
        return cls(model, lb, h)

    @classmethod
    def create(cls, lookback: int, horizon: int, units: int = 32, cell: str = "lstm"
               ) -> GlobalForecaster:
        return cls(ForecastModel(1, 1, horizon, units, cell), lookback, horizon)

    def _inputs(self, x: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        level, scale = _scale(x)
        return _scaled(x, level, scale), level, scale

    def fit(self, series: list[np.ndarray], *, epochs: int = 40, lr: float = 3e-3,
            batch_size: int = 64, patience: int = 5, seed: int = 42, verbose: int = 0,
            backup: Any = None):
        """Train on every window; the last window of each series is validation (early
        stopping on it, best weights restored)."""
        from ..callbacks import EarlyStopping
        from ..train import fit, seed_everything

        seed_everything(seed)
        h, lb = self.horizon, self.lookback
        train = [s[:-1] for s in series if len(s) > lb + h]  # one step back: val is last
        val = [s[-(lb + h):] for s in series if len(s) >= lb + h]
        x, y = windows(train, lb, h)
        vx, vy = windows(val, lb, h)
        xi, level, scale = self._inputs(x)
        yi = _scaled(y, level, scale)  # targets on their window's scale
        vxi, vl, vs = self._inputs(vx)
        vyi = _scaled(vy, vl, vs)
        cbs = [EarlyStopping("val_loss", patience=patience, restore_best_weights=True)]
        return fit(self.model, xi, yi, validation_data=(vxi, vyi), loss="mae", metrics=None,
                   optimizer="adam", lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                   callbacks=cbs, verbose=verbose, clip_norm=5.0, backup=backup)

    @torch.no_grad()
    def forecast(self, series: list[np.ndarray]) -> np.ndarray:
        """The next ``horizon`` values of each series ``(n, H)``; every series needs at least
        ``lookback`` values."""
        short = [i for i, s in enumerate(series) if len(s) < self.lookback]
        if short:
            raise UserError(f"series {short[0] + 1} has fewer than lookback={self.lookback} "
                            "values")
        x = np.stack([s[-self.lookback:] for s in series])
        xi, level, scale = self._inputs(x)
        self.model.eval()
        z = self.model(xi)[:, :, 0].double().numpy()
        return z * scale[:, None] + level[:, None]

    def evaluate(self, series: list[np.ndarray]) -> dict[str, Any]:
        """Hold out the last ``horizon`` values of every series; mean MASE and sMAPE over
        series of the model, naive and drift forecasts (series too short are skipped)."""
        h = self.horizon
        keep = [s for s in series if len(s) >= self.lookback + h and len(s) - h >= 2]
        if not keep:
            raise UserError("no series is long enough to hold out the horizon")
        hist = [s[:-h] for s in keep]
        actual = [s[-h:] for s in keep]
        preds = {"model": list(self.forecast(hist)),
                 "naive": [naive_forecast(s[:, None], h)[:, 0] for s in hist],
                 "drift": [drift_forecast(s[:, None], h)[:, 0] for s in hist]}
        out: dict[str, Any] = {"series": len(keep), "horizon": h}
        for name, fs in preds.items():
            mases, smapes = [], []
            for s, a, f in zip(hist, actual, fs, strict=True):
                scale = float(np.mean(np.abs(np.diff(s))))
                if scale > 0:
                    mases.append(float(np.mean(np.abs(a - f))) / scale)
                smapes.append(smape(a, f))
            out[name] = {"mase": float(np.mean(mases)) if mases else math.nan,
                         "smape": float(np.mean(smapes))}
        return out
