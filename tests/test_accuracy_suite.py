"""Smoke run of the accuracy suite (benchmarks/accuracy.py) on slices: a row runs the CLI
and returns the fields the table prints; the Keras peers train and score."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RNNKIT_DATA_DIR") or ROOT.parent / "shared" / "data")


def _suite():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("accuracy_suite", ROOT / "benchmarks" /
                                                  "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (DATA / "series" / "ShampooSales.csv").is_file(),
                    reason="the shared series data (RNNKIT_DATA_DIR or ../shared/data) is absent")
def test_forecast_row_on_real_data():
    row = _suite().forecast_row(DATA, "ShampooSales", ["--horizon", "3", "--lookback", "6",
                                                       "--epochs", "2", "--units", "4"])
    assert row["origins"] == 5 and row["mase"] > 0 and row["mase_seasonal_naive"] > 0
    assert "interval_coverage" in row and isinstance(row["met"], bool)


def test_missing_data_is_a_skipped_row(tmp_path):
    suite = _suite()
    for row in (suite.korean_row(tmp_path), suite.tagger_row(tmp_path),
                suite.translation_row(tmp_path), suite.imdb_csv_row(tmp_path)):
        assert "skipped" in row and str(tmp_path) in row["skipped"]


def test_keras_peers_train_and_score():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    _suite()
    from keras_peers import tagger_accuracy, text_classifier_f1

    texts = [f"good film {i}" for i in range(40)] + [f"bad film {i}" for i in range(40)]
    labels = ["pos"] * 40 + ["neg"] * 40
    f1 = text_classifier_f1((texts, labels), (texts[:10] + texts[-10:], labels[:10] +
                                              labels[-10:]), epochs=1)
    assert 0.0 <= f1 <= 1.0
    sents = [(["the", "cat", "runs"], ["DET", "NOUN", "VERB"])] * 20
    acc = tagger_accuracy(sents, sents[:3], epochs=1)
    assert 0.0 <= acc <= 1.0
