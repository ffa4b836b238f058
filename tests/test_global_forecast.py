"""Many series, one model: the .tsf reader and the global forecaster on the M1 yearly set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_file

from rnnkit.cli import main
from rnnkit.errors import UserError
from rnnkit.tasks.global_forecast import _scale, read_tsf, windows

HEAD = "# x\n@relation t\n@attribute series_name string\n@attribute start_timestamp date\n" \
       "@frequency yearly\n@horizon 2\n@data\n"


def test_read_tsf(tmp_path):
    p = tmp_path / "a.tsf"
    p.write_text(HEAD + "T1:1972-01-01 00-00-00:1,2,3\nT2:1974-01-01 00-00-00:4.5,5\n")
    c = read_tsf(p)
    assert c.names == ["T1", "T2"] and c.horizon == 2 and c.frequency == "yearly"
    assert c.values[1].tolist() == [4.5, 5.0]


@pytest.mark.parametrize("line, needle", [
    ("T1:1972-01-01 00-00-00:1,?,3\n", "is not a number"),
    ("T1\n", "attribute"),
    ("", "no series"),
])
def test_read_tsf_errors(tmp_path, line, needle):
    p = tmp_path / "b.tsf"
    p.write_text(HEAD + line)
    with pytest.raises(UserError, match=needle):
        read_tsf(p)


def test_windows_and_scale_are_per_window():
    x, y = windows([np.arange(10.0), np.arange(5.0) * 100], 3, 2)
    assert x.shape == (6 + 1, 3) and y.shape == (7, 2)
    level, scale = _scale(np.array([[1.0, 2.0, 3.0], [100.0, 200.0, 300.0]]))
    np.testing.assert_allclose(level, [3.0, 300.0])
    np.testing.assert_allclose(scale[1] / scale[0], 100.0)  # scale follows the series' size


def test_m1_yearly_beats_naive(data_dir, tmp_path, capsys):
    f = require_file(data_dir, "series/m1_yearly_dataset.tsf")
    out = tmp_path / "m1"
    assert main(["train", "forecast", "--file", str(f), "--epochs", "10", "--out", str(out),
                 "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["series"] == 181 and res["horizon"] == 6
    assert res["metrics"]["model"]["mase"] < res["metrics"]["naive"]["mase"]
    assert main(["forecast", str(out), "--file", str(f), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 181 and rows[0]["series"] == "T1" and len(rows[0]["forecast"]) == 6


def test_long_csv_with_an_id_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = ["unique_id,ds,y"]
    for k in range(12):
        level = 10 + 5 * k
        for t in range(30):
            lines.append(f"s{k},{2000 + t},{level + 0.5 * t * (k % 3) + rng.normal():.3f}")
    f = tmp_path / "long.csv"
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m"
    assert main(["train", "forecast", "--file", str(f), "--id-col", "unique_id", "--horizon",
                 "4", "--epochs", "5", "--out", str(out), "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["series"] == 12 and res["horizon"] == 4
    assert main(["forecast", str(out), "--file", str(f), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["series"] for r in rows] == [f"s{k}" for k in range(12)]
    bad = tmp_path / "bad.csv"
    bad.write_text("unique_id,y\na,1\nb,2\na,3\n")
    assert main(["train", "forecast", "--file", str(bad), "--id-col", "unique_id",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not consecutive" in capsys.readouterr().err
