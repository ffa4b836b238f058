"""``rnnkit train forecast`` and ``rnnkit forecast``: time-series forecasting from a CSV.

    rnnkit train forecast --file series.csv [--value-cols a,b] [--target a] --horizon 7
    rnnkit forecast MODEL --file series.csv --horizon 14

The series is split by time: the first part trains (and fits the scaler), the next
``--val-fraction`` validates (early stopping), the last ``--test-fraction`` is the test part,
evaluated walk-forward (an origin every ``--step`` steps, default the horizon shortened to
give at least 10 origins) beside the naive, seasonal-naive and drift baselines (MAE, RMSE,
MASE, sMAPE); ``forecast.png`` shows forecasts vs actuals. Time stamps may be ISO dates or
datetimes (with offsets), ``YYYY-MM``, ``YYYY Qn``, ``YYYY``, an integer index, or dates
written ``31.01.2020``, ``1/31/2020``, ``2020/01/31`` or ``Jan 2020`` (day/month order from
the column; a note says when it had to be guessed). Missing values (empty, ``NA``, ``NaN``)
between real ones are filled by linear interpolation, with a note.
``--season auto`` guesses the season from the autocorrelation of the training part.
The walk-forward figures are those of the model trained without the test part; then (unless
``--no-refit``) a model is retrained on the whole history for the selected number of epochs,
and that is the model saved for ``rnnkit forecast``.
``rnnkit forecast`` forecasts the steps after the end of ``--file`` (longer than the trained
horizon: recursively, when every input column is a target).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_write_json, file_record, same_file
from ..plots import plot_history
from ..rundir import check_output_file
from ..tasks.forecast import Forecaster, ForecastSpec, Series, plot_forecast, read_series_csv
from ..tasks.timeindex import future
from ..train import seed_everything
from .common import add_training_args, check_positive, given, print_json, read_model_json

DATA_JSON = "data.json"


def _read(path: str, date_col: str | None, value_cols: list[str] | None) -> Series:
    """:func:`read_series_csv`, saying on stderr what it assumed: the order of day and month
    of ambiguous dates, and how many missing values it interpolated."""
    series = read_series_csv(path, date_col, value_cols)
    ti = series.time_index
    if ti is not None and ti.note:
        print(f"rnnkit: note: {path}: {ti.note}", file=sys.stderr)
    if series.filled:
        print(f"rnnkit: note: {path}: {series.filled} missing value(s) between values filled "
              "by linear interpolation", file=sys.stderr)
    return series


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("forecast", help="time-series forecasting from a CSV file",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--file", required=True, help="CSV/TSV with a header row, or a .tsf file "
                   "of many series (one global model; horizon from its @horizon)")
    d.add_argument("--id-col", default=None,
                   help="many series in one long CSV: the column naming the series (one "
                        "global model, as for a .tsf file)")
    d.add_argument("--date-col", default="auto",
                   help="date column (default: one named date/time/timestamp/ds...; "
                        "'none' for no date column)")
    d.add_argument("--value-cols", help="comma-separated input columns (default: all others)")
    d.add_argument("--target", help="comma-separated columns to forecast (default: all inputs)")
    d.add_argument("--val-fraction", type=float, default=0.1)
    d.add_argument("--test-fraction", type=float, default=0.2)
    d.add_argument("--step", type=int, default=None,
                   help="walk-forward step between forecast origins (default: the horizon, "
                        "shortened to give at least 10 origins when the test part allows)")
    d.add_argument("--season", default="auto", help="season length for the seasonal-naive "
                   "baseline and the MASE scale, or 'auto'")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=["simple", "lstm", "gru"], default="lstm")
    m.add_argument("--units", type=int, default=32)
    m.add_argument("--layers", type=int, default=1)
    m.add_argument("--dropout", type=float, default=0.0)
    m.add_argument("--lookback", type=int, default=28, help="past steps the model sees")
    m.add_argument("--horizon", type=int, default=7, help="steps forecast at once")
    m.add_argument("--stride", type=int, default=1, help="step between training windows")
    m.add_argument("--absolute", action="store_true",
                   help="feed absolute scaled values (default: relative to the last value)")
    m.add_argument("--quantiles", default="none",
                   help="quantile levels to forecast, e.g. 0.1,0.5,0.9 (pinball loss; the "
                        "median is the point forecast, 0.1/0.9 give the 80%% interval), or "
                        "'none': a point forecast trained on the squared error, with a "
                        "conformal 80%% interval calibrated on the validation windows "
                        "(its coverage is reported on the test part)")
    m.add_argument("--no-refit", dest="refit", action="store_false",
                   help="save the model trained without the validation and test parts "
                        "(default: after the walk-forward evaluation, retrain on the whole "
                        "history for the selected number of epochs and save that)")
    add_training_args(p, optimizer="adam", lr=1e-2, batch_size=32, epochs=30, patience=5)
    p.set_defaults(func=train, out_default="models/forecast")

    f = sub.add_parser("forecast", help="forecast the steps after the end of a series")
    f.add_argument("model_dir")
    f.add_argument("--file", required=True, help="CSV with the model's columns")
    f.add_argument("--horizon", type=int, default=None, help="steps (default: trained horizon)")
    f.add_argument("--date-col", default=None,
                   help="time column (default: the one used in training; 'none' for none)")
    f.add_argument("--plot", help="write a PNG of the history tail and the forecast")
    f.add_argument("--json", action="store_true", help="print one JSON object last")
    f.set_defaults(func=forecast_cmd)

    from . import TASKS
    TASKS["forecast"] = {"evaluate": evaluate_cmd, "predict": forecast_cmd}
    TASKS["forecast_global"] = {"evaluate": global_evaluate_cmd, "predict": global_forecast_cmd}


def _str_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


#: training windows a short series keeps when the lookback is chosen for it
MIN_WINDOWS = 10
#: validation windows a short series keeps when its validation part is chosen for it
MIN_CALIBRATION = 5


def _quantiles(s: str) -> list[float] | None:
    if s.strip().lower() == "none":
        return None
    try:
        qs = sorted(float(x) for x in s.split(","))
    except ValueError:
        raise UserError(f"--quantiles must be comma-separated numbers or 'none', got {s!r}"
                        ) from None
    if not all(0 < q < 1 for q in qs) or 0.5 not in qs or len(set(qs)) != len(qs):
        raise UserError(f"--quantiles must be distinct levels in (0, 1) including 0.5, got {s!r}")
    return qs


def _cols(s: str | None) -> list[str] | None:
    if s is None:
        return None
    cols = [c.strip() for c in s.split(",") if c.strip()]
    if not cols:
        raise UserError(f"no column names in {s!r}")
    return cols


def _split(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Row indices where validation and test start."""
    for name, v in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 < v < 1:
            raise UserError(f"{name} must be in (0, 1), got {v}")
    if val_fraction + test_fraction >= 0.9:
        raise UserError("--val-fraction + --test-fraction must leave at least 10% to train")
    test_start = n - int(round(n * test_fraction))
    val_start = test_start - int(round(n * val_fraction))
    return val_start, test_start


def _rounded(metrics: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    return {k: {m: (None if v is None else round(v, 4)) for m, v in d.items()}
            for k, d in metrics.items()}


def _table(metrics: dict[str, dict[str, float | None]]) -> str:
    lines = [f"{'method':16} {'MAE':>10} {'RMSE':>10} {'MASE':>8} {'sMAPE %':>8}"]
    for name, d in metrics.items():
        mase = "n/a" if d["mase"] is None else f"{d['mase']:.3f}"
        lines.append(f"{name:16} {d['mae']:10.4g} {d['rmse']:10.4g} {mase:>8} "
                     f"{d['smape']:8.2f}")
    return "\n".join(lines)


def train(args: argparse.Namespace) -> int:
    check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if Path(args.file).suffix.lower() == ".tsf" or args.id_col:
        return train_global(args)
    date_col = None if args.date_col.lower() == "none" else args.date_col
    series = _read(args.file, date_col, _cols(args.value_cols))
    targets = _cols(args.target)
    season = None
    if args.season != "auto":
        try:
            season = int(args.season)
        except ValueError:
            raise UserError(f"--season must be a positive integer or 'auto', "
                            f"got {args.season!r}") from None
        check_positive(season=season)
    v = series.values
    val_start, test_start = _split(len(v), args.val_fraction, args.test_fraction)
    val_rows = test_start - val_start
    lookback = args.lookback
    shortest = (lookback if given(args, "lookback") else 2) + args.horizon + 1
    longer_val = max(0, test_start - args.horizon - MIN_CALIBRATION + 1)
    if not given(args, "val_fraction") and val_rows - args.horizon + 1 < MIN_CALIBRATION \
            and longer_val >= shortest:
        # a short series: too few validation windows to calibrate the interval (unless that
        # would leave no training window: then no interval, said after training)
        val_start = longer_val
    if val_start < shortest:  # not even one training window, whatever the lookback
        raise UserError(f"{args.file}: {len(v)} rows leave {val_start} for training; lookback "
                        f"{shortest - args.horizon - 1} + horizon {args.horizon} need at least "
                        f"{shortest} (a longer series or a shorter --horizon)")
    if test_start - val_start != val_rows:
        print(f"rnnkit: note: validation part {test_start - val_start} rows instead of "
              f"{val_rows}, so that it gives "
              f"{MIN_CALIBRATION} forecast windows to calibrate the interval (set "
              "--val-fraction to choose)", file=sys.stderr)
    if not given(args, "lookback") and val_start < lookback + args.horizon + MIN_WINDOWS:
        # a short series: the default lookback would leave (almost) no training windows
        lookback = max(2, val_start - args.horizon - MIN_WINDOWS + 1)
        print(f"rnnkit: note: lookback {lookback} instead of {args.lookback}, so that the "
              f"{val_start} training rows give {val_start - lookback - args.horizon + 1} "
              "windows (set --lookback to "
              "choose)", file=sys.stderr)
    spec = ForecastSpec(cell=args.cell, units=args.units, layers=args.layers,
                        dropout=args.dropout, lookback=lookback, horizon=args.horizon,
                        stride=args.stride, relative=not args.absolute,
                        quantiles=_quantiles(args.quantiles))
    out = Path(args.out or args.out_default)
    say = (lambda *a: None) if args.json and args.quiet else print
    say(f"forecast: {len(v)} rows of {', '.join(series.columns)}: train {val_start}, "
        f"validation {test_start - val_start}, test {len(v) - test_start}")

    seed_everything(args.seed)  # the initial weights too, so a run is reproducible
    fc = Forecaster.create(spec, v[:val_start], series.columns, targets, season)
    say(f"season {fc.season}{' (detected)' if season is None else ''}")
    history = fc.fit(v[:val_start], v[:test_start], val_start=val_start,
                     optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                     epochs=args.epochs, patience=args.patience, seed=args.seed, out=out,
                     backup=args.backup,
                     verbose=0 if args.quiet else 1)
    if not spec.quantiles and fc.calibrate(v[:test_start], val_start) is None:
        print(f"rnnkit: note: fewer than {MIN_CALIBRATION} validation windows: no prediction "
              "interval (raise "
              "--val-fraction or lower --horizon)", file=sys.stderr)
    ti = series.time_index
    data = {"file": file_record(args.file), "date_col": date_col,
            "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
            "step": args.step,
            "time": {"kind": ti.kind, "step": ti.step} if ti is not None else None}
    fc.save(out)
    atomic_write_json(out / DATA_JSON, data)
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    res = fc.walk_forward(v, test_start, args.step)
    plot_forecast(res, v[:, fc.target_idx[0]], out / "forecast.png",
                  name=f"{Path(args.file).name} ({fc.targets[0]})")
    metrics = _rounded(res["metrics"])
    _warn_if_exploded(res["metrics"])
    refit = None
    if args.refit:
        # model selection is done: the chosen number of epochs, retrained on every row
        chosen = history.best("val_loss")[0] + 1 if "val_loss" in history.history else \
            len(history.epoch)
        say(f"refit on all {len(v)} rows for {chosen} epochs (the selected model's count)")
        seed_everything(args.seed)
        full = Forecaster.create(spec, v, series.columns, targets, fc.season)
        full.fit(v, None, optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                 epochs=chosen, patience=0, seed=args.seed, verbose=0 if args.quiet else 1)
        if not spec.quantiles:
            # the interval's scale from every held-out window of the selected model
            # (validation and test), its shape over the horizon from its training windows
            full.calibration = fc.calibrate(v, val_start, source="validation and test")
        refit = {"epochs": chosen, "rows": len(v)}
        full.save(out, extra={"refit": refit})
    say(f"walk-forward on the test part: {len(res['origins'])} origins, horizon "
        f"{res['horizon']}, step {res['step']}")
    say(_table(res["metrics"]))
    coverage = res.get("interval", {}).get("coverage")
    if coverage is not None:
        how = "quantiles 0.1-0.9" if spec.quantiles else "conformal, from validation errors"
        say(f"80% interval ({how}) covers {coverage:.1%} of the test points")
    say(f"model saved to {args.final_out} (forecast plot: "
        f"{Path(args.final_out) / 'forecast.png'})")
    if args.json:
        print_json({"metrics": metrics, "season": fc.season, "origins": len(res["origins"]),
                    "epochs": len(history.epoch), "train_seconds": round(fc.train_seconds, 1),
                    "interval_coverage": coverage, "refit": refit,
                    "model_dir": args.final_out})
    return 0


def _warn_if_exploded(metrics: dict[str, dict[str, float | None]], factor: float = 10.0
                      ) -> None:
    """A warning on stderr when the model's test MAE is ``factor`` times the naive
    forecast's or worse: training that blew up without reaching NaN."""
    model, naive = metrics.get("model", {}).get("mae"), metrics.get("naive", {}).get("mae")
    if model is None or naive is None or not naive > 0:
        return
    if not math.isfinite(model) or model > factor * naive:
        print(f"rnnkit: warning: the model's test MAE {model:.4g} is {model / naive:.0f}x the "
              f"naive forecast's ({naive:.4g}): training probably diverged; try a lower --lr",
              file=sys.stderr)


def evaluate_cmd(args: argparse.Namespace) -> int:
    fc, cfg = Forecaster.load(args.model_dir)
    data = read_model_json(args.model_dir, DATA_JSON)
    path = args.file
    if not path:
        raise UserError("pass --file FILE with the series to evaluate on")
    if cfg.get("refit") and same_file(path, data.get("file")):
        print("rnnkit: warning: this model was refit on the whole of this file, test part "
              "included: its walk-forward figures are in-sample (train with --no-refit to "
              "evaluate a held-out model)", file=sys.stderr)
    series = _read(path, data.get("date_col", "auto"), fc.columns)
    v = series.values
    _, test_start = _split(len(v), data.get("val_fraction", 0.1), data.get("test_fraction", 0.2))
    res = fc.walk_forward(v, test_start, data.get("step"))
    if args.json:
        print_json({"metrics": _rounded(res["metrics"]), "origins": len(res["origins"]),
                    "file": str(path), "model_dir": args.model_dir})
    else:
        print(f"walk-forward on the last {len(v) - test_start} rows of {path}: "
              f"{len(res['origins'])} origins, horizon {res['horizon']}")
        print(_table(res["metrics"]))
    return 0


def forecast_cmd(args: argparse.Namespace) -> int:
    from ..io import read_config
    from ..tasks.global_forecast import TASK as GLOBAL

    if read_config(args.model_dir)["task"] == GLOBAL:
        return global_forecast_cmd(args)
    fc, _ = Forecaster.load(args.model_dir)
    data = read_model_json(args.model_dir, DATA_JSON)
    if not getattr(args, "file", None):
        raise UserError("pass --file FILE with the series to forecast from")
    check_output_file(getattr(args, "plot", None), "--plot")
    horizon = getattr(args, "horizon", None) or fc.spec.horizon
    check_positive(horizon=horizon)
    date_col = args.date_col if args.date_col is not None else data.get("date_col", "auto")
    if isinstance(date_col, str) and date_col.lower() == "none":
        date_col = None
    series = _read(args.file, date_col, fc.columns)
    pred = fc.forecast(series.values, horizon)
    dates = future(series.time_index, horizon) if series.time_index is not None else None
    bands = None
    if horizon <= fc.spec.horizon and len(series.values) >= fc.spec.lookback:
        bands = fc.intervals(fc.scaler.transform(series.values[-fc.spec.lookback:])[None])
    rows = []
    for k in range(horizon):
        row: dict[str, Any] = {"step": k + 1}
        if dates:
            row["date"] = dates[k]
        row.update({t: round(float(pred[k, j]), 6) for j, t in enumerate(fc.targets)})
        if bands is not None:  # the 80% interval: quantiles 0.1 and 0.9
            for j, t in enumerate(fc.targets):
                row[f"{t}_p10"] = round(float(bands[0][0, k, j]), 6)
                row[f"{t}_p90"] = round(float(bands[1][0, k, j]), 6)
        rows.append(row)
    if getattr(args, "plot", None):
        _plot_future(series.values[:, fc.target_idx[0]], pred[:, 0], args.plot, fc.targets[0])
    if args.json:
        print_json({"forecast": rows, "targets": fc.targets, "horizon": horizon})
    else:
        head = ["step"] + (["date"] if dates else []) + [k for k in rows[0] if k not in
                                                         ("step", "date")]
        print("\t".join(head))
        for r in rows:
            print("\t".join(str(r[h]) for h in head))
    return 0


def _plot_future(history: np.ndarray, pred: np.ndarray, path: str, name: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_path

    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    tail = history[-max(4 * len(pred), 60):]
    n = len(tail)
    ax.plot(range(n), tail, color="black", lw=1.2, label="history")
    ax.plot(range(n - 1, n + len(pred)), np.concatenate([tail[-1:], pred]), color="tab:blue",
            lw=1.4, label="forecast")
    ax.set_title(f"{name}: forecast of the next {len(pred)} steps", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- many series (.tsf): one global model --------------------------------------------------
def train_global(args: argparse.Namespace) -> int:
    """``train forecast --file X.tsf``: one model over all series; evaluation holds out the
    last ``horizon`` values of every series (the M-competition split)."""
    from ..tasks.global_forecast import GlobalForecaster, read_collection

    value_col = _cols(args.value_cols)[0] if args.value_cols else None
    data = read_collection(args.file, args.id_col, value_col)
    h = args.horizon if given(args, "horizon") or data.horizon is None else data.horizon
    lb = args.lookback if given(args, "lookback") else h
    say = (lambda *a: None) if args.json and args.quiet else print
    say(f"forecast: {len(data.values)} series of {data.source} ({data.frequency or 'unknown'} "
        f"frequency), horizon {h}, lookback {lb}, one global model")
    train = [s[:-h] for s in data.values if len(s) > h]
    seed_everything(args.seed)
    g = GlobalForecaster.create(lb, h, args.units, args.cell)
    history = g.fit(train, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    patience=args.patience or 5, seed=args.seed,
                    verbose=0 if args.quiet else 1, backup=args.backup)
    res = g.evaluate(data.values)
    out = Path(args.out)
    g.save(out, extra={"frequency": data.frequency})
    atomic_write_json(out / DATA_JSON, {"file": file_record(args.file), "id_col": args.id_col,
                                        "value_col": value_col})
    history.save(out / "history.json")
    plot_history(history, out / "history.png")
    say(f"held-out last {h} values of {res['series']} series (mean over series):")
    say(f"{'method':10} {'MASE':>8} {'sMAPE %':>8}")
    for name in ("model", "naive", "drift"):
        say(f"{name:10} {res[name]['mase']:8.3f} {res[name]['smape']:8.2f}")
    say(f"model saved to {args.final_out}")
    if args.json:
        print_json({"metrics": {k: res[k] for k in ("model", "naive", "drift")},
                    "series": res["series"], "horizon": h, "lookback": lb,
                    "epochs": len(history.epoch), "model_dir": args.final_out})
    return 0


def global_evaluate_cmd(args: argparse.Namespace) -> int:
    from ..tasks.global_forecast import GlobalForecaster, read_collection

    if not args.file:
        raise UserError("pass --file FILE with the series to evaluate on")
    g = GlobalForecaster.load(args.model_dir)
    d = read_model_json(args.model_dir, DATA_JSON)
    res = g.evaluate(read_collection(args.file, _str_or_none(d.get("id_col")),
                                     _str_or_none(d.get("value_col"))).values)
    if args.json:
        print_json({**res, "file": args.file, "model_dir": args.model_dir})
    else:
        for name in ("model", "naive", "drift"):
            print(f"{name:10} MASE {res[name]['mase']:.3f}  sMAPE {res[name]['smape']:.2f}")
    return 0


def global_forecast_cmd(args: argparse.Namespace) -> int:
    """The next ``horizon`` values of every series of ``--file`` (JSON Lines with --json)."""
    from ..tasks.global_forecast import GlobalForecaster, read_collection

    g = GlobalForecaster.load(args.model_dir)
    d = read_model_json(args.model_dir, DATA_JSON)
    data = read_collection(args.file, _str_or_none(d.get("id_col")),
                           _str_or_none(d.get("value_col")))
    for i, (name, f) in enumerate(zip(data.names, g.forecast(data.values), strict=True)):
        vals = [round(float(v), 6) for v in f]
        if args.json:
            print_json({"index": i, "series": name, "forecast": vals})
        else:
            print(name + "\t" + "\t".join(str(v) for v in vals))
    return 0
