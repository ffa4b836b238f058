"""Time series: multi-step forecasting with walk-forward evaluation, and classification of
variable-length multivariate series.

Forecasting. For a series ``y_1 .. y_T`` (each ``y_t`` a vector of F values, of which the
target columns are forecast) and a window of ``L`` past steps (``lookback``)::

    z_t            = (y_t - mu) / sigma                  # mu, sigma from the training part only
    u_s            = z_s - z_t        (s = t-L+1 .. t)   # relative to the last value (option
                                                         # ``relative``, default on; else u = z)
    h              = RNN_L(... RNN_1(u_{t-L+1} .. u_t))  # last hidden state
    zhat_{t+1..t+H} = z_t[targets] + reshape(h W + b, (H, n_targets))   # direct multi-step
    yhat           = zhat * sigma + mu                    # back in the data's units

trained with the mean squared error on the scaled targets over windows taken every
``stride`` steps. Longer forecasts than the trained ``H`` are made recursively (feeding the
forecasts back), which needs every input column to be a target.

Walk-forward evaluation: forecast origins ``t`` run over the test part every ``step`` steps;
each forecast of ``y_{t+1..t+H}`` sees only ``y_{..t}`` (actual values, no refitting).
Baselines at the same origins: naive ``yhat_{t+k} = y_t`` and seasonal naive
``yhat_{t+k} = y_{t+k-m*ceil(k/m)}`` (season ``m``). Reported: MAE, RMSE and MASE, whose scale
is the in-sample MAE of the seasonal-naive one-step forecast on the training part (``m = 1``:
the naive one), see :mod:`rnnkit.metrics`.

CSV input: a header row, an optional date column (ISO 8601, strictly increasing) and one or
more numeric value columns; errors name the file and the line.

Sequence classification: :class:`SeriesClassifierModel` runs an RNN over padded
``(batch, time, features)`` series with a length mask (padded steps do not update the state)
and a softmax over classes from the last real step.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import io
from ..errors import UserError
from ..layers import Dense
from ..metrics import mae, mase, rmse, smape
from ..recurrent import GRU, LSTM, SimpleRNN, lengths_to_mask
from .spec import Spec
from .timeindex import TimeIndex, kind_of
from .timeindex import parse as parse_stamps

if TYPE_CHECKING:
    from ..backup import Backup

__all__ = [
    "Series", "read_series_csv", "Scaler", "make_windows", "detect_season", "ForecastSpec",
    "ForecastModel", "Forecaster", "naive_forecast", "seasonal_naive_forecast",
    "SeriesClassifierModel", "pad_series", "plot_forecast", "fill_gaps",
]

RNN_LAYERS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}
DATE_NAMES = ("date", "time", "timestamp", "datetime", "datetime_gmt", "ds", "day", "week",
              "month", "quarter", "year", "period")


# --------------------------------------------------------------------------- reading

@dataclass
class Series:
    """Values ``(T, F)`` with column names and optional date strings (one per row)."""

    values: np.ndarray
    columns: list[str]
    dates: list[str] | None = None
    path: str = ""
    time_index: TimeIndex | None = None
    #: missing values between real ones, filled by :func:`fill_gaps` (the CLI says so)
    filled: int = 0

    def select(self, columns: list[str]) -> np.ndarray:
        idx = [self.columns.index(c) for c in columns]
        return self.values[:, idx]


#: the largest magnitude a series value may have (squares and sums must stay finite)
MAX_VALUE = 1e100
#: cells read as a missing value (lowercased)
MISSING = ("", "na", "nan", "n/a", "null", "none", "?")


def read_series_csv(path: str | Path, date_col: str | None = "auto",
                    value_cols: list[str] | None = None) -> Series:
    """Read a CSV (or TSV) time series (see :func:`_read_series_csv`); a line the CSV
    parser rejects (e.g. a field over its size limit) is a one-line UserError."""
    try:
        return _read_series_csv(path, date_col, value_cols)
    except csv.Error as e:
        raise UserError(f"{path}: malformed CSV ({e})") from None


def fill_gaps(values: np.ndarray) -> tuple[np.ndarray, int]:
    """A channel's missing values (NaN) filled by linear interpolation between the nearest
    real values on either side, or with the nearest real value before the first / after the
    last (the UCR archive's own treatment of its sets with missing values). Needs at least
    one real value. Returns the filled copy and how many values were filled."""
    miss = np.isnan(values)
    k = int(miss.sum())
    if not k:
        return values, 0
    idx = np.arange(len(values))
    out = values.copy()
    out[miss] = np.interp(idx[miss], idx[~miss], values[~miss])
    return out, k


def _read_series_csv(path: str | Path, date_col: str | None = "auto",
                    value_cols: list[str] | None = None) -> Series:
    """Read a CSV (or TSV) time series. ``date_col="auto"`` uses a column named like a date
    (``date``, ``time``, ``timestamp``, ``ds``, ...) when there is one; ``None`` means none.
    ``value_cols`` default: every other column. A missing value (an empty cell, ``NA``,
    ``NaN``, ``null``) between real values of its column is filled by :func:`fill_gaps`
    (counted in ``filled``); one before the first or after the last real value, and a
    non-numeric value, are errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first and "," not in first else ";" if (
        ";" in first and "," not in first) else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file") from None
    rows_text = list(reader)
    unnamed = bool(header) and header[0] == ""  # a pandas index column: ",Sales" headers
    if unnamed:
        header[0] = "index"
    if len(set(header)) != len(header) or any(not h for h in header):
        raise UserError(f"{path}:1: the header needs distinct, non-empty column names "
                        f"(got {header})")
    if date_col == "auto":
        date_col = next((h for h in header if h.lower() in DATE_NAMES), None)
        if date_col is None and unnamed:
            first = next((r[0] for r in rows_text if r and r[0].strip()), "")
            kind = kind_of(first)
            if kind not in (None, "index"):  # years, months, dates: the time axis
                date_col = "index"
    if value_cols is None and unnamed and date_col != "index":
        header_values = [h for h in header if h not in ("index", date_col)]
        value_cols = header_values  # the unnamed 0, 1, 2 ... index is not a value
    elif date_col is not None and date_col not in header:
        raise UserError(f"{path}: no date column {date_col!r} (columns: {', '.join(header)})")
    if value_cols is None:
        value_cols = [h for h in header if h != date_col]
    for c in value_cols:
        if c not in header:
            raise UserError(f"{path}: no column {c!r} (columns: {', '.join(header)})")
    if not value_cols:
        raise UserError(f"{path}: no value columns")
    vidx = [header.index(c) for c in value_cols]
    didx = header.index(date_col) if date_col else None
    rows: list[list[float]] = []
    row_lines: list[int] = []
    dates: list[str] = []
    stamp_lines: list[int] = []
    for n, row in enumerate(rows_text, 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        vals = []
        for i, c in zip(vidx, value_cols, strict=True):
            cell = row[i].strip()
            if cell.lower() in MISSING:
                vals.append(math.nan)
                continue
            try:
                v = float(cell)
            except ValueError:
                raise UserError(f"{path}:{n}: column {c!r}: {cell!r} is not a number") from None
            if not math.isfinite(v):
                raise UserError(f"{path}:{n}: column {c!r}: {cell!r} is not a finite number")
            if abs(v) > MAX_VALUE:
                raise UserError(f"{path}:{n}: column {c!r}: {cell} is out of range (|value| "
                                f"> {MAX_VALUE:g} overflows the statistics); rescale the column")
            vals.append(v)
        if didx is not None:
            dates.append(row[didx].strip())
            stamp_lines.append(n)
        rows.append(vals)
        row_lines.append(n)
    if not rows:
        raise UserError(f"{path}: no data rows")
    values = np.asarray(rows, dtype=np.float64)
    filled = 0
    for j, c in enumerate(value_cols):
        real = np.flatnonzero(~np.isnan(values[:, j]))
        if real.size == 0:
            raise UserError(f"{path}: column {c!r} has no values")
        for edge, what in ((0, "before its first value"), (len(values) - 1, "after its last "
                                                                          "value")):
            if math.isnan(values[edge, j]):
                raise UserError(f"{path}:{row_lines[edge]}: column {c!r} is empty {what} "
                                "(only gaps between values are interpolated): drop or fill "
                                "those rows")
        values[:, j], k = fill_gaps(values[:, j])
        filled += k
    tindex = parse_stamps(dates, str(path), stamp_lines) if didx is not None else None
    return Series(values, list(value_cols), dates if didx is not None else None, str(path),
                  tindex, filled)


# --------------------------------------------------------------------------- windows

def _check_names(columns: Any, targets: Any, season: int, scaled: int) -> None:
    """ValueError unless a saved forecaster's columns, targets and season fit together."""
    if (not isinstance(columns, list) or not columns
            or not all(isinstance(c, str) and c for c in columns)
            or len(set(columns)) != len(columns)):
        raise ValueError("columns must be distinct non-empty names")
    if (not isinstance(targets, list) or not targets
            or not all(isinstance(t, str) and t in columns for t in targets)
            or len(set(targets)) != len(targets)):
        raise ValueError("targets must be distinct names among the columns")
    if season < 1:
        raise ValueError(f"season must be positive, got {season}")
    if scaled != len(columns):
        raise ValueError(f"the scaler has {scaled} columns, the model {len(columns)}")


class Scaler:
    """Per-column standardisation ``z = (y - mean) / std`` fitted on training rows only
    (a constant column gets ``std = 1``)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, v: np.ndarray) -> np.ndarray:
        return (v - self.mean) / self.std

    def inverse(self, z: np.ndarray, idx: list[int] | None = None) -> np.ndarray:
        if idx is None:
            return z * self.std + self.mean
        return z * self.std[idx] + self.mean[idx]

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> Scaler:
        """Inverse of :meth:`to_json`; ValueError unless both are equal-length lists of
        finite numbers with positive ``std``."""
        mean, std = d["mean"], d["std"]
        ok = all(isinstance(v, list) and v and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in v) for v in (mean, std))
        if not ok or len(mean) != len(std) or min(std) <= 0:
            raise ValueError("scaler mean/std must be equal-length lists of finite numbers "
                             "(std > 0)")
        return cls(np.asarray(mean, np.float64), np.asarray(std, np.float64))


def make_windows(values: np.ndarray, lookback: int, horizon: int, stride: int = 1,
                 targets: list[int] | None = None, start: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(N, lookback, F)`` and targets ``(N, horizon, n_targets)`` for forecast
    origins ``t = max(start, lookback), +stride, ...`` with ``t + horizon <= T``: input rows
    ``t-lookback .. t-1``, target rows ``t .. t+horizon-1``."""
    if lookback < 1 or horizon < 1 or stride < 1:
        raise ValueError("lookback, horizon and stride must be positive")
    values = np.asarray(values)
    targets = list(range(values.shape[1])) if targets is None else targets
    origins = list(range(max(start, lookback), values.shape[0] - horizon + 1, stride))
    x = np.stack([values[t - lookback:t] for t in origins]) if origins else \
        np.zeros((0, lookback, values.shape[1]))
    y = np.stack([values[t:t + horizon][:, targets] for t in origins]) if origins else \
        np.zeros((0, horizon, len(targets)))
    return x, y


def detect_season(y: np.ndarray, max_lag: int | None = None, min_corr: float = 0.3) -> int:
    """Season length guess: the lag (>= 2) of the highest local maximum of the sample
    autocorrelation of the first column, when it exceeds ``min_corr``; else 1."""
    y = np.asarray(y, np.float64)
    y = y[:, 0] if y.ndim == 2 else y
    # remove a linear trend so it does not dominate the autocorrelation
    t = np.arange(len(y))
    y = y - np.polyval(np.polyfit(t, y, 1), t) if len(y) > 2 else y - y.mean()
    n = len(y)
    max_lag = min(max_lag or n // 3, n - 2)
    denom = float(np.dot(y, y))
    if max_lag < 3 or denom == 0:
        return 1
    acf = np.array([float(np.dot(y[:-k], y[k:])) / denom for k in range(1, max_lag + 1)])
    best, best_r = 1, min_corr
    for k in range(2, max_lag):  # acf[k-1] is lag k
        r = acf[k - 1]
        if r > acf[k - 2] and r >= acf[k] and r > best_r:
            best, best_r = k, r
    return best


def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """``yhat_{t+k} = y_t`` for k = 1..horizon: ``(horizon, F)``."""
    return np.repeat(history[-1:], horizon, axis=0)


def drift_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """``yhat_{t+k} = y_t + k (y_t - y_1) / (t - 1)``: the line through the first and last
    observations (the naive forecast for a single observation)."""
    if len(history) < 2:
        return naive_forecast(history, horizon)
    slope = (history[-1] - history[0]) / (len(history) - 1)
    return history[-1] + slope * np.arange(1, horizon + 1)[:, None]


def seasonal_naive_forecast(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """``yhat_{t+k} = y_{t+k-m*ceil(k/m)}``: the last observed value of the same season."""
    if season <= 1:
        return naive_forecast(history, horizon)
    if len(history) < season:
        raise ValueError(f"need at least {season} past values for the seasonal naive forecast")
    last = history[-season:]
    return np.stack([last[k % season] for k in range(horizon)])


# --------------------------------------------------------------------------- model

@dataclass
class ForecastSpec(Spec):
    """Shape of a forecaster."""

    cell: str = "lstm"
    units: int = 32
    layers: int = 1
    dropout: float = 0.0
    lookback: int = 28
    horizon: int = 7
    stride: int = 1
    relative: bool = True
    #: quantile levels the model forecasts (pinball loss over all of them; the 0.5 one,
    #: the median, is the point forecast); None: one point forecast trained on the squared
    #: error
    quantiles: list[float] | None = None

    def __post_init__(self) -> None:
        self.check_choice("cell", RNN_LAYERS)
        if self.quantiles is not None:
            _check_quantiles(self.quantiles)
        self.check_positive_ints("units", "layers", "lookback", "horizon", "stride")
        self.check_rates("dropout")


def _check_quantiles(qs: Any) -> list[float]:
    if (not isinstance(qs, list) or not qs or len(qs) > 99
            or not all(isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1
                       for q in qs) or sorted(qs) != qs or len(set(qs)) != len(qs)
            or 0.5 not in qs):
        raise ValueError(f"quantiles must be increasing levels in (0, 1) including 0.5, got "
                         f"{qs!r:.60}")
    return [float(q) for q in qs]


def pinball_loss(out: Tensor, y: Tensor, levels: list[float]) -> Tensor:
    """Mean quantile (pinball) loss: ``max(q e, (q - 1) e)``, ``e = y - yhat_q``, over
    every quantile level ``q`` (``out`` ``(..., Q)``, ``y`` without the last axis)."""
    q = torch.as_tensor(levels, dtype=out.dtype, device=out.device)
    e = y.unsqueeze(-1) - out
    return torch.maximum(q * e, (q - 1) * e).mean()


@io.register_model("ForecastModel")
class ForecastModel(nn.Module):
    """``(batch, lookback, features)`` -> ``(batch, horizon, targets)`` (see module doc)."""

    def __init__(self, features: int, targets: int, horizon: int, units: int = 32,
                 cell: str = "lstm", layers: int = 1, dropout: float = 0.0,
                 quantiles: list[float] | None = None):
        super().__init__()
        if quantiles is not None:
            quantiles = _check_quantiles(quantiles)
        self.cfg = {"features": features, "targets": targets, "horizon": horizon,
                    "units": units, "cell": cell, "layers": layers, "dropout": dropout,
                    "quantiles": quantiles}
        self.q = len(quantiles) if quantiles else 0
        self.rnns = nn.ModuleList(
            RNN_LAYERS[cell](units, input_size=features if i == 0 else units,
                             return_sequences=i < layers - 1, dropout=dropout)
            for i in range(layers))
        self.out = Dense(horizon * targets * max(self.q, 1), input_size=units)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, horizon, targets)``, or ``(batch, horizon, targets, quantiles)``."""
        for rnn in self.rnns:
            x = rnn(x)
        shape = (x.shape[0], self.cfg["horizon"], self.cfg["targets"])
        return self.out(x).reshape(*shape, self.q) if self.q else self.out(x).reshape(shape)

    def get_config(self) -> dict:
        return dict(self.cfg)


class Forecaster:
    """Model + scaler + column roles: train, forecast, walk-forward evaluate, save/load."""

    task = "forecast"

    def __init__(self, model: ForecastModel, spec: ForecastSpec, scaler: Scaler,
                 columns: list[str], targets: list[str], season: int = 1,
                 train_values: np.ndarray | None = None):
        self.model, self.spec, self.scaler = model, spec, scaler
        self.columns, self.targets, self.season = list(columns), list(targets), int(season)
        self.target_idx = [self.columns.index(c) for c in self.targets]
        #: the (unscaled) training part of the target columns, for the MASE scale
        self.train_values = train_values
        #: conformal 80% interval of a point model (see :meth:`calibrate`), or None
        self.calibration: dict[str, Any] | None = None

    @classmethod
    def create(cls, spec: ForecastSpec, train: np.ndarray, columns: list[str],
               targets: list[str] | None = None, season: int | None = None) -> Forecaster:
        """Fit the scaler on ``train`` (rows ``(T, F)``) and build an untrained model;
        ``season=None`` detects it from the training part."""
        targets = list(columns) if not targets else list(targets)
        for t in targets:
            if t not in columns:
                raise UserError(f"target {t!r} is not a value column ({', '.join(columns)})")
        if len(train) < spec.lookback + spec.horizon + 1:
            raise UserError(f"the training part has {len(train)} rows; lookback "
                            f"{spec.lookback} + horizon {spec.horizon} need more")
        idx = [columns.index(t) for t in targets]
        if season is None:
            season = detect_season(train[:, idx])
        model = ForecastModel(len(columns), len(targets), spec.horizon, spec.units, spec.cell,
                              spec.layers, spec.dropout, spec.quantiles)
        return cls(model, spec, Scaler.fit(train), columns, targets, season, train[:, idx])

    def _inputs(self, zx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled windows ``(N, L, F)`` -> model inputs and the level added to its outputs
        ``(N, 1, n_targets)``."""
        if not self.spec.relative:
            return zx, np.zeros((len(zx), 1, len(self.target_idx)))
        last = zx[:, -1:, :]
        return zx - last, last[:, :, self.target_idx]

    def windows(self, values: np.ndarray, start: int = 0) -> tuple[Tensor, Tensor]:
        """Model inputs and targets (scaled, relative to the level) for training."""
        x, y = make_windows(self.scaler.transform(values), self.spec.lookback,
                            self.spec.horizon, self.spec.stride, self.target_idx, start)
        x, level = self._inputs(x)
        return (torch.as_tensor(x, dtype=torch.float32),
                torch.as_tensor(y - level, dtype=torch.float32))

    @torch.no_grad()
    def _predict_all(self, zx: np.ndarray) -> np.ndarray:
        """Scaled forecasts ``(n, H, targets, Q)`` (Q = 1 for a point model); quantiles are
        sorted along Q (monotone rearrangement: no crossing quantiles)."""
        x, level = self._inputs(zx)
        self.model.eval()
        out = self.model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        out = out[..., None] if out.ndim == 3 else np.sort(out, axis=-1)
        return out + level[..., None]

    def _predict_scaled(self, zx: np.ndarray) -> np.ndarray:
        """Scaled point forecasts ``(n, H, targets)``: the median of a quantile model."""
        out = self._predict_all(zx)
        qs = self.spec.quantiles
        return out[..., qs.index(0.5)] if qs else out[..., 0]

    def _local_scale(self, zx: np.ndarray) -> np.ndarray:
        """Each window's own scale ``s_w``: the mean absolute step change of its target
        columns ``mean_t |y_t - y_{t-1}|`` (data units, ``(n, n_targets)``), floored at a
        tenth of the mean over all windows so a flat window does not give a zero width."""
        d = np.abs(np.diff(zx[:, :, self.target_idx], axis=1)) if zx.shape[1] > 1 else \
            np.abs(zx[:, :, self.target_idx])
        s = d.mean(axis=1) * self.scaler.std[self.target_idx]
        return np.maximum(s, 0.1 * s.mean(axis=0) + 1e-12)

    def residuals(self, values: np.ndarray, start: int, end: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Forecast errors ``actual - forecast`` (data units, ``(n, H, n_targets)``) from
        every origin ``t`` in ``[max(start, lookback), end - H]`` (step 1), each forecast
        made from the ``lookback`` rows before ``t`` only, and each window's
        :meth:`_local_scale` ``(n, n_targets)``."""
        h, lb = self.spec.horizon, self.spec.lookback
        values = np.asarray(values, np.float64)
        end = len(values) if end is None else end
        origins = list(range(max(start, lb), end - h + 1))
        if not origins:
            k = len(self.target_idx)
            return np.zeros((0, h, k)), np.zeros((0, k))
        x = np.stack([self.scaler.transform(values[t - lb:t]) for t in origins])
        f = self.scaler.inverse(self._predict_scaled(x), self.target_idx)
        actual = np.stack([values[t:t + h][:, self.target_idx] for t in origins])
        return actual - f, self._local_scale(x)

    def calibrate(self, values: np.ndarray, start: int, end: int | None = None,
                  level: float = 0.8, source: str = "validation") -> dict[str, Any] | None:
        """Split-conformal ``level`` interval for a point model, normalised per window and
        step (the errors of a series grow with its level and with the lead time).

        Scores are ``r = e / (s_w sigma_k)``: ``s_w`` is the window's own scale
        (:meth:`_local_scale`), ``sigma_k`` the RMS of ``e / s_w`` at step ``k`` over the
        windows before ``start`` (the training part, in-sample: the width's shape over the
        horizon). Held-out windows with origins in ``[start, end - H]`` give the scale: their
        scores, pooled over windows and steps, give the finite-sample conformal quantiles
        ``q_lo``, ``q_hi`` (levels ``(1 -+ level) / 2``), and the interval at step ``k`` of
        a window is ``forecast + [q_lo, q_hi] s_w sigma_k``. None (no interval) when fewer
        than 5 held-out windows exist. Sets and returns :attr:`calibration`."""
        e_fit, s_fit = self.residuals(values, 0, start)
        e_cal, s_cal = self.residuals(values, start, end)
        if len(e_fit) == 0 or len(e_cal) < 5:
            self.calibration = None
            return None
        sigma = np.sqrt(np.mean((e_fit / s_fit[:, None]) ** 2, axis=0))  # (H, targets)
        sigma = np.maximum(sigma, 1e-9)
        r = (e_cal / (s_cal[:, None] * sigma)).transpose(2, 0, 1)
        r = r.reshape(len(self.target_idx), -1)
        n = r.shape[1]
        a = (1 - level) / 2
        lo_q, hi_q = math.floor(a * (n + 1)) / n, min(1.0, math.ceil((1 - a) * (n + 1)) / n)
        lo = np.quantile(r, max(lo_q, 0.0), axis=1)
        hi = np.quantile(r, hi_q, axis=1)
        self.calibration = {"level": level, "sigma": sigma.tolist(), "lower": lo.tolist(),
                            "upper": hi.tolist(), "windows": len(e_cal), "source": source}
        return self.calibration

    def intervals(self, zx: np.ndarray, level: float = 0.8, point: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """Lower and upper bounds (data units) of the central ``level`` interval: from the
        quantiles ``(1 - level) / 2`` and ``(1 + level) / 2`` of a quantile model, else from
        the conformal :attr:`calibration` of a point model; None when neither exists.
        ``point``: the point forecasts of ``zx`` in data units when the caller has them
        (else they are predicted here)."""
        qs = self.spec.quantiles or []
        lo_q, hi_q = round((1 - level) / 2, 6), round((1 + level) / 2, 6)
        cal = self.calibration
        if (lo_q not in qs or hi_q not in qs) and cal is not None and cal["level"] == level:
            if point is None:
                point = self.scaler.inverse(self._predict_scaled(zx), self.target_idx)
            sigma = np.asarray(cal["sigma"]) * self._local_scale(zx)[:, None]
            return (point + np.asarray(cal["lower"]) * sigma,
                    point + np.asarray(cal["upper"]) * sigma)
        if lo_q not in qs or hi_q not in qs:
            return None
        out = self._predict_all(zx)
        inv = [self.scaler.inverse(out[..., qs.index(q)], self.target_idx) for q in (lo_q, hi_q)]
        return inv[0], inv[1]

    def fit(self, train: np.ndarray, validation: np.ndarray | None = None, *,
            val_start: int = 0, optimizer: str = "adam", lr: float = 3e-3,
            batch_size: int = 32, epochs: int = 30, patience: int = 5,
            seed: int | None = 42, out: str | Path | None = None, verbose: int = 0,
            backup: Backup | None = None):
        """Train on windows of ``train``; validation windows are the origins ``>= val_start``
        of ``validation`` (pass the training tail plus the validation part so the first
        validation forecasts have their lookback)."""
        from ..callbacks import stop_and_checkpoint
        from ..train import fit

        x, y = self.windows(train)
        if len(x) == 0:
            raise UserError("no training windows: the series is shorter than lookback + horizon")
        val = None
        if validation is not None:
            vx, vy = self.windows(validation, start=val_start)
            val = (vx, vy) if len(vx) else None
        callbacks = stop_and_checkpoint(val is not None, patience, out, self.save)
        start = time.perf_counter()
        qs = self.spec.quantiles
        loss: Any = "mse"
        metrics: Any = ("mae",)
        if qs:
            mid = qs.index(0.5)

            def loss(o: Tensor, t: Tensor) -> Tensor:
                return pinball_loss(o, t, qs)

            metrics = {"mae": lambda o, t: (o[..., mid] - t).abs().mean()}
        history = fit(self.model, x, y, validation_data=val, loss=loss, metrics=metrics,
                      optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs,
                      callbacks=callbacks, seed=seed, verbose=verbose, clip_norm=5.0,
                      backup=backup)
        self.train_seconds = time.perf_counter() - start
        return history

    @torch.no_grad()
    def forecast(self, history: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Forecast the ``horizon`` steps after ``history`` (rows ``(T, F)``, T >= lookback):
        ``(horizon, n_targets)`` in the data's units."""
        horizon = horizon or self.spec.horizon
        history = np.asarray(history, np.float64)
        lb, h = self.spec.lookback, self.spec.horizon
        if history.ndim != 2 or history.shape[1] != len(self.columns):
            raise UserError(f"history must have {len(self.columns)} columns "
                            f"({', '.join(self.columns)})")
        if len(history) < lb:
            raise UserError(f"need at least lookback = {lb} past rows to forecast, "
                            f"got {len(history)}")
        if horizon > h and len(self.targets) != len(self.columns):
            raise UserError(f"horizon {horizon} is longer than the trained horizon {h}; "
                            "recursive forecasts need every input column to be a target")
        z = self.scaler.transform(history[-lb:])
        out: list[np.ndarray] = []
        while sum(len(o) for o in out) < horizon:
            pred = self._predict_scaled(z[None])[0]
            out.append(pred)
            if sum(len(o) for o in out) >= horizon:
                break
            z = np.concatenate([z, pred])[-lb:]  # only reached when targets == all columns
        zf = np.concatenate(out)[:horizon]
        return self.scaler.inverse(zf, self.target_idx)

    @torch.no_grad()
    def walk_forward(self, values: np.ndarray, start: int, step: int | None = None
                     ) -> dict[str, Any]:
        """Forecast from every origin ``t = start, start+step, ...`` (``t + H <= T``) using
        only rows before ``t``; compare with the naive, seasonal-naive and drift baselines
        by MAE, RMSE, MASE and sMAPE.

        ``step`` default: the horizon, shortened (forecasts then overlap) so that there are
        at least 10 origins when the test part allows, so that a comparison with the
        baselines does not rest on two or three forecasts. Returns metrics per method and
        the origins/actuals/forecasts (arrays ``(n_origins, H, n_targets)``)."""
        h, lb = self.spec.horizon, self.spec.lookback
        values = np.asarray(values, np.float64)
        first = max(start, lb, self.season)
        if not step:
            room = len(values) - h - first  # origins first .. first + room
            step = max(1, min(h, room // 9)) if room >= 0 else h
        origins = list(range(first, len(values) - h + 1, step))
        if not origins:
            raise UserError(f"no forecast origin in the test part ({len(values) - start} rows; "
                            f"horizon {h} and lookback {lb} need more)")
        x = np.stack([self.scaler.transform(values[t - lb:t]) for t in origins])
        z = self._predict_scaled(x)
        model_f = self.scaler.inverse(z, self.target_idx)
        tv = values[:, self.target_idx]
        actual = np.stack([tv[t:t + h] for t in origins])
        naive = np.stack([naive_forecast(tv[:t], h) for t in origins])
        snaive = np.stack([seasonal_naive_forecast(tv[:t], h, self.season) for t in origins])
        drift = np.stack([drift_forecast(tv[:t], h) for t in origins])
        bands = self.intervals(x, point=model_f)
        train = self.train_values if self.train_values is not None else tv[:start]
        metrics = {}
        for name, f in (("model", model_f), ("naive", naive), ("seasonal_naive", snaive),
                        ("drift", drift)):
            metrics[name] = {"mae": mae(actual, f), "rmse": rmse(actual, f),
                             "mase": _mase(actual, f, train, self.season),
                             "smape": smape(actual, f)}
        out = {"metrics": metrics, "origins": origins, "actual": actual, "model": model_f,
               "naive": naive, "seasonal_naive": snaive, "drift": drift,
               "season": self.season, "horizon": h, "step": step}
        if bands is not None:
            lo, hi = bands
            out["interval"] = {"level": 0.8, "lower": lo, "upper": hi,
                               "coverage": float(np.mean((actual >= lo) & (actual <= hi)))}
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, model_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        model_dir = Path(model_dir)
        train = None if self.train_values is None else self.train_values.tolist()
        io.atomic_write_json(model_dir / "forecast.json", {"train_targets": train,
                                                           "calibration": self.calibration})
        io.save_model(model_dir, self.model, task=self.task, extra={
            "forecast": self.spec.to_dict(), "scaler": self.scaler.to_json(),
            "columns": self.columns, "targets": self.targets, "season": self.season,
            **(extra or {})})
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> tuple[Forecaster, dict[str, Any]]:
        model, cfg = io.load_model(model_dir)
        try:
            spec = ForecastSpec.from_dict(cfg["forecast"])
            scaler = Scaler.from_json(cfg["scaler"])
            columns, targets, season = cfg["columns"], cfg["targets"], int(cfg["season"])
            _check_names(columns, targets, season, len(scaler.mean))
            side = Path(model_dir) / "forecast.json"
            train, cal = None, None
            if side.is_file():
                fj = io.read_json(side, "forecast")
                fj = fj if isinstance(fj, dict) else {}
                tv = fj.get("train_targets")
                train = None if tv is None else np.asarray(tv, np.float64)
                cal = _check_calibration(fj.get("calibration"), spec.horizon, len(targets))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise UserError(f"{model_dir}: not a forecast model ({type(e).__name__}: {e})"
                            ) from None
        if not isinstance(model, ForecastModel):
            raise UserError(f"{model_dir}: not a forecast model")
        fc = cls(model, spec, scaler, columns, targets, season, train)
        fc.calibration = cal
        return fc, cfg


def _check_calibration(cal: Any, horizon: int, targets: int) -> dict[str, Any] | None:
    """A saved :meth:`Forecaster.calibrate` record, or ValueError naming what is wrong."""
    if cal is None:
        return None
    if not isinstance(cal, dict):
        raise ValueError("calibration must be an object")

    def finite(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    sigma, lo, hi, level = cal.get("sigma"), cal.get("lower"), cal.get("upper"), cal.get("level")
    ok = (finite(level) and 0 < level < 1
          and isinstance(sigma, list) and len(sigma) == horizon
          and all(isinstance(r, list) and len(r) == targets and all(finite(x) and x > 0
                                                                   for x in r) for r in sigma)
          and all(isinstance(b, list) and len(b) == targets and all(finite(x) for x in b)
                  for b in (lo, hi)))
    if not ok:
        raise ValueError(f"calibration must hold level, sigma ({horizon} x {targets} positive "
                         f"numbers), lower and upper ({targets} numbers each)")
    return cal


def _mase(actual: np.ndarray, f: np.ndarray, train: np.ndarray, season: int) -> float | None:
    try:
        return mase(actual, f, train, season)
    except ValueError:
        return None


def plot_forecast(result: dict[str, Any], values: np.ndarray, path: str | Path,
                  column: int = 0, title: str | None = None, name: str = "") -> Path:
    """PNG of actual values vs the walk-forward forecasts of model and seasonal naive
    (column ``column`` of the targets), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    origins, h = result["origins"], result["horizon"]
    lo = max(0, origins[0] - 3 * h)
    hi = origins[-1] + h
    ax.plot(range(lo, hi), values[lo:hi], color="black", lw=1.2, label="actual")
    for i, t in enumerate(origins):
        steps = range(t, t + h)
        ax.plot(steps, result["model"][i, :, column], color="tab:blue", lw=1.2,
                label="model" if i == 0 else None)
        if "interval" in result:
            band = result["interval"]
            ax.fill_between(steps, band["lower"][i, :, column], band["upper"][i, :, column],
                            color="tab:blue", alpha=0.12, lw=0,
                            label="80% interval" if i == 0 else None)
        ax.plot(steps, result["seasonal_naive"][i, :, column], color="tab:orange", lw=0.8,
                ls="--", label=f"seasonal naive (m={result['season']})" if i == 0 else None)
    ax.axvline(origins[0], color="grey", lw=0.8, ls=":")
    m = result["metrics"]
    ax.set_title(title or (f"{name} walk-forward forecasts, horizon {h}: MAE model "
                           f"{m['model']['mae']:.3g}, naive {m['naive']['mae']:.3g}, "
                           f"seasonal naive {m['seasonal_naive']['mae']:.3g}"), fontsize=9)
    ax.set_xlabel("time step")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


# --------------------------------------------------------------------------- classification

def pad_series(series: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Variable-length ``(T_i, F)`` arrays -> ``(n, max T, F)`` zeros-padded at the end and
    the lengths ``(n,)``."""
    if not series:
        raise ValueError("no series")
    feats = {np.asarray(s).shape[1] for s in series}
    if len(feats) != 1:
        raise ValueError(f"all series need the same number of features, got {sorted(feats)}")
    t = max(len(s) for s in series)
    x = np.zeros((len(series), t, feats.pop()), np.float32)
    for i, s in enumerate(series):
        if len(s) == 0:
            raise ValueError(f"series {i} is empty")
        x[i, :len(s)] = s
    return torch.from_numpy(x), torch.tensor([len(s) for s in series])


@io.register_model("SeriesClassifier")
class SeriesClassifierModel(nn.Module):
    """Masked RNN over padded multivariate series -> class logits.

    ``forward(x, lengths)``: ``x`` ``(batch, time, features)`` padded at the end, ``lengths``
    the real steps; returns logits ``(batch, classes)`` from the last *real* step's state
    (``outputs = "logits"``: ``fit``'s cross-entropies apply the softmax themselves).
    """

    outputs = "logits"

    def __init__(self, features: int, classes: int, units: int = 32, cell: str = "gru"):
        super().__init__()
        self.cfg = {"features": features, "classes": classes, "units": units, "cell": cell}
        self.rnn = RNN_LAYERS[cell](units, input_size=features)
        self.out = Dense(classes, input_size=units)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = lengths_to_mask(lengths, x.shape[1], device=x.device)
        return self.out.logits(self.rnn(x, mask=mask))

    def get_config(self) -> dict:
        return dict(self.cfg)
