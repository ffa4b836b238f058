"""Time stamps as real files write them: kinds, calendar steps, the stamps after the end."""

from __future__ import annotations

import json

import pytest
from conftest import require_file

from rnnkit.cli import main
from rnnkit.errors import UserError
from rnnkit.tasks.forecast import read_series_csv
from rnnkit.tasks.timeindex import future, kind_of, parse


@pytest.mark.parametrize("stamps, kind, nxt", [
    (["1991-10", "1991-11", "1991-12"], "month", ["1992-01", "1992-02"]),
    (["1970 Q2", "1970 Q3", "1970 Q4"], "quarter", ["1971 Q1", "1971 Q2"]),
    (["1970-Q3", "1970-Q4"], "quarter", ["1971 Q1", "1971 Q2"]),
    (["1821", "1822", "1823"], "year", ["1824", "1825"]),
    (["0", "1", "2"], "index", ["3", "4"]),
    (["2024-02-27", "2024-02-28", "2024-02-29"], "date", ["2024-03-01", "2024-03-02"]),
    (["2021-05-01 00:00:00+00:00", "2021-05-01 00:30:00+00:00"], "datetime",
     ["2021-05-01 01:00:00+00:00", "2021-05-01 01:30:00+00:00"]),
])
def test_kinds_and_future(stamps, kind, nxt):
    assert kind_of(stamps[0]) == kind
    idx = parse(stamps, "f.csv")
    assert idx.kind == kind and future(idx, 2) == nxt


def test_months_are_calendar_steps():
    """January -> February -> March is one month each, though the days differ (28, 31)."""
    idx = parse(["2023-01", "2023-02", "2023-03"], "f.csv")
    assert idx.step == 1 and future(idx, 1) == ["2023-04"]


@pytest.mark.parametrize("stamps, needle", [
    (["1991-01", "1991-13"], "not a month"),
    (["1991-02", "1991-01"], "increase strictly"),
    (["soon", "later"], "not a time stamp"),
    (["1970 Q1", "1970-02"], "not a quarter"),
])
def test_bad_stamps_name_the_line(stamps, needle):
    with pytest.raises(UserError, match=needle) as e:
        parse(stamps, "f.csv", [2, 3])
    assert str(e.value).startswith("f.csv:")


@pytest.mark.parametrize("name, col, kind", [
    ("ShampooSales.csv", "Time", "month"),
    ("Lynx.csv", "index", "year"),      # pandas-written: unnamed first column of years
    ("Uschange.csv", "Quarter", "quarter"),  # unnamed 0, 1, 2 index column dropped
    ("solar.csv", "datetime_gmt", "datetime"),
])
def test_real_files_read_with_their_time_axis(data_dir, name, col, kind):
    s = read_series_csv(require_file(data_dir, f"series/{name}"))
    assert s.time_index is not None and s.time_index.kind == kind
    assert "index" not in s.columns and col not in s.columns


def test_forecast_into_the_future_carries_dates(data_dir, tmp_path, capsys):
    f = require_file(data_dir, "series/ShampooSales.csv")
    out = tmp_path / "m"
    assert main(["train", "forecast", "--file", str(f), "--horizon", "3", "--lookback", "6",
                 "--epochs", "2", "--units", "4", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["forecast", str(out), "--file", str(f), "--date-col", "Time", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["date"] for r in res["forecast"]] == ["1994-01", "1994-02", "1994-03"]
