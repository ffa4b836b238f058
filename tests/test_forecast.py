"""Time series: CSV reading and its errors, windows, scaling on training data only,
baselines, learning on a seasonal fixture (beats the naive forecast, near or under the
seasonal-naive one), walk-forward without look-ahead, persistence, and masked sequence
classification of variable-length multivariate series."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import UserError
from rnnkit.tasks.forecast import (
    Forecaster,
    ForecastSpec,
    SeriesClassifierModel,
    detect_season,
    make_windows,
    naive_forecast,
    pad_series,
    plot_forecast,
    read_series_csv,
    seasonal_naive_forecast,
)

FIX = Path(__file__).parent / "fixtures"
CSV = FIX / "daily_visitors.csv"


def test_read_csv():
    s = read_series_csv(CSV)
    assert s.columns == ["visitors", "temperature"]
    assert s.values.shape == (420, 2)
    assert s.dates[0] == "2023-01-02" and len(s.dates) == 420
    v = read_series_csv(CSV, value_cols=["visitors"])
    assert v.values.shape == (420, 1)
    np.testing.assert_allclose(v.values[:2, 0], [216.7, 193.1])


@pytest.mark.parametrize("text,msg", [
    ("date,y\n2020-01-01,1\n2020-01-02,abc\n", r"bad\.csv:3: column 'y': 'abc' is not a number"),
    ("date,y\n2020-01-01,1\n2020-01-02,\n", r"bad\.csv:3: column 'y' is empty"),
    ("date,y\n2020-01-01,1,2\n", r"bad\.csv:2: 3 fields, the header has 2"),
    ("date,y\n2020-01-02,1\n2020-01-01,2\n", r"bad\.csv:3: time stamps must increase strictly"),
    ("date,y\nyesterday,1\n", r"bad\.csv:2: 'yesterday' is not a time stamp I can read"),
    ("date,y\n2020-01-01,\n2020-01-02,1\n", r"bad\.csv:2: column 'y' is empty before its"),
    ("date,y\n2020-01-01,NA\n", r"bad\.csv: column 'y' has no values"),
    ("date,y\n", r"bad\.csv: no data rows"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=msg) as e:
        read_series_csv(p)
    assert "\n" not in str(e.value)


def test_unknown_column(tmp_path):
    with pytest.raises(UserError, match="no column 'sales'"):
        read_series_csv(CSV, value_cols=["sales"])


def test_windows_and_baselines():
    v = np.arange(10.0).reshape(-1, 1)
    x, y = make_windows(v, lookback=3, horizon=2, stride=2)
    # origins 3, 5, 7 (t + 2 <= 10)
    assert x.shape == (3, 3, 1) and y.shape == (3, 2, 1)
    np.testing.assert_array_equal(x[1, :, 0], [2, 3, 4])
    np.testing.assert_array_equal(y[1, :, 0], [5, 6])
    h = np.array([[1.0], [2.0], [3.0], [4.0]])
    np.testing.assert_array_equal(naive_forecast(h, 3)[:, 0], [4, 4, 4])
    # season 3: next values repeat the last season 2, 3, 4, 2, 3
    np.testing.assert_array_equal(seasonal_naive_forecast(h, 5, 3)[:, 0], [2, 3, 4, 2, 3])


def test_detect_season():
    v = read_series_csv(CSV, value_cols=["visitors"]).values
    assert detect_season(v[:300]) == 7
    assert detect_season(np.random.default_rng(0).normal(size=300)) == 1


def test_scaler_uses_training_rows_only():
    v = np.concatenate([np.zeros((50, 1)), np.full((50, 1), 100.0)])
    f = Forecaster.create(ForecastSpec(lookback=5, horizon=2, units=4), v[:50] + np.arange(50)[:,
                          None], ["y"])
    assert f.scaler.mean[0] == pytest.approx(24.5)


@pytest.fixture(scope="module")
def trained():
    s = read_series_csv(CSV, value_cols=["visitors"])
    v = s.values
    n_tr, n_va = 300, 60
    torch.manual_seed(0)
    f = Forecaster.create(ForecastSpec(units=16, lookback=21, horizon=7), v[:n_tr], s.columns)
    hist = f.fit(v[:n_tr], v[:n_tr + n_va], val_start=n_tr, epochs=20, lr=1e-2, patience=0,
                 seed=0)
    return f, hist, v, n_tr + n_va


def test_forecaster_learns_and_beats_baselines(trained, tmp_path):
    f, hist, v, test_start = trained
    assert f.season == 7
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    r = f.walk_forward(v, test_start)
    m = r["metrics"]
    assert r["actual"].shape == r["model"].shape == (len(r["origins"]), 7, 1)
    assert m["model"]["mae"] < 0.5 * m["naive"]["mae"]
    assert m["model"]["mae"] < 1.25 * m["seasonal_naive"]["mae"]
    assert m["model"]["mase"] < 1.0
    png = plot_forecast(r, v[:, 0], tmp_path / "fc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_walk_forward_sees_no_future(trained):
    f, _, v, test_start = trained
    r1 = f.walk_forward(v, test_start)
    spoiled = v.copy()
    t = r1["origins"][2]
    spoiled[t:] += 1000.0  # change everything from the third origin on
    r2 = f.walk_forward(spoiled, test_start)
    np.testing.assert_allclose(r1["model"][:3], r2["model"][:3])
    assert not np.allclose(r1["model"][3:], r2["model"][3:])


def test_recursive_forecast_and_round_trip(trained, tmp_path):
    f, _, v, _ = trained
    long = f.forecast(v[:300], horizon=17)
    assert long.shape == (17, 1)
    np.testing.assert_allclose(long[:7], f.forecast(v[:300]))
    f.save(tmp_path / "m")
    g, cfg = Forecaster.load(tmp_path / "m")
    assert cfg["task"] == "forecast" and g.season == 7
    np.testing.assert_allclose(g.forecast(v[:300], 17), long, rtol=1e-6)
    with pytest.raises(UserError, match="lookback"):
        g.forecast(v[:5])


def test_masked_series_classification():
    rng = np.random.default_rng(0)
    series, labels = [], []
    for i in range(160):
        k = i % 2  # class 0: slow oscillation, class 1: fast
        n = int(rng.integers(8, 30))
        t = np.arange(n) + rng.uniform(0, 6)
        w = 0.3 if k == 0 else 1.4
        s = np.stack([np.sin(w * t), np.cos(w * t)], axis=1) + rng.normal(0, 0.1, (n, 2))
        series.append(s)
        labels.append(k)
    x, lengths = pad_series(series)
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = SeriesClassifierModel(2, 2, units=12)
    # padding invariance: one series alone == the same series inside the padded batch
    with torch.no_grad():
        alone = model(torch.as_tensor(series[0][None], dtype=torch.float32),
                      torch.tensor([len(series[0])]))
        torch.testing.assert_close(alone[0], model(x[:1], lengths[:1])[0])
    from rnnkit.train import evaluate, fit

    def ce(out, tgt):
        return torch.nn.functional.cross_entropy(out, tgt)

    def acc(out, tgt):
        return (out.argmax(-1) == tgt).float().mean()

    fit(model, (x[:120], lengths[:120]), y[:120], loss=ce, metrics={"acc": acc},
        optimizer="adam", lr=2e-2, epochs=6, batch_size=16, seed=0, verbose=0)
    res = evaluate(model, (x[120:], lengths[120:]), y[120:], loss=ce, metrics={"acc": acc})
    assert res["acc"] > 0.9


def test_drift_and_smape_by_hand():
    from rnnkit.metrics import smape
    from rnnkit.tasks.forecast import drift_forecast

    h = np.array([[1.0], [3.0], [5.0]])
    np.testing.assert_allclose(drift_forecast(h, 2)[:, 0], [7.0, 9.0])
    assert smape([1.0, 0.0], [3.0, 0.0]) == pytest.approx(100 * (2 * 2 / 4 + 0) / 2)


def test_pinball_loss_by_hand():
    import torch

    from rnnkit.tasks.forecast import pinball_loss

    out = torch.tensor([[[1.0, 2.0, 3.0]]])  # one point, quantiles 0.1 / 0.5 / 0.9
    y = torch.tensor([[2.5]])
    # e = y - yhat = 1.5, 0.5, -0.5 -> max(q e, (q-1) e) = 0.15, 0.25, 0.05
    assert float(pinball_loss(out, y, [0.1, 0.5, 0.9])) == pytest.approx((0.15 + 0.25 + 0.05) / 3)


def test_conformal_interval_covers_its_level_on_held_out_data(tmp_path):
    """Split conformal: calibrated on one held-out span of a stationary noisy series, the 80%
    interval covers 70-90% of a later, longer span (any model: here one trained briefly);
    the calibration survives save/load and a malformed one is refused on load."""
    rng = np.random.default_rng(0)
    t = np.arange(1400)
    y = (5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1.0, len(t)) + 20)[:, None]
    spec = ForecastSpec(units=8, lookback=24, horizon=6)
    fc = Forecaster.create(spec, y[:400], ["y"])
    fc.fit(y[:400], epochs=3, seed=0)
    cal = fc.calibrate(y[:700], 400)
    assert cal is not None and cal["windows"] == 700 - 400 - 6 + 1
    calls = []
    predict_scaled = fc._predict_scaled
    fc._predict_scaled = lambda zx: calls.append(len(zx)) or predict_scaled(zx)
    res = fc.walk_forward(y, 700, step=1)
    del fc._predict_scaled
    assert calls == [1400 - 700 - 6 + 1]  # one model pass: the interval reuses its forecasts
    cover = res["interval"]["coverage"]
    assert 0.7 <= cover <= 0.9, cover
    lo, hi = res["interval"]["lower"], res["interval"]["upper"]
    assert np.all(lo <= res["model"]) and np.all(res["model"] <= hi)

    fc.save(tmp_path / "m")
    again, _ = Forecaster.load(tmp_path / "m")
    np.testing.assert_allclose(again.walk_forward(y, 700, step=1)["interval"]["lower"], lo)
    side = tmp_path / "m" / "forecast.json"
    data = json.loads(side.read_text())
    data["calibration"]["sigma"] = [[-1.0]] * 6
    side.write_text(json.dumps(data))
    with pytest.raises(UserError, match="calibration"):
        Forecaster.load(tmp_path / "m")


def test_calibration_needs_five_held_out_windows():
    y = np.arange(60, dtype=float)[:, None] % 7
    fc = Forecaster.create(ForecastSpec(units=4, lookback=7, horizon=3), y[:40], ["y"])
    assert fc.calibrate(y[:46], 40) is None and fc.calibration is None  # 4 windows
    assert fc.calibrate(y[:47], 40) is not None  # 5 windows


def test_inner_gaps_are_interpolated_and_counted(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("date,y,z\n2020-01-01,1,5\n2020-01-02,,NA\n2020-01-03,NaN,6\n"
                 "2020-01-04,4,7\n", encoding="utf-8")
    s = read_series_csv(p)
    np.testing.assert_allclose(s.values, [[1, 5], [2, 5.5], [3, 6], [4, 7]])
    assert s.filled == 3


@pytest.mark.parametrize("stamps,iso,note", [
    (["13.01.2020", "14.01.2020"], ["2020-01-13", "2020-01-14"], False),   # day above 12
    (["01/12/2020", "01/13/2020"], ["2020-01-12", "2020-01-13"], False),   # month-first
    (["01.02.2020", "02.02.2020"], ["2020-02-01", "2020-02-02"], True),    # guessed: D.M.Y
    (["01/02/2020", "01/03/2020"], ["2020-01-02", "2020-01-03"], True),    # guessed: M/D/Y
    (["1/2/2020 9:30", "1/2/2020 10:30"], ["2020-01-02 09:30", "2020-01-02 10:30"], True),
    (["2020/01/31", "2020/2/1"], ["2020-01-31", "2020-02-01"], False),
    (["Jan 2020", "February 2020", "Mar-2020"], ["2020-01", "2020-02", "2020-03"], False),
    (["2020 Jan", "2020 Feb"], ["2020-01", "2020-02"], False),
    (["2020-01-01", "2020-01-02"], ["2020-01-01", "2020-01-02"], False),   # ISO: unchanged
    (["Jan 2020", "Foo 2020"], ["Jan 2020", "Foo 2020"], False),           # not all: unchanged
])
def test_dates_written_other_ways_become_iso(stamps, iso, note):
    from rnnkit.tasks.timeindex import normalize, parse

    out, why, _ = normalize(stamps)
    assert out == iso and (why is not None) == note
    if out != stamps:
        assert parse(stamps, "x").ordinals == parse(iso, "x").ordinals


def test_a_bad_day_month_date_names_its_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("date,y\n31.01.2020,1\n31.02.2020,2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.csv:3: '31\.02\.2020' is not a date stamp"):
        read_series_csv(p)


def test_a_stamp_written_unlike_the_first_names_its_line(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("month,y\nJan 2020,1\nFeb 2020,2\n2020-03,3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"m\.csv:4: '2020-03' is not written like the first"):
        read_series_csv(p)
