"""Time-series forecasting example: 7-day-ahead forecasts of a daily series with weekly
seasonality, evaluated walk-forward beside naive and seasonal-naive baselines.

    python examples/forecast.py [CSV] [--target COL] [--out DIR]

Default data: tests/fixtures/daily_visitors.csv (420 days, generated: trend + weekly profile
+ yearly wave + noise). Writes DIR/forecast.png (forecasts vs actuals on the test part).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rnnkit.tasks.forecast import Forecaster, ForecastSpec, plot_forecast, read_series_csv

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=str(ROOT / "tests/fixtures/daily_visitors.csv"))
    ap.add_argument("--target", default="visitors")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="forecast_example")
    args = ap.parse_args()
    torch.set_num_threads(1)

    s = read_series_csv(args.file, value_cols=[args.target])
    v = s.values
    n = len(v)
    val_start, test_start = int(n * 0.7), int(n * 0.85)
    torch.manual_seed(0)
    fc = Forecaster.create(ForecastSpec(cell="lstm", units=16, lookback=21, horizon=7),
                           v[:val_start], s.columns)
    fc.fit(v[:val_start], v[:test_start], val_start=val_start, epochs=args.epochs, lr=1e-2,
           patience=8, seed=0)
    res = fc.walk_forward(v, test_start)
    print(f"{n} rows; train {val_start}, validation {test_start - val_start}, test "
          f"{n - test_start}; season {fc.season}; {len(res['origins'])} forecast origins")
    print(f"{'method':16} {'MAE':>8} {'RMSE':>8} {'MASE':>6}")
    for name, m in res["metrics"].items():
        print(f"{name:16} {m['mae']:8.3f} {m['rmse']:8.3f} {m['mase']:6.3f}")
    png = plot_forecast(res, v[:, 0], Path(args.out) / "forecast.png", name=args.target)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
