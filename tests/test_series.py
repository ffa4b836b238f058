"""Time-series classification: readers, masking, the 1-NN baseline, the CLI on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_file

from rnnkit.cli import main
from rnnkit.errors import UserError
from rnnkit.tasks.series import (
    SeriesClassifier,
    SeriesNet,
    SeriesSet,
    SeriesSpec,
    nearest_neighbour,
    pad,
    read_series_csv_table,
    read_ts,
)

TS_HEAD = "@problemName t\n@timeStamps false\n@univariate {u}\n@classLabel true a b\n@data\n"


def _ts(tmp_path: Path, body: str, univariate: bool = True, name: str = "x.ts") -> Path:
    p = tmp_path / name
    p.write_text("# comment\n" + TS_HEAD.format(u=str(univariate).lower()) + body)
    return p


def test_read_ts_multivariate_variable_length_and_padding(tmp_path):
    p = _ts(tmp_path, "1,2,3:4,5,6:a\n1,2,NaN,NaN:3,4,?,?:b\n", univariate=False)
    s = read_ts(p)
    assert s.labels == ["a", "b"] and s.channels == 2
    assert s.series[0].tolist() == [[1, 4], [2, 5], [3, 6]]
    assert s.series[1].shape == (2, 2)  # trailing padding trimmed


def test_read_ts_fills_inner_and_leading_gaps_by_interpolation(tmp_path):
    """Missing values inside a series are interpolated linearly between their real
    neighbours, leading ones take the first real value, trailing ones stay padding; the
    set counts what it filled (the CLI prints it)."""
    p = _ts(tmp_path, "1,NaN,NaN,4,5,NaN:a\n?,2,4:b\n1,2,3:a\n")
    s = read_ts(p)
    assert s.series[0][:, 0].tolist() == [1, 2, 3, 4, 5]
    assert s.series[1][:, 0].tolist() == [2, 2, 4]
    assert (s.filled, s.filled_series) == (3, 2)
    assert read_ts(_ts(tmp_path, "1,2,3:a\n", name="ok.ts")).filled == 0


@pytest.mark.parametrize("body, needle", [
    ("1,2,3\n", "no class label"),
    ("1,2:a\n1,2:3,4:b\n", "2 channels, the first series has 1"),
    ("1,x,3:a\n", "not a number"),
    ("NaN,?:a\n", "no values"),
    ("1,2:c\n", "not among the declared"),
    ("1,2:\n", "empty class label"),
])
def test_read_ts_errors_name_the_line(tmp_path, body, needle):
    p = _ts(tmp_path, body)
    with pytest.raises(UserError, match=needle) as e:
        read_ts(p)
    line = 8 if "\n1," in body else 7  # the bad series' line in the file
    assert str(e.value).startswith(f"{p}:{line}: ")  # names the file and the line


def test_read_csv_wide_and_long(tmp_path):
    wide = tmp_path / "w.csv"
    wide.write_text("label,t1,t2,t3\nup,1,2,3\ndown,3,2,\n")
    s = read_series_csv_table(wide)
    assert s.labels == ["up", "down"] and [len(x) for x in s.series] == [3, 2]
    long = tmp_path / "l.csv"
    long.write_text("id,time,x,y,label\n1,0,1,2,up\n1,1,2,3,up\n2,0,5,5,down\n")
    s = read_series_csv_table(long)
    assert s.labels == ["up", "down"] and s.series[0].tolist() == [[1, 2], [2, 3]]
    bad = tmp_path / "b.csv"
    bad.write_text("id,x,label\n1,1,up\n2,1,down\n1,2,up\n")
    with pytest.raises(UserError, match="not consecutive"):
        read_series_csv_table(bad)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_a_series_output(bidirectional):
    """Masking: a short series padded to the batch's length gets the logits it gets alone."""
    torch.manual_seed(0)
    model = SeriesNet(3, 4, units=5, filters=6, bidirectional=bidirectional).eval()
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(12, 3))
    x, lengths = pad([short, long.astype(np.float32)])
    both = model(x, lengths)
    alone = model(*pad([short]))
    torch.testing.assert_close(both[0], alone[0], rtol=1e-5, atol=1e-6)


def test_nearest_neighbour_matches_brute_force():
    rng = np.random.default_rng(1)
    train = SeriesSet([rng.normal(size=(rng.integers(5, 9), 2)).astype(np.float32)
                       for _ in range(20)], [str(i % 3) for i in range(20)], "train")
    test = SeriesSet([rng.normal(size=(6, 2)).astype(np.float32) for _ in range(10)], None, "t")
    from rnnkit.tasks.series import _resample

    t = 8
    want = []
    for q in test.series:
        qv = _resample(q, t).ravel()
        d = [np.sum((qv - _resample(s, t).ravel()) ** 2) for s in train.series]
        want.append(train.labels[int(np.argmin(d))])
    assert nearest_neighbour(train, test) == want


def test_classifier_learns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    def make(n):
        series, labels = [], []
        for i in range(n):
            t = int(rng.integers(20, 40))
            up = i % 2 == 0
            base = np.linspace(0, 1, t) if up else np.linspace(1, 0, t)
            series.append((base[:, None] + 0.1 * rng.normal(size=(t, 1))).astype(np.float32))
            labels.append("up" if up else "down")
        return SeriesSet(series, labels, "synthetic")
    train, test = make(40), make(20)
    clf = SeriesClassifier.create(SeriesSpec(units=4, filters=8), train)
    clf.fit(train, epochs=15, seed=0)
    rep = clf.evaluate(test, train)
    assert rep["accuracy"] >= 0.9 and "baseline_1nn_accuracy" in rep
    clf.save(tmp_path / "m")
    again = SeriesClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(test), clf.predict_proba(test), rtol=1e-6)


def test_cli_basicmotions(data_dir, tmp_path, capsys):
    """The real UEA set, briefly trained: far above the 1-NN baseline; classify/evaluate."""
    tr = require_file(data_dir, "series/BasicMotions_TRAIN.ts")
    te = require_file(data_dir, "series/BasicMotions_TEST.ts")
    out = tmp_path / "bm"
    assert main(["train", "series", "--train", str(tr), "--test", str(te), "--epochs", "30",
                 "--out", str(out), "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["test"]["accuracy"] >= 0.9 > res["test"]["baseline_1nn_accuracy"]
    assert main(["classify", str(out), "--file", str(te), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 40 and rows[0]["index"] == 0
    assert main(["evaluate", str(out), "--file", str(te), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["accuracy"] == res["test"]["accuracy"]
    assert main(["classify", str(out), "--file", str(require_file(
        data_dir, "series/GunPoint_TEST.ts"))]) == 2
    assert "channels" in capsys.readouterr().err


def test_cli_says_how_many_gaps_it_filled(tmp_path, capsys):
    """train series on a file with missing values inside two series trains, and stderr says
    how many values were interpolated; a file without gaps prints no such note."""
    rows = "".join(f"{i % 3},{i % 5},{(i * 7) % 4},{i % 2}:{'ab'[i % 2]}\n" for i in range(12))
    gappy = _ts(tmp_path, "1,NaN,3,4:a\n0,1,?,2:b\n" + rows, name="g.ts")
    assert main(["train", "series", "--train", str(gappy), "--epochs", "1", "--units", "2",
                 "--filters", "2", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert "2 missing value(s) inside 2 series filled by linear interpolation" in \
        capsys.readouterr().err
    clean = _ts(tmp_path, rows, name="c.ts")
    assert main(["train", "series", "--train", str(clean), "--epochs", "1", "--units", "2",
                 "--filters", "2", "--out", str(tmp_path / "n"), "--quiet"]) == 0
    assert "interpolation" not in capsys.readouterr().err
