"""``rnnkit train forecast`` / ``rnnkit forecast`` / ``evaluate`` end to end on the fixture
series, and one-line errors for malformed input."""

import json
from pathlib import Path

import pytest

from rnnkit.cli import main

CSV = Path(__file__).parent / "fixtures" / "daily_visitors.csv"


def _json_lines(out: str) -> list:
    """``predict``/``tag --json`` output: one JSON object per input line."""
    return [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tmp_path_factory.mktemp("forecast") / "m"


def test_train_forecast_evaluate(model, capsys):
    argv = ["train", "forecast", "--file", str(CSV), "--value-cols", "visitors,temperature",
            "--target", "visitors", "--lookback", "14", "--horizon", "7", "--units", "8",
            "--epochs", "2", "--out", str(model), "--quiet", "--json", "--no-refit"]
    assert main(argv) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["season"] == 7 and res["epochs"] == 2 and res["origins"] > 5
    assert set(res["metrics"]) == {"model", "naive", "seasonal_naive", "drift"}
    assert res["origins"] >= 10 and all("smape" in m for m in res["metrics"].values())
    for f in ("weights.safetensors", "config.json", "data.json", "forecast.json",
              "forecast.png", "history.json", "history.png"):
        assert (model / f).is_file(), f

    assert main(["forecast", str(model), "--file", str(CSV), "--json"]) == 0
    fc = _last_json(capsys.readouterr().out)
    assert len(fc["forecast"]) == 7 and fc["targets"] == ["visitors"]
    assert fc["forecast"][0]["date"] == "2024-02-26"  # the day after the last row

    # visitors is the only target but temperature is an input: no recursive forecasts
    assert main(["forecast", str(model), "--file", str(CSV), "--horizon", "9"]) == 2
    assert "recursive forecasts need every input column" in capsys.readouterr().err

    assert main(["evaluate", str(model), "--file", str(CSV), "--json"]) == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["metrics"] == res["metrics"]


def test_malformed_csv_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,y\n2020-01-01,1\n2020-01-02,abc\n", encoding="utf-8")
    code = main(["train", "forecast", "--file", str(bad), "--out", str(tmp_path / "m"),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"{bad}:3: column 'y': 'abc' is not a number" in err


def test_series_too_short(tmp_path, capsys):
    short = tmp_path / "short.csv"
    short.write_text("y\n" + "\n".join(str(i % 5) for i in range(30)) + "\n", encoding="utf-8")
    assert main(["train", "forecast", "--file", str(short), "--out", str(tmp_path / "m"),
                 "--quiet"]) == 2
    assert "lookback" in capsys.readouterr().err


def test_series_with_no_training_window_is_one_line_before_any_note(tmp_path, capsys):
    """Five rows cannot give one training window of lookback 2 + horizon 7: one error line,
    not notes about a lookback or validation part that cannot help. With --horizon 1 it
    trains, and the lookback note counts the windows it really gets (4 rows: 2)."""
    f = tmp_path / "five.csv"
    f.write_text("date,y\n" + "".join(f"2000-{m:02d},{m}\n" for m in range(1, 6)))
    assert main(["train", "forecast", "--file", str(f), "--out", str(tmp_path / "a"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "5 rows leave 4 for training" in err, err
    assert main(["train", "forecast", "--file", str(f), "--horizon", "1", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "the 4 training rows give 2 windows" in capsys.readouterr().err


def test_refit_on_the_whole_history(tmp_path, capsys):
    """By default the saved model is retrained on every row for the selected epochs; the
    reported walk-forward figures are the held-out model's (the same as with --no-refit)."""
    runs = {}
    for name, extra in (("refit", []), ("held", ["--no-refit"])):
        out = tmp_path / name
        assert main(["train", "forecast", "--file", str(CSV), "--value-cols", "visitors",
                     "--lookback", "14", "--horizon", "7", "--units", "8", "--epochs", "3",
                     "--out", str(out), "--quiet", "--json", *extra]) == 0
        runs[name] = _last_json(capsys.readouterr().out)
    assert runs["refit"]["metrics"] == runs["held"]["metrics"]
    assert runs["refit"]["refit"]["rows"] == 420 and runs["held"]["refit"] is None
    cfg = json.loads((tmp_path / "refit" / "config.json").read_text())
    assert cfg["refit"]["epochs"] == runs["refit"]["refit"]["epochs"]
    assert main(["evaluate", str(tmp_path / "refit"), "--file", str(CSV)]) == 0
    assert "in-sample" in capsys.readouterr().err


def test_quantile_intervals(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["train", "forecast", "--file", str(CSV), "--value-cols", "visitors",
                 "--lookback", "14", "--horizon", "7", "--units", "8", "--epochs", "4",
                 "--quantiles", "0.1,0.5,0.9", "--out", str(out), "--quiet", "--json"]) == 0
    res = _last_json(capsys.readouterr().out)
    assert 0.0 <= res["interval_coverage"] <= 1.0
    assert main(["forecast", str(out), "--file", str(CSV), "--json"]) == 0
    rows = _last_json(capsys.readouterr().out)["forecast"]
    assert all(r["visitors_p10"] <= r["visitors_p90"] for r in rows)
    assert main(["train", "forecast", "--file", str(CSV), "--quantiles", "0.2,0.8",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "0.5" in capsys.readouterr().err


def test_short_series_gets_a_lookback_that_fits(tmp_path, capsys):
    short = tmp_path / "short.csv"
    short.write_text("month,y\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d},{i % 5 + i}\n"
                                          for i in range(36)))
    assert main(["train", "forecast", "--file", str(short), "--epochs", "2", "--units", "4",
                 "--out", str(tmp_path / "m"), "--quiet", "--json"]) == 0
    cap = capsys.readouterr()
    assert "lookback" in cap.err and "instead of 28" in cap.err
    data = json.loads((tmp_path / "m" / "data.json").read_text())
    assert data["time"] == {"kind": "month", "step": 1}
    # a short series also gets a validation part with enough windows for the interval,
    # which the refit model keeps: forecasts carry the 80% band by default
    assert "validation part 11 rows instead of 4" in cap.err  # horizon 7 + 4
    res = _last_json(cap.out)
    assert res["interval_coverage"] is not None
    assert main(["forecast", str(tmp_path / "m"), "--file", str(short), "--json"]) == 0
    rows = _last_json(capsys.readouterr().out)["forecast"]
    assert all(r["y_p10"] < r["y_p90"] for r in rows)


def test_cli_notes_ambiguous_dates_and_filled_gaps(tmp_path, capsys):
    """A month/day/year column whose fields never exceed 12 trains, with a note saying how
    it was read; a missing value between two others is interpolated, with a note."""
    f = tmp_path / "us.csv"
    rows = [f"{m}/{d}/2020,{'' if (m, d) == (3, 5) else m * 10 + d}"
            for m in range(1, 13) for d in range(1, 13)]
    f.write_text("date,y\n" + "\n".join(rows) + "\n")
    assert main(["train", "forecast", "--file", str(f), "--epochs", "1", "--units", "4",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "read as month/day/year" in err
    assert "1 missing value(s) between values filled by linear interpolation" in err
